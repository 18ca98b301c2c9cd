"""Memory encoder (transformers `Sam2VideoMemoryEncoder`, keys `memory_encoder.*`): a frame's features and its
predicted mask fused into one memory of `memory_encoder_output_channels` (64) channels per position.

The mask comes in already mapped for memory, as transformers `_encode_new_memory` does outside the module:
`sigmoid(logits)` (tracked frames) or `logits > 0` (prompted frames), then `* 20 - 10`; resized to
`16 * h` by `16 * w` beforehand when needed. Occlusion embedding and the bfloat16 cast also stay outside.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from ..config import Sam2VideoConfig
from .layers import depthwise_conv, gelu, layer_norm, sine_position_encoding


class MaskDownSamplerLayer(nn.Module):
    """conv (k3 s2 p1) -> channels LayerNorm (eps 1e-6) -> exact GELU. (B, H, W, Cin) -> (B, H/2, W/2, Cout)."""

    config: Sam2VideoConfig
    out_channels: int

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        k, s, p = cfg.mask_downsampler_kernel_size, cfg.mask_downsampler_stride, cfg.mask_downsampler_padding
        # Explicit symmetric padding: "SAME" with stride 2 pads (0, 1) and differs from PyTorch.
        x = nn.Conv(self.out_channels, (k, k), strides=(s, s), padding=((p, p), (p, p)), name="conv")(x)
        return gelu(layer_norm(1e-6, name="layer_norm")(x))


class MaskDownSampler(nn.Module):
    """transformers `Sam2VideoMaskDownSampler`: (B, H, W, 1) -> (B, H/16, W/16, mask_downsampler_embed_dim).
    Channels grow 1 -> 4 -> 16 -> 64 -> 256 over the stride-2 layers, then a 1x1 `final_conv`."""

    config: Sam2VideoConfig

    @nn.compact
    def __call__(self, masks):
        cfg = self.config
        num_layers = int(math.log2(cfg.mask_downsampler_total_stride) // math.log2(cfg.mask_downsampler_stride))
        x, channels = masks, 1
        for i in range(num_layers):
            channels *= cfg.mask_downsampler_stride ** 2
            x = MaskDownSamplerLayer(cfg, channels, name=f"layers.{i}")(x)
        return nn.Conv(cfg.mask_downsampler_embed_dim, (1, 1), name="final_conv")(x)


class MemoryFuserCXBlock(nn.Module):
    """transformers `Sam2VideoMemoryFuserCXBlock` (ConvNeXt block), (B, h, w, C) -> same:
    `x + scale * pointwise_conv2(gelu(pointwise_conv1(layer_norm(depthwise_conv(x)))))`."""

    config: Sam2VideoConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        c, k, p = cfg.memory_fuser_embed_dim, cfg.memory_fuser_kernel_size, cfg.memory_fuser_padding
        h = nn.Conv(c, (k, k), padding=((p, p), (p, p)), feature_group_count=c, conv_general_dilated=depthwise_conv,
                    name="depthwise_conv")(x)
        h = layer_norm(1e-6, name="layer_norm")(h)
        h = gelu(nn.Dense(cfg.memory_fuser_intermediate_dim, name="pointwise_conv1")(h))
        h = nn.Dense(c, name="pointwise_conv2")(h)
        # The layer scale is literally named `scale` in transformers (see weights._KEEP_NAME).
        scale = self.param("scale", nn.initializers.constant(cfg.memory_fuser_layer_scale_init_value), (c,))
        return x + scale * h


class MemoryEncoder(nn.Module):
    """transformers `Sam2VideoMemoryEncoder`.

    vision_features (B, h, w, 256): raw level-2 FPN features of the frame (no no-memory embedding, no memory
    conditioning); masks (B, 16h, 16w, 1): mask mapped for memory (see module docstring).
    Returns maskmem_features (B, h, w, 64) and maskmem_pos_enc (h, w, 64), the 2-D sine encoding that is the
    same for every object and frame.
    """

    config: Sam2VideoConfig

    @nn.compact
    def __call__(self, vision_features, masks):
        cfg = self.config
        masks = MaskDownSampler(cfg, name="mask_downsampler")(masks)
        x = nn.Conv(cfg.memory_encoder_hidden_size, (1, 1), name="feature_projection")(vision_features)
        x = x + masks
        for i in range(cfg.memory_fuser_num_layers):
            x = MemoryFuserCXBlock(cfg, name=f"memory_fuser.layers.{i}")(x)
        x = nn.Conv(cfg.memory_encoder_output_channels, (1, 1), name="projection")(x)
        _, h, w, c = x.shape
        return x, sine_position_encoding(h, w, c // 2, dtype=x.dtype)


def memory_mask_input(high_res_logits, binarize, config: Sam2VideoConfig):
    """The mask fed to `MemoryEncoder` (transformers `_encode_new_memory`): `(logits > 0)` where `binarize`
    (prompted frames) else `sigmoid(logits)`, then `* sigmoid_scale_for_mem_enc + sigmoid_bias_for_mem_enc`.

    high_res_logits (B, H, W, 1) at the encoder's input size; binarize: bool, or (B,) booleans (traced).
    """
    binarize = jnp.asarray(binarize).reshape((-1,) + (1,) * (high_res_logits.ndim - 1))
    probs = jnp.where(binarize, (high_res_logits > 0).astype(high_res_logits.dtype), nn.sigmoid(high_res_logits))
    return probs * config.sigmoid_scale_for_mem_enc + config.sigmoid_bias_for_mem_enc
