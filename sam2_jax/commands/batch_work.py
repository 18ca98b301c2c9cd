"""The work of `sam2-jax batch` in one process: the manifest's lines (`Item`), a video read with its
checked prompts, its outputs written, the progress line, and `Tracker`, the checkpoint loaded on a mesh of
this process's devices. The same code runs on one machine, in each Ray actor (`ray_runner`) and in each
process of a multi-host run (`multihost`)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import runtime
from ..io.frames import open_video
from ..io.writers import PromptMark
from .options import output_formats
from .outputs import frame_masks, open_output, output_paths, video_name
from .prompts import checked_prompts, prompt_parts


# ---------------------------------------------------------------------------------------- manifest
@dataclasses.dataclass
class Item:
    """One manifest line and what became of it: status pending, done, skipped or failed."""

    where: str  # MANIFEST:LINE
    line: int
    video: str = ""  # as written in the manifest
    path: Path | None = None
    name: str = ""
    parts: list = dataclasses.field(default_factory=list)  # prompt_parts of its prompts
    todo: list = dataclasses.field(default_factory=list)  # the formats to write
    status: str = "pending"
    error: str | None = None
    frames: int = 0
    seconds: float = 0.0
    retries: int = 0  # tries after the first, when a Ray worker died while tracking it

    def fail(self, err: Exception) -> None:
        """Mark the video failed, with `MANIFEST:LINE: why`."""
        self.status, self.error = "failed", f"{self.where}: {err}"

    def report(self) -> dict:
        """The video's line of the summary."""
        keys = (["line", "video", "name", "status", "frames", "seconds"] + (["error"] if self.error else [])
                + (["retries"] if self.retries else []))
        out = {key: getattr(self, key) for key in keys}
        out["seconds"] = round(self.seconds, 3)
        return out

    def update(self, report: dict) -> None:
        """Take the outcome of a report made elsewhere (a Ray actor, another process) of this video."""
        for key in ("status", "error", "frames", "seconds", "retries"):
            setattr(self, key, report.get(key, getattr(self, key)))


def read_manifest(manifest: Path) -> list[Item]:
    """The manifest's lines as Items; a line that is not a valid entry comes back failed, saying why."""
    try:
        text = manifest.read_text()
    except FileNotFoundError:
        raise ValueError(f"manifest: {str(manifest)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"manifest: cannot read {str(manifest)!r} ({err})") from err
    items, names = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        item = Item(f"{manifest}:{number}", number)
        items.append(item)
        try:
            item.video, entries = _parse_line(line)
            item.path = manifest.parent / item.video
            item.name = video_name(str(item.path))
            item.parts = prompt_parts(entries, "prompts", manifest.parent)
            if item.name in names:
                raise ValueError(f"video: the output name {item.name!r} is already that of line {names[item.name]}; "
                                 "outputs are named after the video's file or folder name")
            names[item.name] = number
        except ValueError as err:
            item.fail(err)
    if not items:
        raise ValueError(f"manifest: expected one JSON line per video in {str(manifest)!r}, got none")
    return items


def _parse_line(line: str) -> tuple[str, list]:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err}): {line[:80]}") from None
    if (not isinstance(entry, dict) or set(entry) != {"video", "prompts"} or not isinstance(entry["video"], str)
            or not entry["video"] or not isinstance(entry["prompts"], list) or not entry["prompts"]):
        raise ValueError(f'expected an object {{"video": PATH, "prompts": [...]}} (a path and a non-empty list '
                         f"of prompts), got {line[:80]}")
    return entry["video"], entry["prompts"]


def complete(path: Path) -> bool:
    """An output exists only once complete (the writers rename it into place); an empty folder is none."""
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


# ------------------------------------------------------------------------------------------ videos
class Video(NamedTuple):
    """A video read into memory with its checked prompts: frames (T, H, W, 3) uint8, functional.Prompts
    over its objects in increasing id order, the prompt marks of the overlay and its frame rate."""

    frames: np.ndarray
    prompts: object
    obj_ids: list
    marks: list
    fps: float | None


def load(item: Item, reverse: bool) -> Video:
    """Read the item's video and check its prompts against it (as `track` does)."""
    from ..tracking import functional

    with contextlib.closing(open_video(item.path)) as source:
        frames, fps = np.stack(list(source)), source.fps
    prompts = checked_prompts(item.parts, *frames.shape[:3])
    if reverse and max(p.frame for p in prompts) == 0:
        raise ValueError("--reverse: tracking backward from frame 0 (the last prompted frame) visits no frame")
    by_object: dict[int, list] = {}
    for p in prompts:  # in frame order
        entry = {"frame": p.frame, "mask": p.mask} if p.mask is not None else {
            "frame": p.frame, "points": p.points, "labels": p.labels, "box": p.box}
        by_object.setdefault(p.obj_id, []).append(entry)
    obj_ids = sorted(by_object)
    packed = functional.make_prompts([by_object[i] for i in obj_ids], *frames.shape[1:3])
    functional.check_prompts(packed, frames.shape)
    marks = [PromptMark(p.frame, p.obj_id, p.points, p.labels, p.box) for p in prompts if p.mask is None]
    return Video(frames, packed, obj_ids, marks, fps)


