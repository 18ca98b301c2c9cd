"""EdgeTAM's configs (RepViT-M1 image encoder, spatial perceiver, EdgeTAM's memory attention), the released
architecture (`EDGETAM_PRESETS`) and a small image config for tests and demos."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .base import (
    GENERIC_KEYS,
    ConfigMixin,
    FrozenDict,
    VideoConfigBase,
    _freeze,
    _jsonable,
)
from .sam2 import Sam2Config, Sam2MaskDecoderConfig, Sam2PromptEncoderConfig

# The timm_wrapper config that transformers writes for EdgeTAM's backbone (timm `repvit_m1`, features_only, four
# stages), without the generic keys. transformers' own EdgeTamVisionConfig() default names "resnet50" (its default
# sets a misspelt "archirecture"); the released checkpoints and this default name "repvit_m1".
REPVIT_M1_BACKBONE = _freeze({
    "model_type": "timm_wrapper", "architecture": "repvit_m1", "initializer_range": 0.02, "do_pooling": True,
    "model_args": {"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]},
    "num_classes": 2, "label_names": ["LABEL_0", "LABEL_1"]})


@dataclass(frozen=True)
class EdgeTamVisionConfig(ConfigMixin):
    """RepViT-M1 + SAM 2's FPN neck (transformers `EdgeTamVisionConfig`).

    `backbone_config` is transformers' timm_wrapper config as a read-only dict (a FrozenDict; lists as tuples):
    "architecture" must be "repvit_m1" and its "model_args" features_only with out_indices (0, 1, 2, 3), which
    is what sam2-jax implements (`models.repvit`). Its other keys are kept as read, so that config.json goes back
    to transformers unchanged; a transformers `TimmWrapperConfig` is taken too."""

    model_type: ClassVar[str] = "edgetam_vision_model"
    backbone_config: FrozenDict = REPVIT_M1_BACKBONE
    backbone_channel_list: tuple[int, ...] = (384, 192, 96, 48)
    backbone_feature_sizes: tuple[tuple[int, int], ...] = ((256, 256), (128, 128), (64, 64))
    fpn_hidden_size: int = 256
    fpn_kernel_size: int = 1
    fpn_stride: int = 1
    fpn_padding: int = 0
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    num_feature_levels: int = 3
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    def __post_init__(self):
        super().__post_init__()
        backbone = self.backbone_config
        name = f"{type(self).__name__}.backbone_config"
        if not isinstance(backbone, dict) and callable(getattr(backbone, "to_dict", None)):  # transformers' config
            backbone = backbone.to_dict()
        if not isinstance(backbone, dict):
            raise TypeError(f"{name}: expected a timm_wrapper config dict, got {type(backbone).__name__}")
        backbone = _freeze({k: v for k, v in backbone.items() if k not in GENERIC_KEYS})
        if backbone.get("model_type", "timm_wrapper") != "timm_wrapper":
            raise ValueError(f"{name}: expected model_type 'timm_wrapper', got {backbone['model_type']!r}")
        if backbone.get("architecture") != "repvit_m1":
            raise ValueError(f"{name}: expected architecture 'repvit_m1' (the backbone sam2-jax implements), got "
                             f"{backbone.get('architecture')!r}")
        args = backbone.get("model_args") or FrozenDict()
        if not args.get("features_only") or tuple(args.get("out_indices", (0, 1, 2, 3))) != (0, 1, 2, 3) or \
                args.get("in_chans", 3) != 3:
            raise ValueError(f"{name}: expected model_args with features_only=True, out_indices [0, 1, 2, 3] and "
                             f"in_chans 3, got {_jsonable(dict(args))}")
        object.__setattr__(self, "backbone_config", FrozenDict({"model_type": "timm_wrapper", **backbone}))


@dataclass(frozen=True)
class EdgeTamPromptEncoderConfig(Sam2PromptEncoderConfig):
    """EdgeTAM's prompt encoder (transformers `EdgeTamPromptEncoderConfig`): SAM 2's fields."""

    model_type: ClassVar[str] = "edgetam_prompt_encoder"


@dataclass(frozen=True)
class EdgeTamMaskDecoderConfig(Sam2MaskDecoderConfig):
    """EdgeTAM's mask decoder (transformers `EdgeTamMaskDecoderConfig`): SAM 2's fields."""

    model_type: ClassVar[str] = "edgetam_mask_decoder"


@dataclass(frozen=True)
class EdgeTamVideoPromptEncoderConfig(Sam2PromptEncoderConfig):
    """EdgeTAM video's prompt encoder (transformers `EdgeTamVideoPromptEncoderConfig`): SAM 2's fields."""

    model_type: ClassVar[str] = "edgetam_video_prompt_encoder"


@dataclass(frozen=True)
class EdgeTamVideoMaskDecoderConfig(Sam2MaskDecoderConfig):
    """EdgeTAM video's mask decoder (transformers `EdgeTamVideoMaskDecoderConfig`): SAM 2's fields."""

    model_type: ClassVar[str] = "edgetam_video_mask_decoder"


@dataclass(frozen=True)
class EdgeTamConfig(Sam2Config):
    """The EdgeTAM image model (transformers `EdgeTamConfig`): SAM 2's image model with the RepViT vision
    encoder. A Sam2Config, so that everything taking the SAM 2 image config takes it; the config type chooses the
    encoder. `from_dict` also reads a video config (its image parts), as transformers' `EdgeTamModel` loads a
    video checkpoint."""

    model_type: ClassVar[str] = "edgetam"
    accepted_model_types: ClassVar[tuple[str, ...]] = ("edgetam", "edgetam_video")
    sub_configs: ClassVar[dict[str, type]] = {"vision_config": EdgeTamVisionConfig,
                                              "prompt_encoder_config": EdgeTamPromptEncoderConfig,
                                              "mask_decoder_config": EdgeTamMaskDecoderConfig}
    vision_config: EdgeTamVisionConfig = None
    prompt_encoder_config: EdgeTamPromptEncoderConfig = None
    mask_decoder_config: EdgeTamMaskDecoderConfig = None
    initializer_range: float = 0.02

    def to_dict(self) -> dict[str, Any]:
        """The transformers config dict, with `architectures` naming the model class."""
        return {**ConfigMixin.to_dict(self), "architectures": ["EdgeTamModel"]}

    @property
    def version(self) -> str:
        """'edgetam'."""
        return "edgetam"


@dataclass(frozen=True)
class EdgeTamVideoConfig(VideoConfigBase):
    """The EdgeTAM video model (transformers `EdgeTamVideoConfig`): the image parts, SAM 2's memory encoder and
    settings (`VideoConfigBase`), the spatial perceiver resampler and EdgeTAM's memory attention (two layers, an
    MLP, RoPE over the perceiver's 2-D latents). The vision config defaults to EdgeTAM's (transformers' default
    names SAM 2's Hiera vision config)."""

    model_type: ClassVar[str] = "edgetam_video"
    accepted_model_types: ClassVar[tuple[str, ...]] = ("edgetam_video", "edgetam")
    sub_configs: ClassVar[dict[str, type]] = {"vision_config": EdgeTamVisionConfig,
                                              "prompt_encoder_config": EdgeTamVideoPromptEncoderConfig,
                                              "mask_decoder_config": EdgeTamVideoMaskDecoderConfig}
    vision_config: EdgeTamVisionConfig = None
    prompt_encoder_config: EdgeTamVideoPromptEncoderConfig = None
    mask_decoder_config: EdgeTamVideoMaskDecoderConfig = None
    memory_attention_num_layers: int = 2
    memory_attention_mlp_hidden_size: int = 2048
    memory_attention_mlp_hidden_act: str = "relu"
    memory_attention_rope_k_sizes: tuple[int, int] = (16, 16)
    perceiver_resampler_num_latents: int = 256
    perceiver_resampler_num_latents_2d: int = 256
    perceiver_resampler_hidden_size: int = 64
    perceiver_resampler_mlp_intermediate_size: int = 256
    perceiver_resampler_num_attention_heads: int = 1
    perceiver_resampler_attention_head_dim: int = 64
    perceiver_resampler_num_layers: int = 2
    perceiver_resampler_hidden_dropout: float = 0.0
    perceiver_resampler_attention_dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The transformers config dict, with `architectures` naming the model class."""
        return {**super().to_dict(), "architectures": ["EdgeTamVideoModel"]}

    @property
    def version(self) -> str:
        """'edgetam'."""
        return "edgetam"


def edgetam_small_config(image_size: int = 256) -> EdgeTamConfig:
    """The EdgeTAM image config at `image_size` px (a multiple of 64), with the matching backbone_feature_sizes:
    RepViT-M1 is the same at every size; for tests and demos."""
    s = image_size // 4
    vision = EdgeTamVisionConfig(backbone_feature_sizes=((s, s), (s // 2, s // 2), (s // 4, s // 4)))
    return EdgeTamConfig(vision_config=vision, prompt_encoder_config={"image_size": image_size})


# The released EdgeTAM (facebookresearch/EdgeTAM's edgetam.pt; transformers' yonigozlan/EdgeTAM-hf): transformers'
# defaults at 1024 px without SAM 2.1's object-pointer temporal encoding and occlusion embedding, as transformers'
# conversion script (convert_edgetam_video_to_hf.py) builds it.
EDGETAM_PRESETS: dict[str, EdgeTamVideoConfig] = {"edgetam": EdgeTamVideoConfig(
    enable_temporal_pos_encoding_for_object_pointers=False, enable_occlusion_spatial_embedding=False)}
EdgeTamConfig.presets = EdgeTamVideoConfig.presets = EDGETAM_PRESETS
