"""EdgeTAM's spatial perceiver (transformers `EdgeTamVideoPerceiverResampler`, keys `spatial_perceiver.*`):
each new memory compressed from h*w tokens (64 x 64 = 4096 at 1024 px) to N = N1 + N2 latents (512) before it
enters the memory bank.

Two sets of learned latents run through the same layers (shared weights):
- N1 = `perceiver_resampler_num_latents` 1-D latents (`latents_1d`, 256) attend to all h*w memory tokens; the
  memory's sine encoding is added to the projected keys and to the projected values. Their position encoding
  out is zero.
- N2 = `perceiver_resampler_num_latents_2d` = n*n 2-D latents (`latents_2d`, 256, n = 16): the memory is cut
  into n x n windows of s x s tokens, s = h // n (4), zero-padded at the bottom and right if needed; latent i
  attends only to window i (row-major) and takes no position encoding in. Their position encoding out is the
  2-D sine encoding (`sine_position_encoding`, normalised) of the n x n window grid.

transformers `EdgeTamVideoModel._encode_new_memory` runs it right after the memory encoder and the occlusion
embedding, in the model's dtype, and stores its outputs as the frame's `maskmem_features` and
`maskmem_pos_enc` with no bfloat16 round trip (SAM 2 stores bfloat16 memories; EdgeTAM does not). It runs one
object at a time there (transformers' `_forward_2d` fails on a batch of more than one: `expand(...).view(...)`);
here the batch axis takes any number of objects or frames.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from .layers import attention, gelu, layer_norm, sine_position_encoding


class PerceiverAttention(nn.Module):
    """transformers `EdgeTamVideoPerceiverAttention`: bias-free q/k/v/o projections over
    `perceiver_resampler_num_attention_heads` heads of `perceiver_resampler_attention_head_dim`.

    query (..., Lq, C); key, value (..., Lk, C); position_encoding (..., Lk, C) or None, added to the projected
    keys and values (so heads * head_dim must equal C). Returns (..., Lq, C).
    """

    config: object  # EdgeTamVideoConfig

    @nn.compact
    def __call__(self, query, key, value, position_encoding=None):
        cfg = self.config
        heads, head_dim = cfg.perceiver_resampler_num_attention_heads, cfg.perceiver_resampler_attention_head_dim

        def project(name, x):
            x = nn.Dense(heads * head_dim, use_bias=False, name=name)(x)
            return x.reshape(*x.shape[:-1], heads, head_dim)

        q, k, v = project("q_proj", query), project("k_proj", key), project("v_proj", value)
        if position_encoding is not None:
            pos = position_encoding.reshape(*position_encoding.shape[:-1], heads, head_dim)
            k, v = k + pos, v + pos
        out = attention(q, k, v, scale=head_dim ** -0.5)
        return nn.Dense(cfg.perceiver_resampler_hidden_size, use_bias=False, name="o_proj")(
            out.reshape(*out.shape[:-2], heads * head_dim))


class PerceiverMLP(nn.Module):
    """transformers `EdgeTamVideoPerceiverMLP`: down_proj(gelu(up_proj(LN x))), bias-free, exact GELU."""

    config: object  # EdgeTamVideoConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        h = layer_norm(1e-5, name="layer_norm")(x)
        h = gelu(nn.Dense(cfg.perceiver_resampler_mlp_intermediate_size, use_bias=False, name="up_proj")(h))
        return nn.Dense(cfg.perceiver_resampler_hidden_size, use_bias=False, name="down_proj")(h)


class PerceiverLayer(nn.Module):
    """transformers `EdgeTamVideoPerceiverEncoderLayer` (LayerNorms eps 1e-5):
    x += cross_attention(LN_latents x, LN_input features (+ pos)); x += mlp(x);
    x += self_attention(LN_self x); x += self_mlp(x).

    latents (..., Lq, C); features (..., Lk, C); position_encoding (..., Lk, C) or None.
    """

    config: object  # EdgeTamVideoConfig

    @nn.compact
    def __call__(self, latents, features, position_encoding=None):
        cfg = self.config
        q = layer_norm(1e-5, name="layer_norm_latents")(latents)
        kv = layer_norm(1e-5, name="layer_norm_input")(features)
        latents = latents + PerceiverAttention(cfg, name="cross_attention")(q, kv, kv, position_encoding)
        latents = latents + PerceiverMLP(cfg, name="mlp")(latents)
        h = layer_norm(1e-5, name="layer_norm_self")(latents)
        latents = latents + PerceiverAttention(cfg, name="self_attention")(h, h, h)
        return latents + PerceiverMLP(cfg, name="self_mlp")(latents)


class PerceiverResampler(nn.Module):
    """transformers `EdgeTamVideoPerceiverResampler` (see the module docstring).

    memory (B, h, w, C): a new memory, C = `perceiver_resampler_hidden_size` (64); memory_pos (h, w, C) or
    (B, h, w, C): its 2-D sine encoding (`MemoryEncoder`'s second output).
    Returns latents (B, N1 + N2, C), 1-D latents first, then the 2-D latents in row-major window order, and
    their position encoding (N1 + N2, C): zeros for the 1-D latents, the n x n sine encoding for the 2-D ones.
    """

    config: object  # EdgeTamVideoConfig

    @nn.compact
    def __call__(self, memory, memory_pos):
        cfg = self.config
        b, h, w, c = memory.shape
        n1, n2 = cfg.perceiver_resampler_num_latents, cfg.perceiver_resampler_num_latents_2d
        if c != cfg.perceiver_resampler_hidden_size:
            raise ValueError(f"memory: expected {cfg.perceiver_resampler_hidden_size} channels "
                             f"(perceiver_resampler_hidden_size), got shape {memory.shape}")
        layers = [PerceiverLayer(cfg, name=f"layers.{i}") for i in range(cfg.perceiver_resampler_num_layers)]
        final_norm = layer_norm(1e-5, name="layer_norm")
        latents = []
        if n1 > 0:
            heads = cfg.perceiver_resampler_num_attention_heads
            if heads * cfg.perceiver_resampler_attention_head_dim != c:
                raise ValueError(f"config: the memory's position encoding ({c} channels) is added per head, so "
                                 f"perceiver_resampler_num_attention_heads * perceiver_resampler_attention_head_dim "
                                 f"must be {c}, got {heads} * {cfg.perceiver_resampler_attention_head_dim}")
            x = jnp.broadcast_to(self.param("latents_1d", nn.initializers.normal(1.0), (n1, c)), (b, n1, c))
            tokens = memory.reshape(b, h * w, c)
            tokens_pos = jnp.broadcast_to(memory_pos, memory.shape).reshape(b, h * w, c).astype(memory.dtype)
            for layer in layers:
                x = layer(x, tokens, tokens_pos)
            latents.append(final_norm(x))
        if n2 > 0:
            windows, n = window_tokens(memory, n2)
            x = jnp.broadcast_to(self.param("latents_2d", nn.initializers.normal(1.0), (n2, c))[:, None, :],
                                 (b, n2, 1, c))
            for layer in layers:
                x = layer(x, windows)
            latents.append(final_norm(x.reshape(b, n2, c)))
        if not latents:
            raise ValueError("config: perceiver_resampler_num_latents and perceiver_resampler_num_latents_2d "
                             "are both 0; expected at least one latent")
        return jnp.concatenate(latents, axis=1), latent_position_encoding(cfg, memory.dtype)


def latent_position_encoding(config, dtype=jnp.float32):
    """The perceiver's position encoding of its N1 + N2 latents, (N1 + N2, C): zeros for the 1-D latents, the
    n x n sine encoding of the window grid for the 2-D ones. It depends on the config only."""
    n1, n2, c = (config.perceiver_resampler_num_latents, config.perceiver_resampler_num_latents_2d,
                 config.perceiver_resampler_hidden_size)
    n = math.isqrt(n2)
    parts = [jnp.zeros((n1, c), dtype)]
    if n2 > 0:
        parts.append(sine_position_encoding(n, n, c // 2, dtype=dtype).reshape(n2, c))
    return jnp.concatenate(parts, axis=0)


def window_tokens(memory, num_windows: int):
    """transformers `window_partition` as the 2-D latents use it: memory (B, h, w, C) zero-padded at the bottom
    and right to multiples of s = h // n, cut into n x n windows of s x s tokens, n = sqrt(num_windows).
    Returns (B, n*n, s*s, C), windows row-major and tokens row-major inside each window, and n."""
    b, h, w, c = memory.shape
    n = math.isqrt(num_windows)
    if n * n != num_windows or h < n:
        raise ValueError(f"perceiver_resampler_num_latents_2d: expected a square number of windows of at least "
                         f"one row of the {h} x {w} memory, got {num_windows}")
    s = h // n
    ph, pw = -(-h // s) * s, -(-w // s) * s
    if (ph // s, pw // s) != (n, n):
        raise ValueError(f"memory: a {h} x {w} memory in windows of {s} x {s} gives {ph // s} x {pw // s} windows, "
                         f"expected {n} x {n} (perceiver_resampler_num_latents_2d = {num_windows})")
    x = jnp.pad(memory, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)))
    x = x.reshape(b, n, s, n, s, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, n * n, s * s, c), n
