"""RepViT-M1, EdgeTAM's image encoder, as timm builds `repvit_m1` with features_only=True and out_indices
(0, 1, 2, 3) (what transformers' `TimmWrapperModel` runs inside `EdgeTamVisionModel`).

Param paths are timm's module names under `timm_model` (the FeatureListNet flattens `stages.i` to `stages_i`),
so they map 1:1 to transformers' `vision_encoder.backbone.timm_model.*` keys. Every conv is followed by its
BatchNorm in inference mode (running statistics), kept unfused so that the weights load as they are; folding
each BatchNorm (and the 1x1 depthwise branch and identity of the token mixer) into one conv, as timm's `fuse`
does, is a possible later speed step. Depthwise convolutions run as a sum of taps (`layers.depthwise_conv`):
on XLA:CPU, 23x faster than the grouped convolution over RepViT-M1's shapes at 1024 px
(benchmarks/results/cpu-depthwise-2026-12-07.md).

Shapes: pixels (B, H, W, 3) -> four stages (B, H/4, W/4, 48), (B, H/8, W/8, 96), (B, H/16, W/16, 192),
(B, H/32, W/32, 384), channels-last.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import depthwise_conv, gelu

# timm's architectures: stage widths, blocks per stage, MLP ratio, token mixer kernel size.
ARCHITECTURES = {"repvit_m1": dict(embed_dim=(48, 96, 192, 384), depth=(2, 2, 14, 2), mlp_ratio=2, kernel_size=3)}
BATCH_NORM_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which timm keeps


def make_divisible(value: float, divisor: int = 8) -> int:
    """timm's `make_divisible(v, divisor, round_limit=0.)`: the nearest multiple of `divisor`, at least it."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class BatchNorm(nn.Module):
    """torch.nn.BatchNorm2d in eval mode on (..., C), with torch's CPU arithmetic: alpha = weight / sqrt(var + eps),
    beta = bias - mean * alpha, x * alpha + beta. `scale` is transformers' `weight` (the `weights` rules);
    `running_mean` and `running_var` are params here (inference only: nothing updates them)."""

    eps: float = BATCH_NORM_EPS

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        weight = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("running_mean", nn.initializers.zeros, (c,))
        var = self.param("running_var", nn.initializers.ones, (c,))
        alpha = weight * (1 / jnp.sqrt(var + self.eps))
        beta = bias - mean * alpha
        return x * alpha.astype(x.dtype) + beta.astype(x.dtype)


class ConvNorm(nn.Module):
    """timm `ConvNorm`: a conv without bias (`c`) and its BatchNorm (`bn`); `depthwise` gives one group per
    channel (out_dim == input channels)."""

    out_dim: int
    kernel_size: int = 1
    stride: int = 1
    depthwise: bool = False

    @nn.compact
    def __call__(self, x):
        pad = (self.kernel_size - 1) // 2
        conv = nn.Conv(self.out_dim, (self.kernel_size,) * 2, strides=self.stride, padding=[(pad, pad)] * 2,
                       use_bias=False, feature_group_count=x.shape[-1] if self.depthwise else 1,
                       conv_general_dilated=depthwise_conv if self.depthwise else jax.lax.conv_general_dilated,
                       name="c")
        return BatchNorm(name="bn")(conv(x))


class SqueezeExcite(nn.Module):
    """timm `SEModule(channels, 0.25)`: x * sigmoid(fc2(relu(fc1(mean over H, W)))), fc1/fc2 1x1 convs."""

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        s = jnp.mean(x, axis=(-3, -2), keepdims=True)
        s = jax.nn.relu(nn.Conv(make_divisible(c * 0.25), (1, 1), name="fc1")(s))
        s = nn.Conv(c, (1, 1), name="fc2")(s)
        return x * jax.nn.sigmoid(s)


class Mlp(nn.Module):
    """timm `RepVitMlp`: 1x1 ConvNorm to `hidden_dim`, GELU, 1x1 ConvNorm to `out_dim`."""

    hidden_dim: int
    out_dim: int

    @nn.compact
    def __call__(self, x):
        return ConvNorm(self.out_dim, name="conv2")(gelu(ConvNorm(self.hidden_dim, name="conv1")(x)))


class RepViTBlock(nn.Module):
    """timm `RepViTBlock` (legacy=True, as repvit_m1): the token mixer (`RepVggDw`: depthwise kxk ConvNorm +
    depthwise 1x1 ConvNorm + identity), an optional squeeze-excite, then the residual channel MLP."""

    mlp_ratio: int
    kernel_size: int
    use_se: bool

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = (ConvNorm(c, self.kernel_size, depthwise=True, name="token_mixer.conv")(x)
             + ConvNorm(c, 1, depthwise=True, name="token_mixer.conv1")(x) + x)
        if self.use_se:
            x = SqueezeExcite(name="se")(x)
        return x + Mlp(c * self.mlp_ratio, c, name="channel_mixer")(x)


class RepVit(nn.Module):
    """timm `RepVit` as a FeatureListNet (`stem`, `stages_0` ... `stages_3`): pixels (B, H, W, 3) -> the output of
    each stage (see the module docstring)."""

    architecture: str = "repvit_m1"

    @nn.compact
    def __call__(self, pixel_values) -> tuple:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture: expected one of {sorted(ARCHITECTURES)}, got {self.architecture!r}")
        arch = ARCHITECTURES[self.architecture]
        dims, k, ratio = arch["embed_dim"], arch["kernel_size"], arch["mlp_ratio"]
        x = ConvNorm(dims[0] // 2, 3, 2, name="stem.conv1")(pixel_values)
        x = ConvNorm(dims[0], 3, 2, name="stem.conv2")(gelu(x))
        outputs = []
        for i, (dim, depth) in enumerate(zip(dims, arch["depth"])):
            if i > 0:  # timm `RepVitDownsample`
                prefix = f"stages_{i}.downsample"
                x = RepViTBlock(ratio, k, use_se=False, name=f"{prefix}.pre_block")(x)
                x = ConvNorm(x.shape[-1], k, 2, depthwise=True, name=f"{prefix}.spatial_downsample")(x)
                x = ConvNorm(dim, name=f"{prefix}.channel_downsample")(x)
                x = x + Mlp(dim * ratio, dim, name=f"{prefix}.ffn")(x)
            for j in range(depth):  # squeeze-excite in every other block, from the first
                x = RepViTBlock(ratio, k, use_se=j % 2 == 0, name=f"stages_{i}.blocks.{j}")(x)
            outputs.append(x)
        return tuple(outputs)
