"""`sam2-jax batch`: track every video of a manifest on all local devices, resumably.

A manifest is JSON lines, one video per line: {"video": PATH, "prompts": [...]}, the prompts exactly as
`track --prompts` takes them; paths are relative to the manifest's folder. Videos are read a group at a
time (`--group-size`, so that host memory stays bounded), tracked together by `sharding.propagate_videos`
(a mesh over every device, one compilation per shape bucket) and written in `track`'s formats and layout.

Outputs appear only once complete (the writers build them under a temporary name and rename them), so a
rerun skips the videos whose outputs all exist and writes only the missing formats of the others; it also
removes the temporary outputs of a run that was killed outright (`outputs.open_output`). Ctrl-C stops the
run, keeping the videos already done (exit status 130, no summary). A video that cannot be read, tracked
or written is reported (`MANIFEST:LINE: why`) and skipped, with nothing written for it; the others go
on. The summary (`OUT/batch_summary.json`, also printed) lists each video as done, skipped or failed.
The exit status is 1 when any video failed (or before any work, on a missing manifest, an unwritable
--out or a bad option), else 0.

The work of one process, `Tracker` (the checkpoint loaded on the mesh; `track(group)` reads, tracks and
writes a group of videos), is the same on one machine, in each Ray actor and in each process of a
multi-host run (`ray_runner`: --ray; `multihost`: --coordinator; multi-host, the mesh spans every process's
devices and every process calls `track` for each round of groups, with its own group or an empty one).
"""


import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

from . import multihost, ray_runner
from .batch_work import Item, Progress, Tracker, complete, read_manifest
from .options import add_output_arguments, model_config, output_formats, positive
from .outputs import lock_partial, output_paths, remove_stale_partials
from .stopping import Terminated
from .. import runtime

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
    g.add_argument("--object-shards", type=positive, default=1, metavar="N",
                   help="devices that share one video's objects (the mesh's objects axis; default: 1)")
    g.add_argument("--group-size", type=positive, metavar="N",
                   help="videos read and tracked together (default: 4 per device on the videos axis; "
                        "1 with --ray)")
    g.add_argument("--compile-cache", metavar="DIR", default=str(runtime.DEFAULT_COMPILE_CACHE),
                   help="as for track (default: %(default)s)")
    add_output_arguments(p.add_argument_group("masks and outputs (as for track)"),
                             "redo the videos whose outputs exist")
    multihost.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Check the manifest, --out and the options, then track group by group (here, on a Ray cluster or as
    one process of a multi-host run); returns the exit status."""
    began = time.perf_counter()
    manifest, out = Path(args.manifest), Path(args.out)
    items = read_manifest(manifest)
    _check_writable(out)
    formats = output_formats(args.format)
    model_config(args.model)  # a clear error for a bad --model before the devices start
    multihost.check_arguments(args)
    for item in items:
        if item.status == "pending":
            paths = output_paths(out, item.name, formats)
            item.todo = [f for f in formats if args.overwrite or not complete(paths[f])]
            item.status = "pending" if item.todo else "skipped"
    if args.ray:
        where, first = ray_runner.run_on_ray(args, items), True
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
    index, count = multihost.initialize(args) if args.coordinator is not None else (0, 1)
    from ..tracking import sharding

    share = items[index::count]
    with contextlib.ExitStack() as multi_host:
        if count > 1:
            multi_host.enter_context(multihost.stdout_to_stderr())
        tracker = Tracker(args)  # a bad option stops every process alike, with the usual one line
        if count > 1:
            multi_host.enter_context(multihost.stop_all_if_one_fails(index, share))
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
                if count > 1 and multihost.preempted(step):
                    raise Terminated  # on every process at this step: "terminated", status 143
                tracker.track(group)
                for item in group:
                    progress.update(item)
        where = {"devices": [str(d) for d in tracker.mesh.devices.flat], "mesh": dict(tracker.mesh.shape)}
        if count > 1:
            multihost.gather(items, share)
            where["processes"] = count
    return where, index == 0


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
    writers name theirs, so that a killed run's is removed by the next one: `remove_stale_partials`),
    then a rename."""
    remove_stale_partials(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{path.suffix}", dir=path.parent)
    lock = None
    try:
        with os.fdopen(fd, "w") as f:
            lock = lock_partial(Path(tmp))
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)
