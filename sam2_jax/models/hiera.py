"""The SAM 2 vision encoder: Hiera trunk (transformers `Sam2HieraDetModel`) and FPN neck (`Sam2VisionNeck`).

Shapes: B batch, H, W spatial, C channels; everything is channels-last. Window attention runs on all
windows at once: a feature map (B, H, W, C) is viewed as (B, nH, nW, h, w, C), and a global-attention block
is the same code with a single window of size (H, W).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from ..config import HieraConfig, VisionConfig
from .layers import FeedForward, attention, bicubic_matrix, layer_norm, resize_with, sine_position_encoding


def max_pool(x, stride: tuple[int, int]):
    """F.max_pool2d(kernel=stride, stride=stride, ceil_mode=False) on the two axes before the last one:
    (..., H, W, C) -> (..., H // sh, W // sw, C). An elementwise maximum of strided slices: on CPU, XLA fuses
    it with the matmul before it ~1.6x faster than a reduce_max over a reshaped view (measured)."""
    sh, sw = stride
    h, w = x.shape[-3] // sh * sh, x.shape[-2] // sw * sw
    return functools.reduce(jnp.maximum, [x[..., i:h:sh, j:w:sw, :] for i in range(sh) for j in range(sw)])


def dense_2d(dense: nn.Dense, x):
    """`dense` on x (..., C) through a (N, C) view: on CPU, XLA's matmul on the 6-D window layout ran 1.6x slower
    than on the same tokens as one matrix (`attn.proj` of the first block at 1024 px: 23 ms against 14.6)."""
    return dense(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], dense.features)


def window_partition(x, window: tuple[int, int]):
    """(B, H, W, C) -> (B, nH, nW, h, w, C), zero-padded at the bottom/right to a multiple of the window."""
    b, height, width, c = x.shape
    wh, ww = window
    x = jnp.pad(x, ((0, 0), (0, (-height) % wh), (0, (-width) % ww), (0, 0)))
    nh, nw = x.shape[1] // wh, x.shape[2] // ww
    return x.reshape(b, nh, wh, nw, ww, c).transpose(0, 1, 3, 2, 4, 5)


def window_unpartition(windows, height: int, width: int):
    """(B, nH, nW, h, w, C) -> (B, H, W, C), cropping the padding."""
    b, nh, nw, wh, ww, c = windows.shape
    x = windows.transpose(0, 1, 3, 2, 4, 5).reshape(b, nh * wh, nw * ww, c)
    return x[:, :height, :width]


class MultiScaleBlock(nn.Module):
    """transformers `Sam2MultiScaleBlock` + `Sam2MultiScaleAttention`: (B, H, W, dim) -> (B, H', W', dim_out),
    H' = H // 2 when the block pools its queries."""

    dim: int
    dim_out: int
    num_heads: int
    window_size: int  # 0 = global attention
    query_stride: tuple[int, int] | None
    mlp_ratio: float
    eps: float

    @nn.compact
    def __call__(self, x):
        b, height, width, dim = x.shape
        # Norms and MLP run on the tokens as one (N, C) matrix: XLA's CPU fusions of a LayerNorm with the matmul
        # after it run ~1.5x faster on 2-D operands than on (B, H, W, C) ones (measured).
        tokens = x.reshape(-1, dim)
        x_norm = layer_norm(self.eps, name="layer_norm1")(tokens)
        shortcut = x
        if self.dim != self.dim_out:
            shortcut = nn.Dense(self.dim_out, name="proj")(x_norm).reshape(b, height, width, self.dim_out)
            if self.query_stride:
                shortcut = max_pool(shortcut, self.query_stride)

        # Zero padding comes after the norm; padded tokens take part as keys and values (no mask).
        window = (self.window_size,) * 2 if self.window_size > 0 else (height, width)
        windows = window_partition(x_norm.reshape(x.shape), window)  # (B, nH, nW, h, w, dim)
        head_dim = self.dim_out // self.num_heads
        qkv = dense_2d(nn.Dense(3 * self.dim_out, name="attn.qkv"), windows)
        query, key, value = (qkv[..., i * self.dim_out:(i + 1) * self.dim_out] for i in range(3))
        if self.query_stride:
            query = max_pool(query, self.query_stride)  # pooled inside each window
        out_shape = query.shape  # (B, nH, nW, h', w', dim_out)

        def heads(t):  # (B, nH, nW, h, w, dim_out) -> (B, nH, nW, h*w, heads, head_dim)
            return t.reshape(*t.shape[:3], -1, self.num_heads, head_dim)

        out = attention(heads(query), heads(key), heads(value), scale=head_dim ** -0.5)
        out = dense_2d(nn.Dense(self.dim_out, name="attn.proj"), out.reshape(out_shape))
        out = window_unpartition(out, *shortcut.shape[1:3])  # pooled windows: same count, half the size

        x = shortcut + out
        tokens = x.reshape(-1, self.dim_out)
        mlp = FeedForward(int(self.dim_out * self.mlp_ratio), self.dim_out, num_layers=2, activation="gelu",
                          name="mlp")
        return (tokens + mlp(layer_norm(self.eps, name="layer_norm2")(tokens))).reshape(x.shape)


def position_embedding(pos_embed, pos_embed_window, height: int, width: int):
    """`Sam2HieraDetModel._get_pos_embed`: pos_embed (1, C, h, w) resized to (height, width) by PyTorch's bicubic
    (A=-0.75, no antialias), plus pos_embed_window (1, C, k, k) tiled. Returns (1, height, width, C)."""
    pos = pos_embed.transpose(0, 2, 3, 1)
    pos = resize_with(pos, bicubic_matrix(pos.shape[1], height), bicubic_matrix(pos.shape[2], width))
    k = pos_embed_window.shape[-1]
    return pos + jnp.tile(pos_embed_window.transpose(0, 2, 3, 1), (1, height // k, width // k, 1))


def block_specs(config: HieraConfig) -> list[dict]:
    """Per-block settings, as `Sam2MultiScaleBlock.__init__`: the first block of stage s > 0 takes its input dim
    and window size from stage s - 1 and pools its queries (stages 1..num_query_pool_stages)."""
    specs = []
    for stage, n_blocks in enumerate(config.blocks_per_stage):
        for j in range(n_blocks):
            first = stage > 0 and j == 0
            prev = stage - 1 if first else stage
            window = 0 if len(specs) in config.global_attention_blocks else config.window_size_per_stage[prev]
            specs.append(dict(
                dim=config.embed_dim_per_stage[prev],
                dim_out=config.embed_dim_per_stage[stage],
                num_heads=config.num_attention_heads_per_stage[stage],
                window_size=window,
                query_stride=config.query_stride if first and stage <= config.num_query_pool_stages else None,
            ))
    return specs


class HieraBackbone(nn.Module):
    """transformers `Sam2HieraDetModel`: pixels (B, H, W, 3) -> the outputs of the stage-end blocks,
    e.g. (B,256,256,96), (B,128,128,192), (B,64,64,384), (B,32,32,768) for tiny at 1024."""

    config: HieraConfig

    @nn.compact
    def __call__(self, pixel_values) -> tuple:
        cfg = self.config
        x = nn.Conv(cfg.hidden_size, cfg.patch_kernel_size, strides=cfg.patch_stride,
                    padding=[(p, p) for p in cfg.patch_padding], name="patch_embed.projection")(pixel_values)
        window = cfg.window_size_per_stage[0]
        pos_embed = self.param("pos_embed", nn.initializers.zeros,
                               (1, cfg.hidden_size, *cfg.window_positional_embedding_background_size))
        pos_embed_window = self.param("pos_embed_window", nn.initializers.zeros,
                                      (1, cfg.hidden_size, window, window))
        x = x + position_embedding(pos_embed, pos_embed_window, x.shape[1], x.shape[2]).astype(x.dtype)
        outputs = []
        for i, spec in enumerate(block_specs(cfg)):
            x = MultiScaleBlock(**spec, mlp_ratio=cfg.mlp_ratio, eps=cfg.layer_norm_eps, name=f"blocks.{i}")(x)
            if i in cfg.stage_ends:
                outputs.append(x)
        return tuple(outputs)


class VisionNeck(nn.Module):
    """transformers `Sam2VisionNeck`: stage outputs (high -> low resolution) -> FPN levels and their sine
    position encodings, both ordered low -> high resolution as the reference builds them.
    Levels are (B, H_i, W_i, fpn_hidden_size); encodings (H_i, W_i, fpn_hidden_size)."""

    config: VisionConfig

    @nn.compact
    def __call__(self, hidden_states) -> tuple[tuple, tuple]:
        cfg = self.config
        n = len(cfg.backbone_channel_list) - 1
        features, encodings = [], []
        prev = None
        for i in range(n, -1, -1):
            conv = nn.Conv(cfg.fpn_hidden_size, (cfg.fpn_kernel_size,) * 2, strides=cfg.fpn_stride,
                           padding=[(cfg.fpn_padding, cfg.fpn_padding)] * 2, name=f"convs.{n - i}")
            lateral = conv(hidden_states[i])
            if i not in cfg.fpn_top_down_levels or i == n:
                prev = lateral
            else:  # nearest x2 upsampling, in float32 as the reference
                top_down = jnp.repeat(jnp.repeat(prev.astype(jnp.float32), 2, axis=1), 2, axis=2)
                prev = lateral + top_down.astype(lateral.dtype)
            features.append(prev)
            encodings.append(sine_position_encoding(prev.shape[1], prev.shape[2], cfg.fpn_hidden_size // 2,
                                                    dtype=prev.dtype))
        return tuple(features), tuple(encodings)


class VisionEncoder(nn.Module):
    """transformers `Sam2VisionModel`: pixels (B, H, W, 3) -> dict of
    - "fpn_hidden_states": the last `num_feature_levels` FPN levels, high -> low resolution, e.g.
      (B,256,256,256), (B,128,128,256), (B,64,64,256) at 1024;
    - "fpn_position_encoding": their sine encodings, same order, (H_i, W_i, 256) without batch;
    - "intermediate_hidden_states": the Hiera stage outputs; "last_hidden_state": the last of them."""

    config: VisionConfig

    @nn.compact
    def __call__(self, pixel_values) -> dict:
        stages = HieraBackbone(self.config.backbone_config, name="backbone")(pixel_values)
        return encoder_outputs(self.config, stages, VisionNeck(self.config, name="neck")(stages))


def encoder_outputs(config, stages: tuple, neck_outputs: tuple[tuple, tuple]) -> dict:
    """The vision encoder's output dict (see `VisionEncoder`) from the backbone's stage outputs and the neck's
    levels and encodings: the last `config.num_feature_levels` of them, high -> low resolution."""
    features, encodings = neck_outputs
    k = config.num_feature_levels
    return {
        "fpn_hidden_states": features[-k:][::-1],
        "fpn_position_encoding": encodings[-k:][::-1],
        "intermediate_hidden_states": stages,
        "last_hidden_state": stages[-1],
    }
