"""The prompts of `track` and `batch`: --point/--box/--mask options and --prompts JSON entries, checked
against the video, then added to a session as transformers is used."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class Prompt:
    """Everything given for one object on one frame, in pixels of the video: points (K, 2) with labels
    (1 positive, 0 negative) and/or a box (x1, y1, x2, y2), or else a bool (H, W) mask. `where` names
    the options or JSON entries it came from, for error messages."""

    frame: int
    obj_id: int
    points: list = dataclasses.field(default_factory=list)
    labels: list = dataclasses.field(default_factory=list)
    box: list | None = None
    mask: np.ndarray | None = None
    where: list = dataclasses.field(default_factory=list)


def parse_numbers(text: str, count: tuple[int, ...], what: str) -> list[float]:
    """'10,20' -> [10.0, 20.0]; `count` the accepted lengths."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count or not all(math.isfinite(v) for v in values):
        raise ValueError(f"expected {what}, got {text!r}")
    return values


class PromptOption(argparse.Action):
    """--point / --box / --mask: record (option, text, frame, obj) with the --frame and --obj in force."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            if option_string == "--point":
                label = parse_numbers(values, (2, 3), "x,y or x,y,label")[2:]
                if label and label[0] not in (0.0, 1.0):
                    raise ValueError(f"the label must be 1 (positive) or 0 (negative), got {values!r}")
            elif option_string == "--box":
                parse_numbers(values, (4,), "x1,y1,x2,y2")
        except ValueError as err:
            raise argparse.ArgumentError(self, str(err)) from None
        items = list(getattr(namespace, self.dest) or [])
        items.append((option_string, values, namespace.frame, namespace.obj))
        setattr(namespace, self.dest, items)


def _read_mask(path: Path, where: str) -> np.ndarray:
    """A mask PNG -> bool (H, W): palette index > 0 for an indexed PNG, any non-black pixel otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ValueError(f"{where}: the mask {str(path)!r} does not exist")
    try:
        with Image.open(path) as image:
            return np.asarray(image) > 0 if image.mode == "P" else np.asarray(image.convert("L")) > 0
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"{where}: {str(path)!r} is not a readable image ({err})") from err


def _json_prompts(path: Path) -> list[tuple]:
    """The entries of a --prompts file -> (kind, value, frame, obj_id, where) parts."""
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--prompts: {str(path)!r} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"--prompts: {str(path)!r} is not valid JSON ({err})") from err
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"--prompts: expected a non-empty JSON list of prompts in {str(path)!r}, got "
                         f"{type(entries).__name__}")
    return prompt_parts(entries, path.name, path.parent)


def prompt_parts(entries: list, name: str, folder: Path) -> list[tuple]:
    """Parsed --prompts entries -> (kind, value, frame, obj_id, where) parts, `where` naming `name[i]`;
    mask paths are relative to `folder`. Shared by `track --prompts` and the lines of a `batch` manifest."""
    keys = {"frame", "obj_id", "points", "labels", "box", "mask"}
    parts = []
    for i, entry in enumerate(entries):
        where = f"{name}[{i}]"

        def is_int(value, low, high=None):
            return isinstance(value, int) and not isinstance(value, bool) and low <= value <= (high or value)

        def coords(value, n):
            return (isinstance(value, list) and len(value) == n and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))

        if not isinstance(entry, dict) or "obj_id" not in entry or not keys.issuperset(entry):
            raise ValueError(f"{where}: expected an object with obj_id and some of frame, points, labels, box, "
                             f"mask, got {json.dumps(entry)[:80]}")
        frame, obj_id = entry.get("frame", 0), entry["obj_id"]
        if not is_int(frame, 0):
            raise ValueError(f"{where}: frame: expected a frame index >= 0, got {frame!r}")
        if not is_int(obj_id, 1, 254):
            raise ValueError(f"{where}: obj_id: expected an int in 1..254, got {obj_id!r}")
        points, labels = entry.get("points"), entry.get("labels")
        if points is not None and (not isinstance(points, list) or not points
                                   or not all(coords(p, 2) for p in points)):
            raise ValueError(f"{where}: points: expected a list of [x, y], got {json.dumps(points)[:80]}")
        if labels is not None and (points is None or not isinstance(labels, list) or len(labels) != len(points)
                                   or any(label not in (0, 1) or isinstance(label, bool) for label in labels)):
            raise ValueError(f"{where}: labels: expected one label, 1 or 0, per point, got {labels!r}")
        if "box" in entry and not coords(entry["box"], 4):
            raise ValueError(f"{where}: box: expected [x1, y1, x2, y2], got {entry['box']!r}")
        if "mask" in entry and not isinstance(entry["mask"], str):
            raise ValueError(f"{where}: mask: expected the path of a PNG, got {entry['mask']!r}")
        if points is None and "box" not in entry and "mask" not in entry:
            raise ValueError(f"{where}: expected points, a box or a mask")
        for k, point in enumerate(points or []):
            parts.append(("point", [*point, labels[k] if labels else 1], frame, obj_id, where))
        if "box" in entry:
            parts.append(("box", entry["box"], frame, obj_id, where))
        if "mask" in entry:
            parts.append(("mask", folder / entry["mask"], frame, obj_id, where))
    return parts


