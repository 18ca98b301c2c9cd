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
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

_SUPPORTED_ACTIVATIONS = {"hidden_act": "gelu", "memory_attention_feed_forward_hidden_act": "relu",
                          "memory_attention_mlp_hidden_act": "relu", "mask_downsampler_hidden_act": "gelu",
                          "memory_fuser_hidden_act": "gelu"}
# transformers' generic PreTrainedConfig keys, which these models do not use: not fields of ours (read and dropped).
GENERIC_KEYS = frozenset({"transformers_version", "architectures", "output_hidden_states", "return_dict", "dtype",
                          "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type",
                          "_name_or_path", "output_attentions"})
# Fields transformers also takes as a single int (a square), kept as (height, width) pairs.
_PAIRS = ("image_size", "patch_kernel_size", "patch_stride", "patch_padding", "query_stride",
          "window_positional_embedding_background_size")
CONFIG_NAME = "config.json"


class FrozenDict(dict):
    """A read-only, hashable dict (a config's `rope_parameters`), so that configs stay hashable."""

    def __hash__(self):
        return hash(tuple(sorted(self.items())))

    def _read_only(self, *args, **kwargs):
        """Refused: a FrozenDict is read-only."""
        raise TypeError("FrozenDict is read-only; build a new config with replace(config, ...)")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _read_only


def _tuples(value):
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class ConfigMixin:
    """What every config shares: transformers' (de)serialisation and the normalisation of its arguments."""

    model_type: ClassVar[str]
    sub_configs: ClassVar[dict[str, type]] = {}
    accepted_model_types: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is not None and f.default is not dataclasses.MISSING:
                value = f.default  # transformers' None for "the default"
            if f.name in self.sub_configs:
                value = _sub_config(self.sub_configs[f.name], value, f"{type(self).__name__}.{f.name}")
            elif isinstance(f.default, int) and isinstance(value, (list, tuple)):  # a square size as a pair
                if len(set(value)) != 1:
                    raise ValueError(f"{type(self).__name__}.{f.name}: expected a square size, got {list(value)}")
                value = int(value[0])
            elif isinstance(value, list) or (isinstance(value, tuple) and isinstance(f.default, tuple)):
                value = _tuples(value)
                if f.name in _PAIRS and len(value) == 1:
                    value = (value[0], value[0])
            elif f.name in _PAIRS and isinstance(f.default, tuple) and isinstance(value, int):
                value = (value, value)
            object.__setattr__(self, f.name, value)
        for name, expected in _SUPPORTED_ACTIVATIONS.items():
            got = getattr(self, name, expected)
            if got != expected:
                raise ValueError(f"{type(self).__name__}.{name}: expected {expected!r} (the only one SAM 2 uses), "
                                 f"got {got!r}")

    # --------------------------------------------------------------- json i/o
    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs):
        """Build from a transformers config dict; `kwargs` override its values. Keys this config does not
        have (transformers' generic ones: dtype, architectures, ...) are ignored."""
        if not isinstance(config_dict, dict):
            raise TypeError(f"config_dict: expected a dict, got {type(config_dict).__name__}")
        data = {**config_dict, **kwargs}
        model_type = data.get("model_type")
        if cls.accepted_model_types and model_type is not None and model_type not in cls.accepted_model_types:
            raise ValueError(f"config.model_type: expected {' or '.join(map(repr, cls.accepted_model_types))}, "
                             f"got {model_type!r}")
        return cls(**cls._known_keys(data))

    @classmethod
    def _known_keys(cls, data: dict[str, Any]) -> dict[str, Any]:
        known = {f.name for f in fields(cls)}
        return {k: v for k, v in data.items() if k in known}

    def to_dict(self) -> dict[str, Any]:
        """The transformers config dict (sub-configs as nested dicts with their model_type)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, ConfigMixin) else _jsonable(value)
        out["model_type"] = self.model_type
        return out

    def to_json_string(self, use_diff: bool = False) -> str:
        """The config as transformers' JSON text (every field; `use_diff` is accepted and ignored)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        """Write the config as a transformers config.json."""
        with open(json_file_path, "w") as f:
            f.write(self.to_json_string())

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike):
        """Read a transformers config.json."""
        try:
            with open(json_file) as f:
                data = json.load(f)
        except (OSError, ValueError) as err:
            raise ValueError(f"json_file: {os.fspath(json_file)!r} is not a readable JSON file ({err})") from err
        return cls.from_dict(data)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write `save_directory`/config.json, as transformers does."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory: expected a folder, got the file {os.fspath(save_directory)!r}")
        os.makedirs(save_directory, exist_ok=True)
        self.to_json_file(os.path.join(save_directory, CONFIG_NAME))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Read a checkpoint folder's config.json (or a config.json path, a packaged model's name, or a released
        architecture's hub name such as "facebook/sam2.1-hiera-tiny", from `PRESETS`); `kwargs` override."""
        path = os.fspath(pretrained_model_name_or_path)
        packaged = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained", path)
        if not os.path.exists(path) and os.path.isdir(packaged) and "/" not in path:
            path = packaged
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        if os.path.isfile(path):
            with open(path) as f:
                return cls.from_dict(json.load(f), **kwargs)
        if path.split("/")[-1] in PRESETS:
            return cls.from_dict(PRESETS[path.split("/")[-1]].to_dict(), **kwargs)
        raise ValueError(f"pretrained_model_name_or_path: expected a folder with {CONFIG_NAME}, a config.json, a "
                         f"packaged model or one of {sorted(PRESETS)}, got {os.fspath(pretrained_model_name_or_path)!r}"
                         " (hub downloads are not supported: download it first)")


