"""Frozen, hashable configs for SAM 2 / SAM 2.1, read from and written to transformers' config.json.

Field names are transformers' own (`Sam2HieraDetConfig`, `Sam2VisionConfig`, `Sam2PromptEncoderConfig`,
`Sam2MaskDecoderConfig`, `Sam2Config` / `Sam2VideoConfig`), so a config.json reads field for field.
Configs are passed to `jax.jit` as static arguments, hence frozen dataclasses of tuples.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

_SUPPORTED_ACTIVATIONS = {"hidden_act": "gelu", "memory_attention_feed_forward_hidden_act": "relu",
                          "mask_downsampler_hidden_act": "gelu", "memory_fuser_hidden_act": "gelu"}


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class HieraConfig:
    """Hiera trunk (transformers `Sam2HieraDetConfig`)."""

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

    @property
    def stage_ends(self) -> tuple[int, ...]:
        """The index of the last block of each Hiera stage."""
        ends, total = [], 0
        for n in self.blocks_per_stage:
            total += n
            ends.append(total - 1)
        return tuple(ends)


@dataclass(frozen=True)
class VisionConfig:
    """Hiera + FPN neck (transformers `Sam2VisionConfig`)."""

    backbone_config: HieraConfig = field(default_factory=HieraConfig)
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


@dataclass(frozen=True)
class PromptEncoderConfig:
    """Points, boxes and masks to embeddings (transformers `Sam2PromptEncoderConfig`)."""

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
class MaskDecoderConfig:
    """Two-way transformer and heads (transformers `Sam2MaskDecoderConfig`)."""

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
class Sam2Config:
    """The whole model: image parts plus the video (memory) settings of transformers `Sam2VideoConfig`.

    The image model (`model_type="sam2"`) uses only the first three sub-configs; the video fields keep
    their transformers defaults and are written only for `model_type="sam2_video"`.
    """

    vision_config: VisionConfig = field(default_factory=VisionConfig)
    prompt_encoder_config: PromptEncoderConfig = field(default_factory=PromptEncoderConfig)
    mask_decoder_config: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    # Video / memory settings (transformers Sam2VideoConfig).
    num_maskmem: int = 7
    image_size: int = 1024
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    enable_occlusion_spatial_embedding: bool = True
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    max_object_pointers_in_encoder: int = 16
    max_cond_frame_num: int = -1
    enable_temporal_pos_encoding_for_object_pointers: bool = True
    memory_attention_hidden_size: int = 256
    memory_attention_num_layers: int = 4
    memory_attention_num_attention_heads: int = 1
    memory_attention_downsample_rate: int = 1
    memory_attention_feed_forward_hidden_size: int = 2048
    memory_attention_feed_forward_hidden_act: str = "relu"
    memory_attention_dropout: float = 0.1
    memory_attention_rope_feat_sizes: tuple[int, int] = (64, 64)
    memory_attention_rope_dropout: float = 0.1
    memory_attention_rope_theta: float = 10000.0
    memory_encoder_hidden_size: int = 256
    memory_encoder_output_channels: int = 64
    mask_downsampler_embed_dim: int = 256
    mask_downsampler_kernel_size: int = 3
    mask_downsampler_stride: int = 2
    mask_downsampler_padding: int = 1
    mask_downsampler_total_stride: int = 16
    mask_downsampler_hidden_act: str = "gelu"
    memory_fuser_num_layers: int = 2
    memory_fuser_embed_dim: int = 256
    memory_fuser_intermediate_dim: int = 1024
    memory_fuser_kernel_size: int = 7
    memory_fuser_padding: int = 3
    memory_fuser_layer_scale_init_value: float = 1e-6
    memory_fuser_hidden_act: str = "gelu"
    model_type: str = "sam2_video"

    def __post_init__(self):
        for cfg in (self, self.vision_config, self.vision_config.backbone_config, self.prompt_encoder_config,
                    self.mask_decoder_config):
            for name, expected in _SUPPORTED_ACTIVATIONS.items():
                got = getattr(cfg, name, expected)
                if got != expected:
                    raise ValueError(f"{type(cfg).__name__}.{name}: expected {expected!r} (the only one SAM 2 "
                                     f"uses), got {got!r}")
        if self.model_type not in ("sam2", "sam2_video"):
            raise ValueError(f"model_type: expected 'sam2' or 'sam2_video', got {self.model_type!r}")

    # ----------------------------------------------------------------- presets
    @classmethod
    def from_preset(cls, name: str) -> "Sam2Config":
        """A released SAM 2 / 2.1 architecture by its hub name, e.g. "sam2.1-hiera-tiny" or "sam2-hiera-large"."""
        key = name.split("/")[-1]
        if key not in PRESETS:
            raise ValueError(f"name: expected one of {sorted(PRESETS)}, got {name!r}")
        return PRESETS[key]

    @property
    def version(self) -> str:
        """'2.1' when the SAM 2.1 additions are on, else '2.0'."""
        return "2.1" if self.enable_temporal_pos_encoding_for_object_pointers else "2.0"

    # --------------------------------------------------------------- json i/o
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Sam2Config":
        """Build from a transformers config dict (model_type "sam2" or "sam2_video")."""
        model_type = data.get("model_type")
        if model_type not in ("sam2", "sam2_video"):
            raise ValueError(f"config.model_type: expected 'sam2' or 'sam2_video', got {model_type!r}")
        vision = dict(data.get("vision_config") or {})
        backbone = _build(HieraConfig, vision.pop("backbone_config", None) or {})
        kwargs = {
            "vision_config": _build(VisionConfig, vision, backbone_config=backbone),
            "prompt_encoder_config": _build(PromptEncoderConfig, data.get("prompt_encoder_config") or {}),
            "mask_decoder_config": _build(MaskDecoderConfig, data.get("mask_decoder_config") or {}),
            "model_type": model_type,
        }
        if model_type == "sam2_video":
            top = {k: v for k, v in data.items() if k not in kwargs}
            rope = top.pop("rope_parameters", None) or {}
            if "rope_theta" in rope:
                top["memory_attention_rope_theta"] = rope["rope_theta"]
            return _build(cls, top, **kwargs)
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "Sam2Config":
        """Read a transformers config.json (`sam2` or `sam2_video`)."""
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        """The transformers config dict for this config's model_type."""
        vision = _plain(self.vision_config)
        vision["backbone_config"] = {**_plain(self.vision_config.backbone_config),
                                     "model_type": "sam2_hiera_det_model"}
        vision["model_type"] = "sam2_vision_model"
        is_video = self.model_type == "sam2_video"
        out = {
            "model_type": self.model_type,
            "architectures": ["Sam2VideoModel" if is_video else "Sam2Model"],
            "vision_config": vision,
            "prompt_encoder_config": {**_plain(self.prompt_encoder_config),
                                      "model_type": "sam2_video_prompt_encoder" if is_video else "sam2_prompt_encoder"},
            "mask_decoder_config": {**_plain(self.mask_decoder_config),
                                    "model_type": "sam2_video_mask_decoder" if is_video else "sam2_mask_decoder"},
            "initializer_range": 0.02,
        }
        if is_video:
            nested = {"vision_config", "prompt_encoder_config", "mask_decoder_config", "model_type",
                      "memory_attention_rope_theta"}
            out.update({f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.name not in nested})
            out["rope_parameters"] = {"rope_type": "axial", "rope_theta": self.memory_attention_rope_theta}
        return out

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Write the config as a transformers config.json."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _plain(cfg) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(cfg, f.name)) for f in fields(cfg) if not dataclasses.is_dataclass(
        getattr(cfg, f.name))}


