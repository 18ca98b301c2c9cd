"""`sam2-jax batch` beyond one machine, on existing engines: a Ray cluster (`--ray`) or one JAX program over
several hosts (`--coordinator`). Ray and `jax.distributed` are imported only when asked for.

Ray: the driver reads and checks the manifest as `batch` does, then Ray Data maps the pending lines in
groups (`--group-size`, default 1) over a pool of actors (`RayWorker`): each loads the checkpoint and
compiles once (`batch.Tracker`, the single-machine code), then reads, tracks and writes each group into the
shared `--out`. A group whose actor dies (a crash, the OOM killer, a lost machine) is tried again on a
restarted actor, up to `--max-retries` times; a video that fails with an error (unreadable, bad prompts) is
reported failed at once, since trying again would fail the same way.

Multi-host JAX: every process runs the same command with its `--process-id`; `jax.distributed` joins them
(one coordinator, every process's devices in `jax.devices()`) and the mesh spans all their devices.
Process I reads manifest items I, I+N, ...; the processes run each batch together, each video on its own
process's devices (`sharding.propagate_videos`), and each process writes its own videos. The outcomes are
gathered (a collective over every process's devices) so that each prints the whole summary and process 0
writes it. When one process dies or fails, the others stop at their next collective with one line each
(`stop_all_if_one_fails`), and a rerun finishes the work.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import socket
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import cli


_non_negative = cli._int_type(lambda v: v >= 0, "an int >= 0")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `sam2-jax batch` that take it beyond one machine."""
    g = p.add_argument_group("many machines (the README's 'Many videos, many machines')")
    g.add_argument("--ray", metavar="ADDRESS",
                   help="run on a Ray cluster: 'auto' (the one this machine is part of, or $RAY_ADDRESS) or "
                        "HOST:PORT of its head; --out must be a folder every machine shares (the ray extra)")
    g.add_argument("--actors", type=cli._positive, metavar="N",
                   help="with --ray: tracking actors (default: one per GPU of the cluster, else one per machine)")
    g.add_argument("--max-retries", type=_non_negative, default=3, metavar="N",
                   help="with --ray: try a group again on a new actor when its actor died, up to N times "
                        "(default: %(default)s)")
    g.add_argument("--coordinator", metavar="HOST:PORT", default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
                   help="multi-host JAX: process 0's address and a free port (default: $JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=cli._positive, metavar="N", default=os.environ.get("JAX_NUM_PROCESSES"),
                   help="multi-host JAX: how many processes (default: $JAX_NUM_PROCESSES)")
    g.add_argument("--process-id", type=_non_negative, metavar="I", default=os.environ.get("JAX_PROCESS_ID"),
                   help="multi-host JAX: this one, 0..N-1 (default: $JAX_PROCESS_ID)")
    g.add_argument("--coordinator-timeout", type=cli._positive, default=120, metavar="S",
                   help="multi-host JAX: seconds to wait for the coordinator and the other processes "
                        "(default: %(default)s)")


def check_arguments(args: argparse.Namespace) -> None:
    """The distribution options agree with one another (a ValueError saying why, else nothing)."""
    multi_host = (args.coordinator, args.num_processes, args.process_id)
    if args.ray and any(x is not None for x in multi_host):
        raise ValueError("--ray: runs on a Ray cluster; --coordinator, --num-processes and --process-id are for "
                         "multi-host JAX: choose one")
    if args.actors and not args.ray:
        raise ValueError("--actors: only with --ray")
    if any(x is not None for x in multi_host) and None in multi_host:
        raise ValueError("--coordinator, --num-processes and --process-id: give all three (or set "
                         "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID)")
    if args.process_id is not None and args.process_id >= args.num_processes:
        raise ValueError(f"--process-id: expected 0..{args.num_processes - 1}, got {args.process_id}")


def _host_port(address: str, option: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{option}: expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)


def _wait_reachable(address: str, option: str, seconds: float) -> None:
    """Return once something listens at HOST:PORT, retrying for `seconds`; else a ValueError."""
    host, port = _host_port(address, option)
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host, port), timeout=max(min(seconds, 5.0), 0.1)).close()
            return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ValueError(f"{option}: cannot reach {address} within {seconds:g} s "
                                 f"({err.strerror or err})") from None
            time.sleep(0.2)


