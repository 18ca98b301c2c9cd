"""Memory attention (transformers `Sam2VideoMemoryAttention`, keys `memory_attention.*`): the current frame's
features attend to themselves and to the memory bank, with 2-D axial RoPE.

The bank has static shape: S spatial memory slots of L = h*w tokens each, plus P object-pointer tokens, each
with a validity mask. Masked keys are left out of the softmax, which gives the numbers of transformers'
variable-length concatenation of the valid memories. Spatial memories are rotated with the same RoPE grid in
every slot; pointer tokens are never rotated (transformers `num_k_exclude_rope`). EdgeTAM's memory attention
(`edgetam_memory_attention`) is a subclass with its own slots (perceiver latents), key grid and feed-forward.

Also here: the pointer helpers of transformers `_process_object_pointers` (`get_1d_sine_pe`,
`object_pointer_tokens`).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..config import Sam2VideoConfig
from .attention_choice import memory_attention_blocks
from .layers import attention, layer_norm


def _head_dim(config: Sam2VideoConfig) -> int:
    return config.memory_attention_hidden_size // (
        config.memory_attention_downsample_rate * config.memory_attention_num_attention_heads)


def rope_tables(config: Sam2VideoConfig, sizes: tuple[int, int] | None = None):
    """cos, sin (L, D) float32 of transformers `Sam2VideoVisionRotaryEmbedding` for a (w, h) grid `sizes`,
    by default `memory_attention_rope_feat_sizes` (L = h*w tokens row-major, D = head dim). EdgeTAM's keys
    take their own grid, `memory_attention_rope_k_sizes`, with the same frequencies.

    Per token: angles `[x * inv_freq, y * inv_freq]` (x first), each repeated twice for the interleaved pairs.
    """
    d = _head_dim(config)
    spatial = np.float32(d // 2)
    inv_freq = np.float32(1) / (np.float32(config.rope_parameters["rope_theta"])
                                ** (np.arange(0, d // 2, 2, dtype=np.float32) / spatial))
    size_w, size_h = sizes or config.memory_attention_rope_feat_sizes  # as transformers `precompute_positions`
    y, x = np.meshgrid(np.arange(size_h), np.arange(size_w), indexing="ij")
    positions = np.stack([x.ravel(), y.ravel()], axis=-1).astype(np.float32)  # (L, 2)
    angles = jnp.asarray(positions)[:, :, None] * jnp.asarray(inv_freq)  # (L, 2, D/4)
    angles = jnp.repeat(angles.reshape(len(positions), d // 2), 2, axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def identity_rope(length: int, dim: int):
    """cos, sin (length, dim) of no rotation (ones, zeros): what keys that take no RoPE get, exactly."""
    return jnp.ones((length, dim), jnp.float32), jnp.zeros((length, dim), jnp.float32)


def apply_rope(x, cos, sin):
    """Rotate interleaved pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) in float32 (not the Llama
    half split). x (B, L, heads, D); cos, sin (L, D). Returns x's dtype."""
    x32 = x.astype(jnp.float32)
    pairs = x32.reshape(*x.shape[:-1], -1, 2)
    rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    return (x32 * cos[:, None, :] + rotated * sin[:, None, :]).astype(x.dtype)