def _family(model_type: str) -> str:
    """The model family of a model_type: "sam2" for "sam2_video_prompt_encoder", "edgetam" for "edgetam_vision_model"."""
    return model_type.split("_")[0]


def _sub_config(cls, value, name):
    """A sub-config argument (None, a dict, a config with the same fields, or transformers' config object) -> an
    instance of `cls`."""
    if value is None:
        return cls()
    given = (value.get("model_type") if isinstance(value, dict) else
             type(value).model_type if isinstance(value, ConfigMixin) else getattr(value, "model_type", None))
    if isinstance(given, str) and _family(given) != _family(cls.model_type):
        raise ValueError(f"{name}: expected a {_family(cls.model_type)} sub-config ({cls.__name__}), got model_type "
                         f"{given!r}")
    if isinstance(value, cls) and type(value) is cls:
        return value
    if isinstance(value, dict):
        return cls.from_dict({k: v for k, v in value.items() if k != "model_type"})
    if isinstance(value, ConfigMixin) and {f.name for f in fields(value)} == {f.name for f in fields(cls)}:
        return cls(**{f.name: getattr(value, f.name) for f in fields(value)})
    if not isinstance(value, ConfigMixin) and callable(getattr(value, "to_dict", None)):  # transformers' config
        return cls.from_dict({k: v for k, v in value.to_dict().items() if k != "model_type"})
    raise TypeError(f"{name}: expected a dict or a {cls.__name__}, got {type(value).__name__}")


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


_ROPE_DEFAULT = FrozenDict(rope_theta=10000.0, rope_type="axial")