def write(item: Item, video: Video, outputs: dict, paths: dict, processor, args) -> int:
    """Write the item's missing formats from `propagate`'s outputs (the visited frames, in order); returns
    the number of frames written. Each output is complete or absent."""
    visited = np.flatnonzero(outputs["visited"])
    size = video.frames.shape[1:3]
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(open_output(
            f, paths[f], overwrite=args.overwrite,
            **({"fps": video.fps or 24.0, "prompts": video.marks} if f == "overlay" else {}))) for f in item.todo]
        for t in visited:
            masks = frame_masks(processor, outputs["pred_masks"][t], size, args)
            for writer in writers:
                writer.write(int(t), masks, video.obj_ids, frame=video.frames[t])
    return len(visited)


class Progress:
    """`batch: 3/10 videos (1 failed), 240 frames, 31.5 frames/s` on stderr, rewritten in place; a failed
    video's error gets a line of its own."""

    def __init__(self, total: int):
        self.total, self.videos, self.failed, self.frames = total, 0, 0, 0
        self.start, self.width = time.perf_counter(), 0

    def update(self, item: Item) -> None:
        """Count a finished video and redraw the progress line."""
        self.videos += 1
        self.failed += item.status == "failed"
        self.frames += item.frames
        if item.error:
            self._print(f"sam2-jax batch: {item.error}", end="\n")
        rate = self.frames / max(time.perf_counter() - self.start, 1e-9)
        self._print(f"batch: {self.videos}/{self.total} videos" + (f" ({self.failed} failed)" if self.failed else "")
                    + f", {self.frames} frames, {rate:.2f} frames/s", end="")

    def _print(self, text: str, end: str) -> None:
        print("\r" + text.ljust(self.width), end=end, file=sys.stderr, flush=True)
        self.width = 0 if end else len(text)

    def close(self) -> None:
        """End the progress line."""
        print(file=sys.stderr, flush=True)


class Tracker:
    """The checkpoint loaded on a mesh of this process's devices, ready to track groups of videos and write
    their outputs: the work of `batch` in one process, whether the local loop, a Ray actor or one process
    of a multi-host run calls it."""

    def __init__(self, args: argparse.Namespace):
        import jax
        import jax.numpy as jnp

        from ..tracking import sharding
        from ..transformers_api.video_model import Sam2VideoModel
        from ..transformers_api.video_processor import Sam2VideoProcessor

        local = len(jax.local_devices())
        if local % args.object_shards:
            raise ValueError(f"--object-shards: expected a divisor of the {local} devices, got {args.object_shards}")
        self.mesh = sharding.make_mesh(args.object_shards, jax.devices())  # multi-host: every process's devices
        runtime.enable_compile_cache(args.compile_cache)
        model = Sam2VideoModel.from_pretrained(args.model,
                                               dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
        self.params, self.config = sharding.replicate(model.params, self.mesh), model.config
        self.processor = Sam2VideoProcessor(size=self.config.image_size)
        self.args, self.out, self.formats = args, Path(args.out), output_formats(args.format)

    def track(self, group: list[Item]) -> None:
        """Read, track and write one group of videos (their `todo` formats); each outcome is recorded on its
        item (done, or failed saying why). Multi-host, every process calls it at once (a group maybe empty)."""
        from ..tracking import sharding

        args, loaded = self.args, []
        for item in group:
            began = time.perf_counter()
            try:
                loaded.append((item, load(item, args.reverse)))
            except (ValueError, TypeError, OSError) as err:
                item.fail(err)
            item.seconds += time.perf_counter() - began
        if not loaded and not self.mesh.is_multi_process:
            return
        began = time.perf_counter()
        try:
            outputs = sharding.propagate_videos(self.params, self.config, [(v.frames, v.prompts) for _, v in loaded],
                                                self.mesh, reverse=args.reverse, both_directions=args.both_directions)
        except Exception as err:  # noqa: BLE001 (e.g. out of device memory): this group fails, the next ones run
            if self.mesh.is_multi_process:  # unless the processes run it together: then they are out of step
                raise
            for item, _ in loaded:
                item.fail(f"tracking failed: {type(err).__name__}: {err}")
            return
        seconds, total = time.perf_counter() - began, sum(len(v.frames) for _, v in loaded)
        for (item, video), output in zip(loaded, outputs):
            began = time.perf_counter()
            try:
                item.frames = write(item, video, output, output_paths(self.out, item.name, self.formats),
                                    self.processor, args)
                item.status = "done"
            except (ValueError, TypeError, OSError) as err:
                item.fail(err)
            item.seconds += time.perf_counter() - began + seconds * len(video.frames) / total  # its share
