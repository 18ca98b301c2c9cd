"""SAM 2 / SAM 2.1's configs (Hiera image encoder), the released architectures (`PRESETS`) and a small config
for tests and demos."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .base import ConfigMixin, VideoConfigBase


@dataclass(frozen=True)
class Sam2HieraDetConfig(ConfigMixin):
    """The Hiera trunk (transformers `Sam2HieraDetConfig`)."""

    model_type: ClassVar[str] = "sam2_hiera_det_model"
    hidden_size: int = 96
    num_attention_heads: int = 1
    num_channels: int = 3
    image_size: tuple[int, int] = (1024, 1024)
    patch_kernel_size: tuple[int, int] = (7, 7)
    patch_stride: tuple[int, int] = (4, 4)
    patch_padding: tuple[int, int] = (3, 3)
    query_stride: tuple[int, int] = (2, 2)
    window_positional_embedding_background_size: tuple[int, int] = (7, 7)
    num_query_pool_stages: int = 3
    blocks_per_stage: tuple[int, ...] = (1, 2, 7, 2)
    embed_dim_per_stage: tuple[int, ...] = (96, 192, 384, 768)
    num_attention_heads_per_stage: tuple[int, ...] = (1, 2, 4, 8)
    window_size_per_stage: tuple[int, ...] = (8, 4, 14, 7)
    global_attention_blocks: tuple[int, ...] = (5, 7, 9)
    mlp_ratio: float = 4.0
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    @property
    def stage_ends(self) -> tuple[int, ...]:
        """The index of the last block of each Hiera stage."""
        ends, total = [], 0
        for n in self.blocks_per_stage:
            total += n
            ends.append(total - 1)
        return tuple(ends)


@dataclass(frozen=True)
class Sam2VisionConfig(ConfigMixin):
    """Hiera + FPN neck (transformers `Sam2VisionConfig`)."""

    model_type: ClassVar[str] = "sam2_vision_model"
    sub_configs: ClassVar[dict[str, type]] = {"backbone_config": Sam2HieraDetConfig}
    backbone_config: Sam2HieraDetConfig = None
    backbone_channel_list: tuple[int, ...] = (768, 384, 192, 96)
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


@dataclass(frozen=True)
class Sam2PromptEncoderConfig(ConfigMixin):
    """Points, boxes and masks to embeddings (transformers `Sam2PromptEncoderConfig`)."""

    model_type: ClassVar[str] = "sam2_prompt_encoder"
    hidden_size: int = 256
    image_size: int = 1024
    patch_size: int = 16
    mask_input_channels: int = 16
    num_point_embeddings: int = 4
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    scale: float = 1

    @property
    def image_embedding_size(self) -> int:
        """Side of the image embedding grid (image_size / patch_size)."""
        return self.image_size // self.patch_size

    @property
    def mask_input_size(self) -> int:
        """Side of a mask prompt (and of the low-res output masks): 4x the embedding grid."""
        return 4 * self.image_embedding_size


@dataclass(frozen=True)
class Sam2MaskDecoderConfig(ConfigMixin):
    """Two-way transformer and heads (transformers `Sam2MaskDecoderConfig`)."""

    model_type: ClassVar[str] = "sam2_mask_decoder"
    hidden_size: int = 256
    hidden_act: str = "gelu"
    mlp_dim: int = 2048
    num_hidden_layers: int = 2
    num_attention_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98


@dataclass(frozen=True)
class Sam2VideoPromptEncoderConfig(Sam2PromptEncoderConfig):
    """The video model's prompt encoder (transformers `Sam2VideoPromptEncoderConfig`): the same fields."""

    model_type: ClassVar[str] = "sam2_video_prompt_encoder"


@dataclass(frozen=True)
class Sam2VideoMaskDecoderConfig(Sam2MaskDecoderConfig):
    """The video model's mask decoder (transformers `Sam2VideoMaskDecoderConfig`): the same fields."""

    model_type: ClassVar[str] = "sam2_video_mask_decoder"


@dataclass(frozen=True)
class Sam2Config(ConfigMixin):
    """The image model (transformers `Sam2Config`): vision encoder, prompt encoder and mask decoder.

    `from_dict` also reads a video config (its image parts), as transformers' `Sam2Model` loads a video
    checkpoint."""

    model_type: ClassVar[str] = "sam2"
    accepted_model_types: ClassVar[tuple[str, ...]] = ("sam2", "sam2_video")
    sub_configs: ClassVar[dict[str, type]] = {"vision_config": Sam2VisionConfig,
                                              "prompt_encoder_config": Sam2PromptEncoderConfig,
                                              "mask_decoder_config": Sam2MaskDecoderConfig}
    vision_config: Sam2VisionConfig = None
    prompt_encoder_config: Sam2PromptEncoderConfig = None
    mask_decoder_config: Sam2MaskDecoderConfig = None
    initializer_range: float = 0.02

    def to_dict(self) -> dict[str, Any]:
        """The transformers config dict, with `architectures` naming the model class."""
        return {**super().to_dict(), "architectures": ["Sam2Model"]}

    @property
    def image_size(self) -> int:
        """The model's input size in pixels (square)."""
        return self.prompt_encoder_config.image_size

    @property
    def version(self) -> str:
        """'2': the image model's parts are the same in SAM 2.0 and 2.1."""
        return "2"