class _MemoryRopeMixin:
    """The memory attention's `rope_parameters` of a video config: transformers' {"rope_theta": ...,
    "rope_type": "axial"} (read-only); `memory_attention_rope_theta` reads its theta, as in transformers."""

    def __post_init__(self):
        super().__post_init__()
        rope = self.rope_parameters
        if not isinstance(rope, dict):
            raise TypeError(f"{type(self).__name__}.rope_parameters: expected a dict like {dict(_ROPE_DEFAULT)}, "
                            f"got {type(rope).__name__}")
        rope = FrozenDict({**_ROPE_DEFAULT, **rope})
        rope = FrozenDict({**rope, "rope_theta": float(rope["rope_theta"])})
        if rope["rope_type"] != "axial":
            raise ValueError(f"{type(self).__name__}.rope_parameters: expected rope_type 'axial', got "
                             f"{rope['rope_type']!r}")
        object.__setattr__(self, "rope_parameters", rope)

    @classmethod
    def _known_keys(cls, data: dict[str, Any]) -> dict[str, Any]:
        out = super()._known_keys(data)
        if "memory_attention_rope_theta" in data and "rope_parameters" not in data:  # older config.json files
            out["rope_parameters"] = {"rope_theta": data["memory_attention_rope_theta"], "rope_type": "axial"}
        return out

    @property
    def memory_attention_rope_theta(self) -> float:
        """The memory attention's RoPE theta, `rope_parameters["rope_theta"]`."""
        return self.rope_parameters["rope_theta"]


@dataclass(frozen=True)
class Sam2VideoConfig(_MemoryRopeMixin, ConfigMixin):
    """The video model (transformers `Sam2VideoConfig`): the image parts plus the memory settings.

    `rope_parameters` is transformers' {"rope_theta": ..., "rope_type": "axial"} (read-only);
    `memory_attention_rope_theta` reads its theta, as in transformers."""

    model_type: ClassVar[str] = "sam2_video"
    accepted_model_types: ClassVar[tuple[str, ...]] = ("sam2_video", "sam2")
    sub_configs: ClassVar[dict[str, type]] = {"vision_config": Sam2VisionConfig,
                                              "prompt_encoder_config": Sam2VideoPromptEncoderConfig,
                                              "mask_decoder_config": Sam2VideoMaskDecoderConfig}
    vision_config: Sam2VisionConfig = None
    prompt_encoder_config: Sam2VideoPromptEncoderConfig = None
    mask_decoder_config: Sam2VideoMaskDecoderConfig = None
    initializer_range: float = 0.02
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
    memory_encoder_hidden_size: int = 256
    memory_encoder_output_channels: int = 64
    rope_parameters: FrozenDict = _ROPE_DEFAULT
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

    def to_dict(self) -> dict[str, Any]:
        """The transformers config dict, with `architectures` naming the model class."""
        return {**super().to_dict(), "architectures": ["Sam2VideoModel"]}

    # ----------------------------------------------------------------- presets
    @classmethod
    def from_preset(cls, name: str) -> "Sam2VideoConfig":
        """A released SAM 2 / 2.1 architecture by its hub name, e.g. "sam2.1-hiera-tiny" or "sam2-hiera-large"."""
        key = name.split("/")[-1]
        if key not in PRESETS:
            raise ValueError(f"name: expected one of {sorted(PRESETS)}, got {name!r}")
        return PRESETS[key]

    @property
    def version(self) -> str:
        """'2.1' when the SAM 2.1 additions are on, else '2.0'."""
        return "2.1" if self.enable_temporal_pos_encoding_for_object_pointers else "2.0"


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