def _build(cls, data: dict[str, Any], **nested):
    """Instantiate `cls` from the keys of `data` it knows, converting lists to tuples; generic transformers
    keys (dtype, architectures, ...) are ignored."""
    known = {f.name: f for f in fields(cls)}
    kwargs = dict(nested)
    for key, value in data.items():
        if key not in known or key in nested:
            continue
        default = known[key].default
        if isinstance(default, tuple):
            if key in ("image_size", "patch_kernel_size", "patch_stride", "patch_padding", "query_stride",
                       "window_positional_embedding_background_size"):
                value = _pair(value)
            else:
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        elif key in ("image_size", "patch_size") and isinstance(value, (list, tuple)):
            if len(set(value)) != 1:
                raise ValueError(f"{cls.__name__}.{key}: expected a square size, got {value}")
            value = int(value[0])
        kwargs[key] = value
    return cls(**kwargs)


# ------------------------------------------------------------------------------------------- presets
_SIZES = {
    # size: (embed dims, heads, blocks, global blocks, windows, pos_embed background, channel list)
    "tiny": ((96, 192, 384, 768), (1, 2, 4, 8), (1, 2, 7, 2), (5, 7, 9), (8, 4, 14, 7), (7, 7)),
    "small": ((96, 192, 384, 768), (1, 2, 4, 8), (1, 2, 11, 2), (7, 10, 13), (8, 4, 14, 7), (7, 7)),
    "base-plus": ((112, 224, 448, 896), (2, 4, 8, 16), (2, 3, 16, 3), (12, 16, 20), (8, 4, 14, 7), (14, 14)),
    "large": ((144, 288, 576, 1152), (2, 4, 8, 16), (2, 6, 36, 4), (23, 33, 43), (8, 4, 16, 8), (7, 7)),
}