class RoPEAttention(nn.Module):
    """transformers `Sam2VideoRoPEAttention`: q/k/v projections, RoPE on q and k, attention, o_proj.

    query (B, Lq, 256); key, value (B, Lk, Ckv); rope_q = (cos, sin) (Lq, D); rope_k = (cos, sin) (Lk, D);
    key_mask (B, Lk) booleans, True = attend; blocks: `layers.attention`'s (query block, key block).
    Returns (B, Lq, 256).
    """

    config: Sam2VideoConfig

    @nn.compact
    def __call__(self, query, key, value, rope_q, rope_k, key_mask=None, blocks=None):
        cfg = self.config
        heads = cfg.memory_attention_num_attention_heads
        internal = cfg.memory_attention_hidden_size // cfg.memory_attention_downsample_rate
        head_dim = internal // heads

        def split(x):
            return x.reshape(*x.shape[:-1], heads, head_dim)

        q = apply_rope(split(nn.Dense(internal, name="q_proj")(query)), *rope_q)
        k = apply_rope(split(nn.Dense(internal, name="k_proj")(key)), *rope_k)
        v_proj = nn.Dense(internal, name="v_proj")
        if value.shape[-1] < head_dim:
            # Attend over the narrow raw values, project after: P (X W + b) = (P X) W + b, as the rows of P
            # sum to 1. For the 64-wide memory that is a quarter of the FLOPs of the weighted sum.
            raw = jnp.broadcast_to(value[..., None, :], (*value.shape[:-1], heads, value.shape[-1]))
            out = attention(q, k, raw, scale=head_dim ** -0.5, mask=key_mask, blocks=blocks)
            out = split(v_proj(out))  # (B, Lq, H, H, D)
            out = jnp.moveaxis(jnp.diagonal(out, axis1=-3, axis2=-2), -1, -2)  # head h's output, projected by head h
        else:
            out = attention(q, k, split(v_proj(value)), scale=head_dim ** -0.5, mask=key_mask, blocks=blocks)
        return nn.Dense(cfg.memory_attention_hidden_size, name="o_proj")(out.reshape(*out.shape[:-2], internal))


class MemoryAttentionLayer(nn.Module):
    """transformers `Sam2VideoMemoryAttentionLayer`, pre-norm (LayerNorm eps 1e-5):
    x += self_attn(LN1 x); x += cross_attn_image(LN2 x, memory); x += feed_forward(LN3 x).

    x (B, L, 256); keys = memory + pos and values = memory, (B, Lk, 64); rope (cos, sin) (L, D) for the queries,
    rope_k (Lk, D) for the keys; key_mask (B, Lk). Both attentions run this machine's formulation
    (`attention_choice`): the self-attention's 4096 x 4096 too measured 9% faster key-blocked on the CPU.
    """

    config: Sam2VideoConfig

    @nn.compact
    def __call__(self, x, keys, values, rope, rope_k, key_mask):
        cfg = self.config
        blocks = memory_attention_blocks()
        h = layer_norm(1e-5, name="layer_norm1")(x)
        x = x + RoPEAttention(cfg, name="self_attn")(h, h, h, rope, rope, blocks=blocks)
        h = layer_norm(1e-5, name="layer_norm2")(x)
        x = x + RoPEAttention(cfg, name="cross_attn_image")(h, keys, values, rope, rope_k, key_mask, blocks=blocks)
        return x + self.feed_forward(layer_norm(1e-5, name="layer_norm3")(x))

    def feed_forward(self, h):
        """SAM 2's `linear2(relu(linear1(h)))`; a subclass's own feed-forward replaces it (EdgeTAM's `mlp`)."""
        cfg = self.config
        h = nn.Dense(cfg.memory_attention_feed_forward_hidden_size, name="linear1")(h)
        return nn.Dense(cfg.memory_attention_hidden_size, name="linear2")(jax.nn.relu(h))


