"""Read a SAM 2 or EdgeTAM checkpoint in either format, check every tensor, write it in either format.

Formats: "original" is a facebookresearch/sam2 or facebookresearch/EdgeTAM `.pt` ({"model": state_dict}, no
config: only the released variants, the eight SAM 2 / 2.1 ones and EdgeTAM, recognised from their tensors);
"transformers" is a folder with config.json and model.safetensors (a video model's: `Sam2VideoModel` or
`EdgeTamVideoModel`), which is also sam2-jax's own checkpoint format.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
import zipfile
from typing import Any, Callable

import torch
from safetensors.torch import save_file

from sam2_jax import weights
from sam2_jax.config import EdgeTamConfig, EdgeTamVideoConfig, Sam2VideoConfig, replace

from .original import RELEASED, check_tensors, complete_batch_counters, infer_preset, original_shapes, \
    released_config, to_original, to_transformers, transformers_shapes

FORMATS = ("transformers", "original")


@dataclasses.dataclass(frozen=True)
class Summary:
    """What `convert` did, for the one-line report."""

    variant: str
    source_format: str
    target_format: str
    tensors: int
    parameters: int
    seconds: float  # reading, checking and writing
    check_report: str | None
    check_seconds: float


def _is_edgetam(config) -> bool:
    return isinstance(config, (EdgeTamConfig, EdgeTamVideoConfig))


def variant_name(config: Sam2VideoConfig | EdgeTamVideoConfig) -> str:
    """The released variant `config` describes ("sam2.1-hiera-tiny", ..., "edgetam"), else "custom SAM <version>"
    or "custom EdgeTAM". EdgeTAM's timm backbone config counts by its architecture only: its other keys (timm's
    pretrained_cfg, labels, ...) do not change the network."""
    for name, preset in RELEASED.items():
        if _is_edgetam(config) != _is_edgetam(preset):
            continue
        candidate = replace(config, model_type=preset.model_type)
        if _is_edgetam(candidate) and candidate.vision_config.backbone_config.get("architecture") == \
                preset.vision_config.backbone_config["architecture"]:
            candidate = replace(candidate, vision_config=replace(
                candidate.vision_config, backbone_config=preset.vision_config.backbone_config))
        if candidate == preset:
            return name
    return "custom EdgeTAM" if _is_edgetam(config) else f"custom SAM {config.version}"


def read_checkpoint(path: str | os.PathLike) -> tuple[Sam2VideoConfig | EdgeTamVideoConfig, dict[str, torch.Tensor],
                                                     str]:
    """(config, checked tensors under transformers names, source format) of an original `.pt` or a
    transformers folder."""
    path = os.fspath(path)
    try:
        if os.path.isdir(path):
            return (*_read_transformers(path), "transformers")
        if os.path.isfile(path):
            return (*_read_original(path), "original")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    raise ValueError(f"{path}: expected an original SAM 2 or EdgeTAM .pt file or a transformers checkpoint folder, "
                     "got a path that does not exist")


def _read_original(path: str) -> tuple[Sam2VideoConfig | EdgeTamVideoConfig, dict[str, torch.Tensor]]:
    if not zipfile.is_zipfile(path):
        raise ValueError("not a readable PyTorch checkpoint (torch.save writes a zip archive; this file is not one, "
                         "or is truncated)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... by file damage
        raise ValueError(f"not a readable PyTorch checkpoint ({type(err).__name__}: {err})".splitlines()[0]) \
            from None
    state_dict = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        got = (f"a dict with keys {sorted(map(str, checkpoint))[:8]}" if isinstance(checkpoint, dict)
               else f"a {type(checkpoint).__name__}")
        raise ValueError(f"expected an original SAM 2 or EdgeTAM checkpoint, a dict whose 'model' entry is the state "
                         f"dict, got {got}")
    not_tensors = [str(k) for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"expected a state dict of tensors, got {len(not_tensors)} entries that are not: "
                         f"{', '.join(not_tensors)}")
    name = infer_preset(state_dict)
    config = released_config(name)
    expected = original_shapes(config)
    state_dict = complete_batch_counters(state_dict, expected)
    check_tensors(state_dict, expected, f"an original {name} checkpoint")
    return config, to_transformers(state_dict, config)


def _read_transformers(folder: str) -> tuple[Sam2VideoConfig | EdgeTamVideoConfig, dict[str, torch.Tensor]]:
    try:
        config = weights.read_config(folder)
    except TypeError as err:  # a field of the wrong kind in config.json
        raise ValueError(f"{weights.CONFIG_NAME} does not describe a SAM 2 or EdgeTAM model ({err})") from None
    if not isinstance(config, (Sam2VideoConfig, EdgeTamVideoConfig)):
        raise ValueError(f"expected a video model's checkpoint (model_type 'sam2_video' or 'edgetam_video': the "
                         f"original format holds the whole tracker), got model_type {config.model_type!r}")
    state_dict = {k: torch.from_numpy(v) for k, v in weights.read_state_dict(folder).items()}
    check_tensors(state_dict, transformers_shapes(config), f"a transformers {variant_name(config)} checkpoint")
    return config, state_dict


def write_transformers(folder: str, config: Sam2VideoConfig | EdgeTamVideoConfig,
                       state_dict: dict[str, torch.Tensor]) -> int:
    """Write config.json + model.safetensors; return the number of tensors written."""
    os.mkdir(folder)
    config.to_json_file(os.path.join(folder, weights.CONFIG_NAME))
    save_file({k: v.contiguous() for k, v in state_dict.items()}, os.path.join(folder, weights.WEIGHTS_NAME),
              metadata={"format": "pt"})
    return len(state_dict)


def write_original(path: str, config: Sam2VideoConfig | EdgeTamVideoConfig, state_dict: dict[str, torch.Tensor]) \
        -> int:
    """Write an original `.pt` ({"model": state_dict}); return the number of tensors written."""
    name = variant_name(config)
    if name not in RELEASED:
        raise ValueError(f"the original format has no config, so only the released variants can be written to it "
                         f"({', '.join(RELEASED)}); got a {name} config")
    original = to_original(state_dict, config)
    torch.save({"model": original}, path)
    return len(original)


def convert(src: str | os.PathLike, dst: str | os.PathLike, to: str = "transformers", overwrite: bool = False,
            check: Callable[[str], str] | None = None) -> Summary:
    """Convert the checkpoint at `src` to format `to` at `dst`. `check(path)`, if given, runs on the written
    result before it moves to `dst` and returns a report, or raises ValueError. If anything fails, `dst` is
    left as it was."""
    start = time.perf_counter()
    if to not in FORMATS:
        raise ValueError(f"to: expected one of {FORMATS}, got {to!r}")
    dst = os.path.normpath(os.fspath(dst))
    _check_destination(dst, overwrite)
    config, state_dict, source_format = read_checkpoint(src)
    writer = write_transformers if to == "transformers" else write_original

    def write(path: str) -> tuple[int, str | None, float]:
        try:
            tensors = writer(path, config, state_dict)
        except ValueError as err:
            raise ValueError(f"{os.fspath(src)}: {err}") from None
        check_start = time.perf_counter()
        report = check(path) if check else None
        return tensors, report, time.perf_counter() - check_start

    tensors, report, check_seconds = _write_atomically(dst, write)
    parameters = sum(math.prod(shape) for key, shape in original_shapes(config).items()
                     if not key.endswith(".num_batches_tracked"))
    return Summary(variant_name(config), source_format, to, tensors, parameters,
                   time.perf_counter() - start - check_seconds, report, check_seconds)


def _check_destination(dst: str, overwrite: bool) -> None:
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(parent):
        raise ValueError(f"{dst}: its folder {parent} does not exist")
    if not os.path.lexists(dst):
        return
    if not overwrite:
        raise ValueError(f"{dst}: already exists; pass --overwrite to replace it")
    if os.path.isdir(dst) and os.listdir(dst) and not os.path.isfile(os.path.join(dst, weights.CONFIG_NAME)):
        raise ValueError(f"{dst}: is a folder that is not a checkpoint (no {weights.CONFIG_NAME}); refusing to "
                         "replace it, even with --overwrite")


def _write_atomically(dst: str, write: Callable[[str], Any]) -> Any:
    """Run `write(path)` on a temporary path beside `dst`, then move the result to `dst` (replacing what was
    there). On any failure the temporary files are removed and `dst` is as it was."""
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.", suffix=".partial",
                               dir=os.path.dirname(os.path.abspath(dst)))
    try:
        new = os.path.join(staging, "new")
        result = write(new)
        old = os.path.join(staging, "old")
        if os.path.lexists(dst):
            os.replace(dst, old)
        try:
            os.replace(new, dst)
        except OSError:
            if os.path.lexists(old):
                os.replace(old, dst)
            raise
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)