# ------------------------------------------------------------------------------------- multi-host JAX
def initialize(args: argparse.Namespace) -> tuple[int, int]:
    """Join the multi-host run (`jax.distributed.initialize`, before any other JAX call): (this process's
    index, the number of processes). Process 0 runs the coordinator; the others wait for it."""
    host, port = _host_port(args.coordinator, "--coordinator")
    if args.process_id == 0:
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                probe.bind((host, port))
        except OSError as err:
            raise ValueError(f"--coordinator: process 0 runs the coordinator but cannot listen on "
                             f"{args.coordinator} ({err.strerror or err})") from None
    else:
        _wait_reachable(args.coordinator, "--coordinator", args.coordinator_timeout)
    import jax

    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                               initialization_timeout=args.coordinator_timeout)
    return jax.process_index(), jax.process_count()


def gather(items: list, share: list) -> None:
    """Give every process the outcome of every item: each process's reports of its `share` are gathered
    over all processes' devices and set on `items`."""
    from .sharding import process_allgather_json

    by_line = {item.line: item for item in items}
    for reports in process_allgather_json([item.report() for item in share]):
        for report in reports:
            by_line[report["line"]].update(report)


def preempted(step: int) -> bool:
    """Whether every process of the multi-host run has reached `step`, the one at which they all stop after one
    of them got SIGTERM. jax.distributed takes SIGTERM over (its preemption sync: a notice to every process,
    then a common step), so each process asks here before each round of groups, the same rounds on all."""
    from jax.experimental import multihost_utils

    return multihost_utils.reached_preemption_sync_point(step)


@contextlib.contextmanager
def stop_all_if_one_fails(index: int, share: list):
    """Around a process's part of a multi-host run: an error in it (a collective whose peer process was
    killed or lost its connection, or this process's own failure in a batch that all run together) leaves
    the processes out of step, so this one stops at once, with one line and exit status 1, and the others
    stop the same way at their next collective. It exits with `os._exit`: jax.distributed's shutdown would
    wait for the lost process, then abort with a stack trace once its heartbeat times out (100 s). Its
    finished videos are written; a rerun of the same command finishes the rest. Ctrl-C stops this process
    alike (status 130); SIGTERM stops them all together at a common step (`preempted`)."""
    try:
        yield
    except KeyboardInterrupt as err:
        if isinstance(err, cli.Terminated):  # raised at the common step: every process leaves the same way
            raise
        line, status = cli.stopped("batch", err)
        print(line, file=sys.stderr)
        sys.stderr.flush()
        os._exit(status)
    except Exception as err:  # noqa: BLE001 (whatever broke the run, the others cannot go on with this one)
        done = sum(item.status == "done" for item in share)
        message = str(err).strip().splitlines()
        why = f"{type(err).__name__}: {message[0] if message else ''}"[:300]
        print(f"sam2-jax batch: error: the multi-host run broke down ({why}): a process stopped, lost its "
              f"connection or failed. Process {index} stops with {done} of its {len(share)} videos done; run "
              f"the same command on every host again to finish the rest", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


@contextlib.contextmanager
def stdout_to_stderr():
    """What is written to the file descriptor of stdout (by C++ too: Gloo, the CPU collectives, says there
    that it connected) goes to stderr meanwhile, so that stdout stays the summary's."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


# ------------------------------------------------------------------------------------------------ Ray
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
        _wait_reachable(address, "--ray", 5.0)
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError as err:
        raise ValueError(f"--ray: cannot connect to {address!r} ({str(err).splitlines()[0]})") from None
    return True


def _run_on_ray(ray, args: argparse.Namespace, items: list) -> dict:
    from . import batch

    args = _absolute(args)  # the actors' working folders are not this one
    gpus = int(ray.cluster_resources().get("GPU", 0))
    machines = sum(node["Alive"] for node in ray.nodes())
    pending = [item for item in items if item.status == "pending"]
    group_size = args.group_size or 1
    groups = -(-len(pending) // group_size)
    actors = min(args.actors or gpus or machines, max(groups, 1))
    where = {"ray": {"address": args.ray, "actors": actors, "per_actor": {"GPU": 1} if gpus else {"CPU": 1},
                     "max_retries": args.max_retries}}
    progress = batch.Progress(len(items))
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
    """A Ray Data actor: the checkpoint loaded and compiled once (`batch.Tracker`, as `batch` uses on one
    machine), then one group of manifest lines per call, each read, tracked and written into --out."""

    def __init__(self, args: argparse.Namespace, attempts):
        from . import batch

        # The driver chose what to write (--overwrite or not); what is there already was written by an
        # earlier try of this run, whose actor died: it is replaced.
        self.tracker = batch.Tracker(argparse.Namespace(**{**vars(args), "overwrite": True}))
        self.items = {item.line: item for item in batch.read_manifest(Path(args.manifest))}
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