class MemoryAttention(nn.Module):
    """transformers `Sam2VideoMemoryAttention` over a fixed-slot memory bank.

    features (B, L, 256): level-2 features of the current frame, L = h*w of the RoPE grid;
    position_embeddings (B or 1, L, 256): their sine encoding;
    memory (B, S, L, 64): S spatial memory slots; memory_pos (B or 1, S, L, 64): their spatial + temporal
    encoding; memory_mask (B or 1, S) booleans, True = slot holds a memory;
    pointers (B, P, 64): object-pointer tokens (`object_pointer_tokens`); pointer_pos (B or 1, P, 64);
    pointer_mask (B or 1, P). P may be 0.
    Returns (B, L, 256). At least one key per batch item must be valid (else the softmax gives NaN).

    Keys are ordered as transformers concatenates them: slot-major spatial tokens, then pointer tokens.
    Subclasses (EdgeTAM's) change `layer_class` and `slot_rope`.
    """

    config: Sam2VideoConfig
    layer_class: ClassVar[type[nn.Module]] = MemoryAttentionLayer

    def slot_rope(self, rope, slot_len: int):
        """The key rotation (cos, sin) (slot_len, D) of every memory slot, from the queries' `rope` (L, D):
        SAM 2's slots are L tokens on the queries' grid."""
        if slot_len != rope[0].shape[0]:
            raise ValueError(f"memory: expected {rope[0].shape[0]} tokens per slot (the RoPE grid "
                             f"{self.config.memory_attention_rope_feat_sizes}), got {slot_len}")
        return rope

    @nn.compact
    def __call__(self, features, position_embeddings, memory, memory_pos, memory_mask, pointers, pointer_pos,
                 pointer_mask):
        cfg = self.config
        b, seq, _ = features.shape
        _, slots, mem_seq, mem_dim = memory.shape
        num_ptr = pointers.shape[1]
        cos, sin = rope_tables(cfg)
        if seq != cos.shape[0]:
            raise ValueError(f"features: expected {cos.shape[0]} tokens (the RoPE grid "
                             f"{cfg.memory_attention_rope_feat_sizes}), got {seq}")
        slot_cos, slot_sin = self.slot_rope((cos, sin), mem_seq)

        spatial_keys = (memory + memory_pos).reshape(b, slots * mem_seq, mem_dim)
        keys = jnp.concatenate([spatial_keys, pointers + pointer_pos], axis=1)
        values = jnp.concatenate([memory.reshape(b, slots * mem_seq, mem_dim), pointers], axis=1)
        key_mask = jnp.concatenate([
            jnp.broadcast_to(jnp.repeat(memory_mask, mem_seq, axis=-1), (b, slots * mem_seq)),
            jnp.broadcast_to(pointer_mask, (b, num_ptr)),
        ], axis=1)
        # The slot's rotation repeats for every slot; pointer tokens are not rotated (transformers
        # `num_k_exclude_rope`).
        ptr_cos, ptr_sin = identity_rope(num_ptr, cos.shape[-1])
        cos_k = jnp.concatenate([jnp.tile(slot_cos, (slots, 1)), ptr_cos])
        sin_k = jnp.concatenate([jnp.tile(slot_sin, (slots, 1)), ptr_sin])

        x = features + 0.1 * position_embeddings
        for i in range(cfg.memory_attention_num_layers):
            x = self.layer_class(cfg, name=f"layers.{i}")(x, keys, values, (cos, sin), (cos_k, sin_k), key_mask)
        return layer_norm(1e-5, name="layer_norm")(x)


def get_1d_sine_pe(positions, dim: int, temperature: float = 10000.0):
    """transformers `get_1d_sine_pe`: positions (...) -> (..., dim) float32, `[sin || cos]` concatenated
    (not interleaved like the 2-D image encoding). For pointers, positions are the temporal offsets divided
    by `max_object_pointers - 1`."""
    pe_dim = dim // 2
    dim_t = np.arange(pe_dim, dtype=np.float32)
    dim_t = np.float32(temperature) ** (np.float32(2) * np.floor(dim_t / 2) / np.float32(pe_dim))
    pe = jnp.asarray(positions, jnp.float32)[..., None] / jnp.asarray(dim_t.astype(np.float32))
    return jnp.concatenate([jnp.sin(pe), jnp.cos(pe)], axis=-1)


def object_pointer_tokens(pointers, pointer_pos, pointer_mask, mem_dim: int):
    """Split each pointer into C / mem_dim tokens, as transformers `_process_object_pointers`.

    pointers (B, N, C); pointer_pos (B or 1, N, mem_dim): projected temporal encoding (zeros for SAM 2.0);
    pointer_mask (B or 1, N). Returns tokens (B, N*k, mem_dim), pointer-major (token n*k + j = channels
    j*mem_dim:(j+1)*mem_dim of pointer n), and pos and mask repeated k times per pointer.
    """
    b, n, c = pointers.shape
    k = c // mem_dim
    tokens = pointers.reshape(b, n * k, mem_dim)
    return tokens, jnp.repeat(pointer_pos, k, axis=-2), jnp.repeat(pointer_mask, k, axis=-1)
