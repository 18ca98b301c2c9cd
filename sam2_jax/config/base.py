"""What the configs of every family share: transformers' config.json reading and writing (`ConfigMixin`), the
read-only dict of `rope_parameters` (`FrozenDict`), and the memory settings both video configs carry
(`VideoConfigBase`)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, fields
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
    presets: ClassVar[dict[str, Any]] = {}  # the family's released architectures by hub name, for from_pretrained

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
        architecture's hub name such as "facebook/sam2.1-hiera-tiny", from the family's `presets`); `kwargs`
        override."""
        path = os.fspath(pretrained_model_name_or_path)
        packaged = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained", path)
        if not os.path.exists(path) and os.path.isdir(packaged) and "/" not in path:
            path = packaged
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        if os.path.isfile(path):
            with open(path) as f:
                return cls.from_dict(json.load(f), **kwargs)
        if path.split("/")[-1] in cls.presets:
            return cls.from_dict(cls.presets[path.split("/")[-1]].to_dict(), **kwargs)
        raise ValueError(f"pretrained_model_name_or_path: expected a folder with {CONFIG_NAME}, a config.json, a "
                         f"packaged model or one of {sorted(cls.presets)}, got {os.fspath(pretrained_model_name_or_path)!r}"
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


def _freeze(value):
    """A JSON value with its dicts as FrozenDicts and its lists as tuples, so that it is hashable."""
    if isinstance(value, dict):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


_ROPE_DEFAULT = FrozenDict(rope_theta=10000.0, rope_type="axial")


@dataclass(frozen=True)
class VideoConfigBase(ConfigMixin):
    """The fields SAM 2's and EdgeTAM's video configs share (the tracking, memory encoding and memory attention
    settings), with transformers' defaults; each family's video config adds its own. `rope_parameters` is
    transformers' {"rope_theta": ..., "rope_type": "axial"} (read-only); `memory_attention_rope_theta` reads its
    theta, as in transformers."""

    vision_config: Any = None
    prompt_encoder_config: Any = None
    mask_decoder_config: Any = None
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
    memory_attention_dropout: float = 0.1
    memory_attention_rope_feat_sizes: tuple[int, int] = (64, 64)
    memory_attention_rope_dropout: float = 0.1
    rope_parameters: FrozenDict = _ROPE_DEFAULT
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
