"""EdgeTAM's vision encoder (transformers `EdgeTamVisionModel`): RepViT-M1 stages -> SAM 2's FPN neck.

Everything else of the EdgeTAM image model is SAM 2's (`sam2.Sam2ImageModule`, which picks its vision encoder
with `vision_encoder` by the config's type): the prompt encoder, the mask decoder, the Fourier embedding and
`no_memory_embedding`.
"""

from __future__ import annotations

import flax.linen as nn

from ..config import EdgeTamVisionConfig, Sam2VisionConfig
from .hiera import VisionEncoder, VisionNeck, encoder_outputs
from .repvit import RepVit


class EdgeTamVisionEncoder(nn.Module):
    """transformers `EdgeTamVisionModel`: pixels (B, H, W, 3) -> the same dict as SAM 2's `hiera.VisionEncoder`:
    "fpn_hidden_states" and "fpn_position_encoding" (the last `num_feature_levels` FPN levels, high -> low
    resolution: (B,256,256,256), (B,128,128,256), (B,64,64,256) at 1024 px), "intermediate_hidden_states" (the four
    RepViT stages, channels-last) and "last_hidden_state" (the last stage, (B,32,32,384) at 1024 px, as
    transformers' `last_hidden_state` after its permute to channels-last)."""

    config: EdgeTamVisionConfig

    @nn.compact
    def __call__(self, pixel_values) -> dict:
        stages = RepVit(self.config.backbone_config["architecture"], name="backbone.timm_model")(pixel_values)
        return encoder_outputs(self.config, stages, VisionNeck(self.config, name="neck")(stages))


def vision_encoder(config: Sam2VisionConfig | EdgeTamVisionConfig) -> nn.Module:
    """The vision encoder a vision config describes: RepViT's for EdgeTAM, Hiera's for SAM 2."""
    if isinstance(config, EdgeTamVisionConfig):
        return EdgeTamVisionEncoder(config)
    if isinstance(config, Sam2VisionConfig):
        return VisionEncoder(config)
    raise TypeError(f"config: expected a Sam2VisionConfig or EdgeTamVisionConfig, got {type(config).__name__}")
