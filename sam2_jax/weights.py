"""transformers-named tensors <-> the Flax param tree, without torch.

A Flax param path joined with '.' is the transformers key, after these fixed rules:
- `kernel` <-> `weight`, with the layout change: Dense (in, out) <-> Linear (out, in); Conv HWIO <-> OIHW.
- `scale` (LayerNorm) and `embedding` (nn.Embed) <-> `weight`, same layout.
Every exception to the rules is in `_KEEP_NAME`. Loading is strict: missing, unexpected and mis-shaped
tensors are all reported in one error.

BatchNorm (EdgeTAM's RepViT): `scale` <-> `weight` as LayerNorm's; `running_mean` and `running_var` are params
under their own names. torch's `num_batches_tracked` counter (a training statistic that inference never reads) is
no param: reading accepts it beside each `running_mean`, and writing gives each BatchNorm one, 0 as a new
torch module has.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable, Mapping

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from .config import Sam2Config, Sam2VideoConfig, config_from_dict

_RUNNING_MEAN = "running_mean"
_BATCHES_TRACKED = "num_batches_tracked"

# Flax leaves that keep their own name (and layout) in transformers, against the rules above.
_KEEP_NAME = (
    re.compile(r"memory_encoder\.memory_fuser\.layers\.\d+\.scale$"),  # ConvNeXt layer scale, not a LayerNorm
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


def _to_torch(path: tuple[str, ...], value: np.ndarray) -> tuple[str, np.ndarray]:
    key = ".".join(path)
    if any(p.search(key) for p in _KEEP_NAME):
        return key, value
    leaf = path[-1]
    if leaf == "kernel":
        if value.ndim == 2:
            value = value.T
        elif value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)
        return key[: -len("kernel")] + "weight", value
    if leaf in ("scale", "embedding"):
        return key[: -len(leaf)] + "weight", value
    return key, value


def _from_torch_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    key = ".".join(path)
    if path[-1] == "kernel" and not any(p.search(key) for p in _KEEP_NAME):
        if value.ndim == 2:
            return value.T
        if value.ndim == 4:
            return value.transpose(2, 3, 1, 0)
    return value


def params_to_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flax params -> {transformers key: numpy array in the PyTorch layout}."""
    out = {}
    for path, value in flatten_dict(dict(params)).items():
        key, array = _to_torch(path, np.asarray(value))
        out[key] = np.ascontiguousarray(array)
        if path[-1] == _RUNNING_MEAN:  # a BatchNorm: torch's counter beside its statistics
            out[key[: -len(_RUNNING_MEAN)] + _BATCHES_TRACKED] = np.zeros((), np.int64)
    return out


def state_dict_to_params(state_dict: Mapping[str, np.ndarray], abstract_params: Mapping[str, Any],
                         ignore: Iterable[str] = ()) -> dict[str, Any]:
    """{transformers key: array} -> Flax params shaped like `abstract_params` (from `jax.eval_shape`).

    Strict: every expected tensor must be present with the right shape and nothing else may be left,
    except keys matching a regex in `ignore`. All problems are reported together.
    """
    ignore_res = [re.compile(p) for p in ignore]
    expected = {}
    for path, leaf in flatten_dict(dict(abstract_params)).items():
        key, _ = _to_torch(path, np.zeros((0,) * len(leaf.shape)))
        expected[key] = (path, leaf)
    missing, misshaped, params = [], [], {}
    for key, (path, leaf) in expected.items():
        if key not in state_dict:
            missing.append(key)
            continue
        value = np.asarray(state_dict[key])
        value = _from_torch_layout(path, value)
        if tuple(value.shape) != tuple(leaf.shape):
            misshaped.append(f"{key}: expected {_torch_shape(path, leaf.shape)}, got {tuple(state_dict[key].shape)}")
            continue
        params[path] = value.astype(leaf.dtype)
    counters = {k[: -len(_RUNNING_MEAN)] + _BATCHES_TRACKED for k in expected if k.endswith("." + _RUNNING_MEAN)}
    unexpected = [k for k in state_dict if k not in expected and k not in counters
                  and not any(p.match(k) for p in ignore_res)]
    if missing or unexpected or misshaped:
        lines = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                lines.append(f"{len(items)} {title}: " + ", ".join(sorted(items)))
        raise ValueError("checkpoint weights do not fit the config: " + "; ".join(lines))
    return unflatten_dict(params)


