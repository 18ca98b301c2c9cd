"""`sam2-jax batch --ray`: the manifest's groups on a Ray cluster, on Ray Data's actor pool.

The driver reads and checks the manifest as `batch` does, then Ray Data maps the pending lines in groups
(`--group-size`, default 1) over a pool of actors (`RayWorker`): each loads the checkpoint and compiles once
(`batch_work.Tracker`, the single-machine code), then reads, tracks and writes each group into the shared
`--out`. A group whose actor dies (a crash, the OOM killer, a lost machine) is tried again on a restarted
actor, up to `--max-retries` times; a video that fails with an error (unreadable, bad prompts) is reported
failed at once, since trying again would fail the same way. Ray is imported only when asked for.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import warnings
from pathlib import Path

import numpy as np

from .batch_work import Progress, Tracker, read_manifest
from .multihost import wait_reachable


def run_on_ray(args: argparse.Namespace, items: list) -> dict:
    """Track the pending items on the Ray cluster `args.ray`, setting each one's outcome (and its retries);
    returns the summary's description of where it ran."""
    ray = _import_ray()
    with contextlib.redirect_stdout(sys.stderr):  # Ray prints the cluster's messages (a task retried...) on
        connected = _connect(args.ray)             # stdout, the summary's: they go to stderr
        try:
            return _run_on_ray(ray, args, items)
        finally:
            if connected:
                ray.shutdown()


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ValueError("--ray: Ray is not installed (pip install 'sam2-jax[ray]')") from None
    return ray


def _connect(address: str) -> bool:
    """Connect to the cluster at `address` (HOST:PORT is checked first, with a short timeout); False when
    this process is connected already (ray.init called by a program that uses `batch`)."""
    import ray

    if address != "auto":
        wait_reachable(address, "--ray", 5.0)
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError as err:
        raise ValueError(f"--ray: cannot connect to {address!r} ({str(err).splitlines()[0]})") from None
    return True


def _run_on_ray(ray, args: argparse.Namespace, items: list) -> dict:
    args = _absolute(args)  # the actors' working folders are not this one
    gpus = int(ray.cluster_resources().get("GPU", 0))
    machines = sum(node["Alive"] for node in ray.nodes())
    pending = [item for item in items if item.status == "pending"]
    group_size = args.group_size or 1
    groups = -(-len(pending) // group_size)
    actors = min(args.actors or gpus or machines, max(groups, 1))
    where = {"ray": {"address": args.ray, "actors": actors, "per_actor": {"GPU": 1} if gpus else {"CPU": 1},
                     "max_retries": args.max_retries}}
    progress = Progress(len(items))
    for item in items:
        if item.status != "pending":
            progress.update(item)
    if not pending:
        progress.close()
        return where
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.max_errored_blocks = -1  # a group that fails on every try is reported; the others go on
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    attempts = ray.remote(num_cpus=0)(Attempts).remote()
    lines = ray.data.from_items([{"line": item.line, "todo": ",".join(item.todo)} for item in pending],
                                override_num_blocks=groups)
    # One group in flight per actor: an actor's death costs a try to that group only, none queued behind it.
    with warnings.catch_warnings():  # Ray 2.60 names no parameter for the actors' restarts; kwargs still work
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
        results = lines.map_batches(
            RayWorker, fn_constructor_kwargs={"args": args, "attempts": attempts}, batch_size=group_size,
            compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
            max_restarts=args.max_retries, max_task_retries=args.max_retries, scheduling_strategy="SPREAD",
            **({"num_gpus": 1} if gpus else {"num_cpus": 1}))
    by_line = {item.line: item for item in pending}
    try:
        for row in results.iter_rows():
            item = by_line[int(row["line"])]
            item.update({"status": str(row["status"]), "error": str(row["error"]) or None,
                         "frames": int(row["frames"]), "seconds": float(row["seconds"])})
            progress.update(item)
        tries = ray.get(attempts.tries.remote())
    except ray.exceptions.RayError as err:
        raise ValueError(f"--ray: the run failed ({str(err).splitlines()[0]})") from None
    for item in pending:
        item.retries = max(tries.get(item.line, 1) - 1, 0)
        if item.status == "pending":
            item.fail(f"its actor died {args.max_retries + 1} times (--max-retries {args.max_retries})")
            progress.update(item)
    progress.close()
    return where


def _absolute(args: argparse.Namespace) -> argparse.Namespace:
    args = argparse.Namespace(**vars(args))
    args.manifest, args.out = str(Path(args.manifest).resolve()), str(Path(args.out).resolve())
    if Path(args.model).exists():
        args.model = str(Path(args.model).resolve())
    if args.compile_cache != "off":
        args.compile_cache = str(Path(args.compile_cache).expanduser().resolve())
    return args


class Attempts:
    """A Ray actor that counts the tries of each manifest line: a line tried twice was retried."""

    def __init__(self):
        self.counts: dict[int, int] = {}

    def record(self, lines: list[int]) -> None:
        """Count one more try of these lines."""
        for line in lines:
            self.counts[line] = self.counts.get(line, 0) + 1

    def tries(self) -> dict[int, int]:
        """The tries of every line so far."""
        return self.counts


class RayWorker:
    """A Ray Data actor: the checkpoint loaded and compiled once (`batch_work.Tracker`, as `batch` uses on one
    machine), then one group of manifest lines per call, each read, tracked and written into --out."""

    def __init__(self, args: argparse.Namespace, attempts):
            # The driver chose what to write (--overwrite or not); what is there already was written by an
        # earlier try of this run, whose actor died: it is replaced.
        self.tracker = Tracker(argparse.Namespace(**{**vars(args), "overwrite": True}))
        self.items = {item.line: item for item in read_manifest(Path(args.manifest))}
        self.attempts = attempts

    def __call__(self, rows: dict) -> dict:
        """Track the lines of `rows` ({"line": [...], "todo": ["davis,coco", ...]}, the formats to write):
        their outcomes, one row per line."""
        import ray

        lines = [int(line) for line in rows["line"]]
        ray.get(self.attempts.record.remote(lines))
        group = [dataclasses.replace(self.items[line], todo=str(todo).split(",")) for line, todo in
                 zip(lines, rows["todo"])]  # fresh copies: a retry starts anew
        self.tracker.track(group)
        return {"line": np.asarray(lines), "status": np.asarray([item.status for item in group]),
                "error": np.asarray([item.error or "" for item in group]),
                "frames": np.asarray([item.frames for item in group]),
                "seconds": np.asarray([item.seconds for item in group])}