@dataclass(frozen=True)
class Sam2VideoConfig(VideoConfigBase):
    """The video model (transformers `Sam2VideoConfig`): the image parts plus the memory settings
    (`VideoConfigBase`'s, and SAM 2's memory attention feed-forward)."""

    model_type: ClassVar[str] = "sam2_video"
    accepted_model_types: ClassVar[tuple[str, ...]] = ("sam2_video", "sam2")
    sub_configs: ClassVar[dict[str, type]] = {"vision_config": Sam2VisionConfig,
                                              "prompt_encoder_config": Sam2VideoPromptEncoderConfig,
                                              "mask_decoder_config": Sam2VideoMaskDecoderConfig}
    vision_config: Sam2VisionConfig = None
    prompt_encoder_config: Sam2VideoPromptEncoderConfig = None
    mask_decoder_config: Sam2VideoMaskDecoderConfig = None
    memory_attention_feed_forward_hidden_size: int = 2048
    memory_attention_feed_forward_hidden_act: str = "relu"

    def to_dict(self) -> dict[str, Any]:
        """The transformers config dict, with `architectures` naming the model class."""
        return {**super().to_dict(), "architectures": ["Sam2VideoModel"]}

    # ----------------------------------------------------------------- presets
    @classmethod
    def from_preset(cls, name: str) -> Sam2VideoConfig:
        """A released SAM 2 / 2.1 architecture by its hub name, e.g. "sam2.1-hiera-tiny" or "sam2-hiera-large"."""
        key = name.split("/")[-1]
        if key not in cls.presets:
            raise ValueError(f"name: expected one of {sorted(cls.presets)}, got {name!r}")
        return cls.presets[key]

    @property
    def version(self) -> str:
        """'2.1' when the SAM 2.1 additions are on, else '2.0'."""
        return "2.1" if self.enable_temporal_pos_encoding_for_object_pointers else "2.0"


# ------------------------------------------------------------------------------------------- presets
_SIZES = {
    # size: (embed dims, heads, blocks, global blocks, windows, pos_embed background, channel list)
    "tiny": ((96, 192, 384, 768), (1, 2, 4, 8), (1, 2, 7, 2), (5, 7, 9), (8, 4, 14, 7), (7, 7)),
    "small": ((96, 192, 384, 768), (1, 2, 4, 8), (1, 2, 11, 2), (7, 10, 13), (8, 4, 14, 7), (7, 7)),
    "base-plus": ((112, 224, 448, 896), (2, 4, 8, 16), (2, 3, 16, 3), (12, 16, 20), (8, 4, 14, 7), (14, 14)),
    "large": ((144, 288, 576, 1152), (2, 4, 8, 16), (2, 6, 36, 4), (23, 33, 43), (8, 4, 16, 8), (7, 7)),
}


def _preset(size: str, version: str) -> Sam2VideoConfig:
    dims, heads, blocks, global_blocks, windows, background = _SIZES[size]
    backbone = Sam2HieraDetConfig(hidden_size=dims[0], embed_dim_per_stage=dims, num_attention_heads_per_stage=heads,
                                  blocks_per_stage=blocks, global_attention_blocks=global_blocks,
                                  window_size_per_stage=windows,
                                  window_positional_embedding_background_size=background)
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=tuple(reversed(dims)))
    is_21 = version == "2.1"
    return Sam2VideoConfig(vision_config=vision, enable_occlusion_spatial_embedding=is_21,
                           enable_temporal_pos_encoding_for_object_pointers=is_21)


PRESETS: dict[str, Sam2VideoConfig] = {
    f"{prefix}-hiera-{size}": _preset(size, version)
    for prefix, version in (("sam2.1", "2.1"), ("sam2", "2.0"))
    for size in _SIZES
}
Sam2Config.presets = Sam2VideoConfig.presets = PRESETS


def small_config(version: str = "2.1", image_size: int = 256) -> Sam2VideoConfig:
    """A 9 M-parameter video config that transformers accepts and that runs in seconds on a CPU: for tests and
    demos. It keeps window padding (14 on 16x16, 7 on 8x8) and the full decoder and memory widths."""
    backbone = Sam2HieraDetConfig(hidden_size=16, embed_dim_per_stage=(16, 32, 64, 128),
                                  num_attention_heads_per_stage=(1, 2, 4, 8), blocks_per_stage=(1, 2, 3, 1),
                                  global_attention_blocks=(4,), image_size=(image_size, image_size))
    s = image_size // 4
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=(128, 64, 32, 16),
                              backbone_feature_sizes=((s, s), (s // 2, s // 2), (s // 4, s // 4)))
    is_21 = version == "2.1"
    return Sam2VideoConfig(vision_config=vision, prompt_encoder_config={"image_size": image_size},
                           image_size=image_size, memory_attention_rope_feat_sizes=(s // 4, s // 4),
                           memory_attention_num_layers=2, enable_occlusion_spatial_embedding=is_21,
                           enable_temporal_pos_encoding_for_object_pointers=is_21)