def random_params(abstract_params: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """Random weights shaped like `abstract_params`, without tracing the model's init (which takes a minute
    to compile at full size): LeCun-normal kernels, zero biases, unit LayerNorm and BatchNorm scales, BatchNorm
    variances U(0.5, 1.5), N(0, 1) Fourier matrices and N(0, 0.02) for every other tensor (tokens, embeddings,
    position embeddings, BatchNorm means)."""
    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in flatten_dict(dict(abstract_params)).items():
        shape, name = tuple(leaf.shape), path[-1]
        if name == "kernel":
            value = rng.standard_normal(shape) / np.sqrt(max(int(np.prod(shape[:-1])), 1))
        elif name == "bias":
            value = np.zeros(shape)
        elif name == "scale":
            value = np.ones(shape)
        elif name == "positional_embedding":
            value = rng.standard_normal(shape)
        elif name == "running_var":  # a BatchNorm's variance: positive
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = 0.02 * rng.standard_normal(shape)
        out[path] = value.astype(leaf.dtype)
    return unflatten_dict(out)


# transformers' `_init_weights` for SAM 2: tensors it sets to zero (besides biases), by key.
_ZERO_INIT = re.compile(r"(^|\.)(no_memory_embedding|no_memory_positional_encoding|memory_temporal_positional_encoding|"
                        r"no_object_pointer|occlusion_spatial_embedding_parameter|pos_embed|pos_embed_window|bias|running_mean)$"
                        r"|memory_fuser\.layers\.\d+\.scale$")


def init_params(abstract_params: Mapping[str, Any], initializer_range: float = 0.02, positional_scale: float = 1.0,
                seed: int = 0) -> dict[str, Any]:
    """transformers' initialisation of a SAM 2 model (`Sam2PreTrainedModel._init_weights`), keyed by `seed`:
    N(0, initializer_range) weights (linear, conv, embeddings, tokens), zero biases, LayerNorms at one and zero,
    N(0, positional_scale) for the random Fourier matrices, and zeros for the tensors transformers zeroes
    (position embeddings, no-memory and no-pointer tokens, temporal and occlusion embeddings, memory fuser
    layer scales); BatchNorms (EdgeTAM) at weight 1, bias 0, running mean 0 and variance 1. Only the random
    draws differ from torch's."""
    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in sorted(flatten_dict(dict(abstract_params)).items()):
        shape = tuple(leaf.shape)
        key, _ = _to_torch(path, np.zeros((0,) * len(shape)))
        if _ZERO_INIT.search(key):
            value = np.zeros(shape)
        elif path[-1] in ("scale", "running_var"):  # a LayerNorm or BatchNorm (layer scales matched _ZERO_INIT)
            value = np.ones(shape)
        elif path[-1] == "positional_embedding":
            value = positional_scale * rng.standard_normal(shape)
        else:
            value = initializer_range * rng.standard_normal(shape)
        out[path] = value.astype(leaf.dtype)
    return unflatten_dict(out)


def _torch_shape(path, shape) -> tuple[int, ...]:
    _, arr = _to_torch(path, np.zeros(shape, np.float32))
    return tuple(arr.shape)


# ----------------------------------------------------------------------------------------- files
PACKAGED = ("sam2-jax-shapes",)  # checkpoints shipped in sam2_jax/pretrained/


def resolve_pretrained(name_or_path: str | os.PathLike) -> str:
    """The folder of a checkpoint: an existing folder as given, else a name of PACKAGED as its folder inside
    the package, else the argument unchanged (the loader then reports it)."""
    path = os.fspath(name_or_path)
    if not os.path.isdir(path) and path in PACKAGED:
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained", path)
    return path


def checkpoint_folder(name_or_path: str | os.PathLike) -> str:
    """`resolve_pretrained`, then the folder it names, or a ValueError saying it is not one."""
    folder = resolve_pretrained(name_or_path)
    if not os.path.isdir(folder):
        raise ValueError(f"pretrained_model_name_or_path: expected a checkpoint folder, got {folder!r}, which "
                         "is not a folder (hub downloads are not supported: download it first)")
    return folder


def read_state_dict(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a transformers checkpoint folder (single or sharded safetensors) as numpy."""
    from safetensors.numpy import load_file

    folder = os.fspath(folder)
    single = os.path.join(folder, WEIGHTS_NAME)
    index = os.path.join(folder, WEIGHTS_INDEX_NAME)
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = [os.path.join(folder, name) for name in sorted(set(weight_map.values()))]
    else:
        raise ValueError(f"pretrained_model_name_or_path: expected a folder with {WEIGHTS_NAME} or "
                         f"{WEIGHTS_INDEX_NAME}, got {folder!r} without either")
    state_dict = {}
    for file in files:
        try:
            state_dict.update(load_file(file))
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"pretrained_model_name_or_path: {file!r} is not a readable safetensors file "
                             f"({err})") from err
    return state_dict


def read_config(folder: str | os.PathLike) -> Sam2Config | Sam2VideoConfig:
    """The config of a checkpoint folder (its config.json), of the class its model_type names
    (`config.MODEL_CONFIGS`: Sam2Config, Sam2VideoConfig, EdgeTamConfig or EdgeTamVideoConfig)."""
    path = os.path.join(os.fspath(folder), CONFIG_NAME)
    if not os.path.isfile(path):
        raise ValueError(f"pretrained_model_name_or_path: expected a folder with {CONFIG_NAME}, got "
                         f"{os.fspath(folder)!r} without it")
    with open(path) as f:
        try:
            data = json.load(f)
        except ValueError as err:
            raise ValueError(f"pretrained_model_name_or_path: {path!r} is not readable JSON ({err})") from err
    return config_from_dict(data)


def save_checkpoint(folder: str | os.PathLike, params: Mapping[str, Any], config: Sam2Config | Sam2VideoConfig) -> None:
    """Write config.json and model.safetensors that transformers (and sam2_jax) load."""
    from safetensors.numpy import save_file

    os.makedirs(folder, exist_ok=True)
    config.to_json_file(os.path.join(folder, CONFIG_NAME))
    state_dict = {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) and v.dtype != np.float32 else v
                  for k, v in params_to_state_dict(params).items()}
    save_file(state_dict, os.path.join(folder, WEIGHTS_NAME), metadata={"format": "pt"})
