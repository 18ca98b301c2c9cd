"""`sam2-jax batch`: track every video of a manifest on all local devices, resumably.

A manifest is JSON lines, one video per line: {"video": PATH, "prompts": [...]}, the prompts exactly as
`track --prompts` takes them; paths are relative to the manifest's folder. Videos are read a group at a
time (`--group-size`, so that host memory stays bounded), tracked together by `sharding.propagate_videos`
(a mesh over every device, one compilation per shape bucket) and written in `track`'s formats and layout.

Outputs appear only once complete (the writers build them under a temporary name and rename them), so a
rerun skips the videos whose outputs all exist and writes only the missing formats of the others; it also
removes the temporary outputs of a run that was killed outright (`cli.open_output`). Ctrl-C stops the
run, keeping the videos already done (exit status 130, no summary). A video that cannot be read, tracked
or written is reported (`MANIFEST:LINE: why`) and skipped, with nothing written for it; the others go
on. The summary (`OUT/batch_summary.json`, also printed) lists each video as done, skipped or failed.
The exit status is 1 when any video failed (or before any work, on a missing manifest, an unwritable
--out or a bad option), else 0.

The work of one process, `Tracker` (the checkpoint loaded on the mesh; `track(group)` reads, tracks and
writes a group of videos), is the same on one machine, in each Ray actor and in each process of a
multi-host run (`sam2_jax.distributed`: --ray, --coordinator; multi-host, the mesh spans every process's
devices and every process calls `track` for each round of groups, with its own group or an empty one).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import cli, distributed
from .video import PromptMark, open_video

SUMMARY = "batch_summary.json"

EPILOG = """\
manifest (JSON lines, one video per line; blank lines are ignored):
  {"video": "clips/cat.mp4", "prompts": [{"frame": 0, "obj_id": 1, "points": [[410, 230]], "labels": [1]}]}
  {"video": "frames/dog", "prompts": [{"obj_id": 1, "box": [90, 40, 200, 180]},
                                      {"frame": 3, "obj_id": 2, "mask": "dog_2.png"}]}
  (one line each) The prompts are entries as `sam2-jax track --prompts` takes them (see `sam2-jax track
  --help`). Video and mask paths are relative to the manifest's folder. Output names come from the video
  names, as for track, so two videos of one name are an error.

tracking:
  From the first prompted frame to the end; --reverse: from the last prompted frame back to frame 0 (as
  `track --reverse --start-frame LAST`); --both-directions: forward from the first prompted frame, then
  backward from it. Videos of one shape bucket (frames rounded up to 16, size, objects, prompts) share one
  compiled program; B of them run at once, B the devices on the mesh's videos axis.

outputs (under --out, as for track): davis/NAME/, sav/NAME/, coco/NAME.json, overlay/NAME.mp4, and
  batch_summary.json. A rerun skips the videos whose outputs all exist (--overwrite redoes them).
  Exit status: 1 when any video failed, else 0.

many machines:
  --ray auto|HOST:PORT: the manifest's groups (--group-size, default 1) go to a pool of Ray actors, one per
  GPU (else --actors N, default one per machine), each loading the checkpoint and compiling once; a group
  whose actor dies is tried again on a restarted one (--max-retries), and the summary gives each video's
  retries. --coordinator HOST:PORT --num-processes N --process-id I (or $JAX_COORDINATOR_ADDRESS,
  $JAX_NUM_PROCESSES, $JAX_PROCESS_ID): N processes joined by jax.distributed on one mesh of all their
  devices, process I reading manifest items I, I+N, ..., tracking them on its own devices in batches run
  together, and writing them; process 0 writes the summary of all.