def collect_prompts(args, num_frames: int, height: int, width: int) -> list[Prompt]:
    """The prompt options and the --prompts file -> one Prompt per (frame, object), checked against the
    video: frames inside it, points and boxes inside the frame, masks of its size, and no object given
    two boxes, two masks, or a mask beside points or a box on one frame."""
    parts = []
    for option, text, frame, obj_id in args.prompt_options or []:
        kind = option[2:]
        where = f"{option} {text} (frame {frame}, object {obj_id})"
        value = Path(text) if kind == "mask" else parse_numbers(text, (2, 3, 4), "numbers")
        parts.append((kind, value, frame, obj_id, where))
    if args.prompts:
        parts += _json_prompts(Path(args.prompts))
    if not parts:
        raise ValueError("no prompts: give --point, --box or --mask (after --frame F --obj ID), or --prompts "
                         "FILE.json")
    return checked_prompts(parts, num_frames, height, width)


def checked_prompts(parts: list[tuple], num_frames: int, height: int, width: int) -> list[Prompt]:
    """(kind, value, frame, obj_id, where) parts -> one Prompt per (frame, object), in frame order, checked
    against the video as `collect_prompts` says."""
    prompts: dict[tuple[int, int], Prompt] = {}
    for kind, value, frame, obj_id, where in parts:
        if frame >= num_frames:
            raise ValueError(f"{where}: frame {frame} is past the end of the video ({num_frames} frames: 0 to "
                             f"{num_frames - 1})")
        prompt = prompts.setdefault((frame, obj_id), Prompt(frame, obj_id))
        clash = {"point": prompt.mask is not None, "box": prompt.box is not None or prompt.mask is not None,
                 "mask": prompt.mask is not None or prompt.box is not None or bool(prompt.points)}[kind]
        if clash:
            raise ValueError(f"object {obj_id} is given twice inconsistently on frame {frame}: {where} and "
                             f"{prompt.where[0]} (one box or one mask per object and frame; a mask goes alone)")
        prompt.where.append(where)
        if kind == "mask":
            prompt.mask = _read_mask(value, where)
            if prompt.mask.shape != (height, width):
                raise ValueError(f"{where}: the mask is {prompt.mask.shape[1]}x{prompt.mask.shape[0]}, the video "
                                 f"{width}x{height} (W x H)")
            if not prompt.mask.any():
                raise ValueError(f"{where}: the mask is empty")
            continue
        coords = value if kind == "box" else value[:2]
        xs, ys = coords[0::2], coords[1::2]
        if not all(0 <= x <= width for x in xs) or not all(0 <= y <= height for y in ys):
            raise ValueError(f"{where}: expected x in [0, {width}] and y in [0, {height}] (inside the frame)")
        if kind == "box":
            if value[2] < value[0] or value[3] < value[1]:
                raise ValueError(f"{where}: expected x1 <= x2 and y1 <= y2")
            prompt.box = value
        else:
            prompt.points.append(value[:2])
            prompt.labels.append(int(value[2]) if len(value) == 3 else 1)
    return sorted(prompts.values(), key=lambda p: p.frame)


def apply_prompts(model, processor, session, prompts: list[Prompt]) -> None:
    """Add the prompts to the session and segment each prompted frame, as transformers is used: add inputs,
    then `model(inference_session, frame_idx)`. Objects prompted alike on one frame (same kind, same number
    of points) share one call: the same masks as one call each, with one compilation."""
    groups: dict[tuple, list[Prompt]] = {}
    for p in prompts:  # sorted by frame, so the groups are too
        groups.setdefault((p.frame, p.mask is not None, len(p.points), p.box is not None), []).append(p)
    for (frame, is_mask, num_points, has_box), group in groups.items():
        ids = [p.obj_id for p in group]
        if is_mask:
            processor.add_inputs_to_inference_session(session, frame, ids, input_masks=[p.mask for p in group])
        else:
            processor.add_inputs_to_inference_session(
                session, frame, ids,
                input_points=[[p.points for p in group]] if num_points else None,
                input_labels=[[p.labels for p in group]] if num_points else None,
                input_boxes=[[p.box for p in group]] if has_box else None)
        model(inference_session=session, frame_idx=frame)


# ---------------------------------------------------------------------------------------------
# track
# ---------------------------------------------------------------------------------------------
