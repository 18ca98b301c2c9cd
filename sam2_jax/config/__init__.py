"""Frozen, hashable configs for SAM 2 / SAM 2.1 and EdgeTAM under transformers' names, read from and written to
config.json.

The classes are transformers' own (`Sam2HieraDetConfig`, `Sam2VisionConfig`, `Sam2PromptEncoderConfig`,
`Sam2MaskDecoderConfig`, `Sam2Config` for the image model; `Sam2VideoPromptEncoderConfig`,
`Sam2VideoMaskDecoderConfig`, `Sam2VideoConfig` for the video model; EdgeTAM's `EdgeTamVisionConfig`,
`EdgeTamPromptEncoderConfig`, `EdgeTamMaskDecoderConfig`, `EdgeTamConfig`, `EdgeTamVideoPromptEncoderConfig`,
`EdgeTamVideoMaskDecoderConfig`, `EdgeTamVideoConfig`), with the same constructor arguments and
defaults: sub-configs may be given as dicts or as instances, lists become tuples. Unlike transformers' they
are frozen dataclasses (change one with `replace`), because they are passed to `jax.jit` as static arguments.
`to_dict`, `from_dict`, `to_json_string`, `save_pretrained` and `from_pretrained` read and write the same
config.json as transformers; transformers' generic keys (`architectures`, `dtype`, `id2label`, ...) are
ignored on reading.

One module per family (`config.sam2`, `config.edgetam`) on what they share (`config.base`); every name is
importable from `sam2_jax.config`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import GENERIC_KEYS, ConfigMixin, FrozenDict, VideoConfigBase, _family
from .edgetam import (
    EDGETAM_PRESETS,
    REPVIT_M1_BACKBONE,
    EdgeTamConfig,
    EdgeTamMaskDecoderConfig,
    EdgeTamPromptEncoderConfig,
    EdgeTamVideoConfig,
    EdgeTamVideoMaskDecoderConfig,
    EdgeTamVideoPromptEncoderConfig,
    EdgeTamVisionConfig,
    edgetam_small_config,
)
from .sam2 import (
    PRESETS,
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2MaskDecoderConfig,
    Sam2PromptEncoderConfig,
    Sam2VideoConfig,
    Sam2VideoMaskDecoderConfig,
    Sam2VideoPromptEncoderConfig,
    Sam2VisionConfig,
    small_config,
)

# Each transformers model_type and its config class.
MODEL_CONFIGS: dict[str, type] = {"sam2": Sam2Config, "sam2_video": Sam2VideoConfig, "edgetam": EdgeTamConfig,
                                  "edgetam_video": EdgeTamVideoConfig}

def config_from_dict(data: dict[str, Any]) -> Sam2Config | Sam2VideoConfig | EdgeTamConfig | EdgeTamVideoConfig:
    """A transformers config dict as the config class of its model_type ("sam2", "sam2_video", "edgetam" or
    "edgetam_video")."""
    model_type = data.get("model_type") if isinstance(data, dict) else None
    if model_type not in MODEL_CONFIGS:
        raise ValueError(f"config.model_type: expected one of {', '.join(map(repr, MODEL_CONFIGS))}, got "
                         f"{model_type!r}")
    return MODEL_CONFIGS[model_type].from_dict(data)


def replace(config, **changes):
    """`dataclasses.replace`, and also between the image and the video config of one family: `model_type="sam2"`
    (or "edgetam") gives the image config of a video config (its image parts), `model_type="sam2_video"` (or
    "edgetam_video") the video config of an image config (default memory settings)."""
    model_type = changes.pop("model_type", None)
    if model_type is not None and model_type != config.model_type:
        own = getattr(type(config), "model_type", None)
        if model_type not in MODEL_CONFIGS or type(config) not in MODEL_CONFIGS.values() or \
                _family(model_type) != _family(own):
            family = [t for t in MODEL_CONFIGS if isinstance(own, str) and _family(t) == _family(own)]
            raise ValueError(f"model_type: expected one of {family or list(MODEL_CONFIGS)} for a "
                             f"{type(config).__name__}, got {model_type!r}")
        config = MODEL_CONFIGS[model_type](**{name: getattr(config, name) for name in (
            "vision_config", "prompt_encoder_config", "mask_decoder_config", "initializer_range")})
    return dataclasses.replace(config, **changes) if changes else config


# The names before transformers' (kept for the code that uses them).
HieraConfig = Sam2HieraDetConfig
VisionConfig = Sam2VisionConfig
PromptEncoderConfig = Sam2PromptEncoderConfig
MaskDecoderConfig = Sam2MaskDecoderConfig

__all__ = [
    "EDGETAM_PRESETS",
    "GENERIC_KEYS",
    "MODEL_CONFIGS",
    "PRESETS",
    "REPVIT_M1_BACKBONE",
    "ConfigMixin",
    "EdgeTamConfig",
    "EdgeTamMaskDecoderConfig",
    "EdgeTamPromptEncoderConfig",
    "EdgeTamVideoConfig",
    "EdgeTamVideoMaskDecoderConfig",
    "EdgeTamVideoPromptEncoderConfig",
    "EdgeTamVisionConfig",
    "FrozenDict",
    "HieraConfig",
    "MaskDecoderConfig",
    "PromptEncoderConfig",
    "Sam2Config",
    "Sam2HieraDetConfig",
    "Sam2MaskDecoderConfig",
    "Sam2PromptEncoderConfig",
    "Sam2VideoConfig",
    "Sam2VideoMaskDecoderConfig",
    "Sam2VideoPromptEncoderConfig",
    "Sam2VisionConfig",
    "VideoConfigBase",
    "VisionConfig",
    "config_from_dict",
    "edgetam_small_config",
    "replace",
    "small_config",
]