"""


# ---------------------------------------------------------------------------------------- manifest
@dataclasses.dataclass
class Item:
    """One manifest line and what became of it: status pending, done, skipped or failed."""

    where: str  # MANIFEST:LINE
    line: int
    video: str = ""  # as written in the manifest
    path: Path | None = None
    name: str = ""
    parts: list = dataclasses.field(default_factory=list)  # cli.prompt_parts of its prompts
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
            item.name = cli._video_name(str(item.path))
            item.parts = cli.prompt_parts(entries, "prompts", manifest.parent)
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


def _complete(path: Path) -> bool:
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
    from . import functional

    with contextlib.closing(open_video(item.path)) as source:
        frames, fps = np.stack(list(source)), source.fps
    prompts = cli.checked_prompts(item.parts, *frames.shape[:3])
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
        writers = [stack.enter_context(cli.open_output(
            f, paths[f], overwrite=args.overwrite,
            **({"fps": video.fps or 24.0, "prompts": video.marks} if f == "overlay" else {}))) for f in item.todo]
        for t in visited:
            masks = cli._masks(processor, outputs["pred_masks"][t], size, args)
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


# --------------------------------------------------------------------------------------- the command
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `sam2-jax batch`."""
    p.description = ("Track the videos of a manifest on every local device, writing track's outputs;\n"
                     "a rerun skips the videos already done.")
    p.epilog, p.formatter_class = EPILOG, argparse.RawDescriptionHelpFormatter
    p.add_argument("manifest", metavar="MANIFEST.jsonl", help="one JSON line per video (schema below)")
    p.add_argument("--model", required=True, metavar="DIR", help="a video checkpoint folder (config.json and "
                                                                 "model.safetensors) or sam2-jax-shapes")
    g = p.add_argument_group("tracking")
    direction = g.add_mutually_exclusive_group()
    direction.add_argument("--reverse", action="store_true",
                           help="track backward from the last prompted frame to frame 0")
    direction.add_argument("--both-directions", action="store_true",
                           help="track forward from the first prompted frame, then backward from it")
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute precision (default: %(default)s)")
    g.add_argument("--object-shards", type=cli._positive, default=1, metavar="N",
                   help="devices that share one video's objects (the mesh's objects axis; default: 1)")
    g.add_argument("--group-size", type=cli._positive, metavar="N",
                   help="videos read and tracked together (default: 4 per device on the videos axis; "
                        "1 with --ray)")
    g.add_argument("--compile-cache", metavar="DIR", default=str(cli.DEFAULT_COMPILE_CACHE),
                   help="as for track (default: %(default)s)")
    cli.add_output_arguments(p.add_argument_group("masks and outputs (as for track)"),
                             "redo the videos whose outputs exist")
    distributed.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Check the manifest, --out and the options, then track group by group (here, on a Ray cluster or as
    one process of a multi-host run); returns the exit status."""
    began = time.perf_counter()
    manifest, out = Path(args.manifest), Path(args.out)
    items = read_manifest(manifest)
    _check_writable(out)
    formats = cli._formats(args.format)
    cli._model_config(args.model)  # a clear error for a bad --model before the devices start
    distributed.check_arguments(args)
    for item in items:
        if item.status == "pending":
            paths = cli.output_paths(out, item.name, formats)
            item.todo = [f for f in formats if args.overwrite or not _complete(paths[f])]
            item.status = "pending" if item.todo else "skipped"
    if args.ray:
        where, first = distributed.run_on_ray(args, items), True
    else:
        where, first = _run_here(args, items)
    summary = _summary(items, time.perf_counter() - began, args, formats, where)
    text = json.dumps(summary, indent=1)
    if first:
        _write_atomically(out / SUMMARY, text + "\n")
    print(text)
    return 1 if summary["totals"]["failed"] else 0


def _run_here(args, items: list[Item]) -> tuple[dict, bool]:
    """Track this process's share of the items on its devices: all of them, or with --coordinator every
    N-th (item i goes to process i % N), the others' outcomes gathered afterwards. Returns the summary's
    description of where it ran, and whether this is the first (or only) process."""
    index, count = distributed.initialize(args) if args.coordinator is not None else (0, 1)
    from . import sharding

    share = items[index::count]
    with contextlib.ExitStack() as multi_host:
        if count > 1:
            multi_host.enter_context(distributed.stdout_to_stderr())
        tracker = Tracker(args)  # a bad option stops every process alike, with the usual one line
        if count > 1:
            multi_host.enter_context(distributed.stop_all_if_one_fails(index, share))
        pending = [item for item in share if item.status == "pending"]
        group_size = args.group_size or 4 * sharding.local_batch(tracker.mesh)
        groups = [pending[start:start + group_size] for start in range(0, len(pending), group_size)]
        if count > 1:  # every process takes part in every group's batches, with its own videos or none
            groups += [[]] * (max(sharding.process_allgather_json(len(groups))) - len(groups))
        progress = Progress(len(share))
        for item in share:
            if item.status != "pending":
                progress.update(item)
        with contextlib.closing(progress):
            for step, group in enumerate(groups):
                if count > 1 and distributed.preempted(step):
                    raise cli.Terminated  # on every process at this step: "terminated", status 143
                tracker.track(group)
                for item in group:
                    progress.update(item)
        where = {"devices": [str(d) for d in tracker.mesh.devices.flat], "mesh": dict(tracker.mesh.shape)}
        if count > 1:
            distributed.gather(items, share)
            where["processes"] = count
    return where, index == 0


class Tracker:
    """The checkpoint loaded on a mesh of this process's devices, ready to track groups of videos and write
    their outputs: the work of `batch` in one process, whether the local loop, a Ray actor or one process
    of a multi-host run calls it."""

    def __init__(self, args: argparse.Namespace):
        import jax
        import jax.numpy as jnp

        from . import sharding
        from .video_api import Sam2VideoModel, Sam2VideoProcessor

        local = len(jax.local_devices())
        if local % args.object_shards:
            raise ValueError(f"--object-shards: expected a divisor of the {local} devices, got {args.object_shards}")
        self.mesh = sharding.make_mesh(args.object_shards, jax.devices())  # multi-host: every process's devices
        cli.enable_compile_cache(args.compile_cache)
        model = Sam2VideoModel.from_pretrained(args.model,
                                               dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
        self.params, self.config = sharding.replicate(model.params, self.mesh), model.config
        self.processor = Sam2VideoProcessor(size=self.config.image_size)
        self.args, self.out, self.formats = args, Path(args.out), cli._formats(args.format)

    def track(self, group: list[Item]) -> None:
        """Read, track and write one group of videos (their `todo` formats); each outcome is recorded on its
        item (done, or failed saying why). Multi-host, every process calls it at once (a group maybe empty)."""
        from . import sharding

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
                item.frames = write(item, video, output, cli.output_paths(self.out, item.name, self.formats),
                                    self.processor, args)
                item.status = "done"
            except (ValueError, TypeError, OSError) as err:
                item.fail(err)
            item.seconds += time.perf_counter() - began + seconds * len(video.frames) / total  # its share


def _summary(items: list[Item], seconds: float, args, formats, where: dict) -> dict:
    counts = {status: sum(item.status == status for item in items) for status in ("done", "skipped", "failed")}
    frames = sum(item.frames for item in items)
    return {"manifest": str(args.manifest), "model": str(args.model), "out": str(args.out), "formats": formats,
            **where, "videos": [item.report() for item in items],
            "totals": {"videos": len(items), **counts, "frames": frames, "seconds": round(seconds, 3),
                       "frames_per_second": round(frames / seconds, 3)}}


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(f"--out: cannot write to {str(out)!r} ({err})") from None


def _write_atomically(path: Path, text: str) -> None:
    """Write `path` whole or not at all: a temporary file beside it (locked while written, named as the
    writers name theirs, so that a killed run's is removed by the next one: `cli.remove_stale_partials`),
    then a rename."""
    cli.remove_stale_partials(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{path.suffix}", dir=path.parent)
    lock = None
    try:
        with os.fdopen(fd, "w") as f:
            lock = cli.lock_partial(Path(tmp))
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)