def _preset(size: str, version: str) -> Sam2Config:
    dims, heads, blocks, global_blocks, windows, background = _SIZES[size]
    backbone = HieraConfig(hidden_size=dims[0], embed_dim_per_stage=dims, num_attention_heads_per_stage=heads,
                           blocks_per_stage=blocks, global_attention_blocks=global_blocks,
                           window_size_per_stage=windows,
                           window_positional_embedding_background_size=background)
    vision = VisionConfig(backbone_config=backbone, backbone_channel_list=tuple(reversed(dims)))
    is_21 = version == "2.1"
    return Sam2Config(vision_config=vision, enable_occlusion_spatial_embedding=is_21,
                      enable_temporal_pos_encoding_for_object_pointers=is_21)


PRESETS: dict[str, Sam2Config] = {
    f"{prefix}-hiera-{size}": _preset(size, version)
    for prefix, version in (("sam2.1", "2.1"), ("sam2", "2.0"))
    for size in _SIZES
}


def small_config(version: str = "2.1", image_size: int = 256) -> Sam2Config:
    """A 9 M-parameter config that transformers accepts and that runs in seconds on a CPU: for tests and
    demos. It keeps window padding (14 on 16x16, 7 on 8x8) and the full decoder and memory widths."""
    backbone = HieraConfig(hidden_size=16, embed_dim_per_stage=(16, 32, 64, 128),
                           num_attention_heads_per_stage=(1, 2, 4, 8), blocks_per_stage=(1, 2, 3, 1),
                           global_attention_blocks=(4,), image_size=(image_size, image_size))
    s = image_size // 4
    vision = VisionConfig(backbone_config=backbone, backbone_channel_list=(128, 64, 32, 16),
                          backbone_feature_sizes=((s, s), (s // 2, s // 2), (s // 4, s // 4)))
    is_21 = version == "2.1"
    return Sam2Config(vision_config=vision, prompt_encoder_config=PromptEncoderConfig(image_size=image_size),
                      image_size=image_size, memory_attention_rope_feat_sizes=(s // 4, s // 4),
                      memory_attention_num_layers=2, enable_occlusion_spatial_embedding=is_21,
                      enable_temporal_pos_encoding_for_object_pointers=is_21)


__all__ = ["HieraConfig", "VisionConfig", "PromptEncoderConfig", "MaskDecoderConfig", "Sam2Config", "PRESETS",
           "small_config", "replace"]