# ------------------------------------------------------------------------------------------- EdgeTAM
def _freeze(value):
    """A JSON value with its dicts as FrozenDicts and its lists as tuples, so that it is hashable."""
    if isinstance(value, dict):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


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
class EdgeTamVideoConfig(_MemoryRopeMixin, ConfigMixin):
    """The EdgeTAM video model (transformers `EdgeTamVideoConfig`): the image parts, SAM 2's memory encoder, the
    spatial perceiver resampler and EdgeTAM's memory attention. The vision config defaults to EdgeTAM's
    (transformers' default names SAM 2's Hiera vision config)."""

    model_type: ClassVar[str] = "edgetam_video"
    accepted_model_types: ClassVar[tuple[str, ...]] = ("edgetam_video", "edgetam")
    sub_configs: ClassVar[dict[str, type]] = {"vision_config": EdgeTamVisionConfig,
                                              "prompt_encoder_config": EdgeTamVideoPromptEncoderConfig,
                                              "mask_decoder_config": EdgeTamVideoMaskDecoderConfig}
    vision_config: EdgeTamVisionConfig = None
    prompt_encoder_config: EdgeTamVideoPromptEncoderConfig = None
    mask_decoder_config: EdgeTamVideoMaskDecoderConfig = None
    initializer_range: float = 0.02
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
    memory_attention_num_layers: int = 2
    memory_attention_num_attention_heads: int = 1
    memory_attention_downsample_rate: int = 1
    memory_attention_mlp_hidden_size: int = 2048
    memory_attention_mlp_hidden_act: str = "relu"
    memory_attention_dropout: float = 0.1
    memory_attention_rope_feat_sizes: tuple[int, int] = (64, 64)
    memory_attention_rope_k_sizes: tuple[int, int] = (16, 16)
    memory_attention_rope_dropout: float = 0.1
    rope_parameters: FrozenDict = _ROPE_DEFAULT
    perceiver_resampler_num_latents: int = 256
    perceiver_resampler_num_latents_2d: int = 256
    perceiver_resampler_hidden_size: int = 64
    perceiver_resampler_mlp_intermediate_size: int = 256
    perceiver_resampler_num_attention_heads: int = 1
    perceiver_resampler_attention_head_dim: int = 64
    perceiver_resampler_num_layers: int = 2
    perceiver_resampler_hidden_dropout: float = 0.0
    perceiver_resampler_attention_dropout: float = 0.0
    memory_encoder_hidden_size: int = 256
    memory_encoder_output_channels: int = 64
    mask_downsampler_embed_dim: int = 256
    memory_fuser_intermediate_dim: int = 1024
    mask_downsampler_kernel_size: int = 3
    mask_downsampler_stride: int = 2
    mask_downsampler_padding: int = 1
    mask_downsampler_total_stride: int = 16
    mask_downsampler_hidden_act: str = "gelu"
    memory_fuser_num_layers: int = 2
    memory_fuser_embed_dim: int = 256
    memory_fuser_kernel_size: int = 7
    memory_fuser_padding: int = 3
    memory_fuser_layer_scale_init_value: float = 1e-6
    memory_fuser_hidden_act: str = "gelu"

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


# Each transformers model_type and its config class.
MODEL_CONFIGS: dict[str, type] = {"sam2": Sam2Config, "sam2_video": Sam2VideoConfig, "edgetam": EdgeTamConfig,
                                  "edgetam_video": EdgeTamVideoConfig}


# The names before transformers' (kept for the code that uses them).
HieraConfig = Sam2HieraDetConfig
VisionConfig = Sam2VisionConfig
PromptEncoderConfig = Sam2PromptEncoderConfig
MaskDecoderConfig = Sam2MaskDecoderConfig

__all__ = ["Sam2HieraDetConfig", "Sam2VisionConfig", "Sam2PromptEncoderConfig", "Sam2MaskDecoderConfig",
           "Sam2VideoPromptEncoderConfig", "Sam2VideoMaskDecoderConfig", "Sam2Config", "Sam2VideoConfig",
           "FrozenDict", "config_from_dict", "PRESETS", "small_config", "replace", "HieraConfig", "VisionConfig",
           "PromptEncoderConfig", "MaskDecoderConfig", "EdgeTamVisionConfig", "EdgeTamPromptEncoderConfig",
           "EdgeTamMaskDecoderConfig", "EdgeTamConfig", "EdgeTamVideoPromptEncoderConfig",
           "EdgeTamVideoMaskDecoderConfig", "EdgeTamVideoConfig", "edgetam_small_config", "EDGETAM_PRESETS",
           "MODEL_CONFIGS", "GENERIC_KEYS", "REPVIT_M1_BACKBONE"]
