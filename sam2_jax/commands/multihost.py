"""`sam2-jax batch` beyond one machine: the options of both ways (a Ray cluster, `--ray`, run by
`ray_runner`; one JAX program over several hosts, `--coordinator`), and the multi-host run itself.
`jax.distributed` is imported only when asked for.

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
import os
import socket
import sys
import time

from .options import int_type, positive
from .stopping import Terminated, stopped


_non_negative = int_type(lambda v: v >= 0, "an int >= 0")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `sam2-jax batch` that take it beyond one machine."""
    g = p.add_argument_group("many machines (the README's 'Many videos, many machines')")
    g.add_argument("--ray", metavar="ADDRESS",
                   help="run on a Ray cluster: 'auto' (the one this machine is part of, or $RAY_ADDRESS) or "
                        "HOST:PORT of its head; --out must be a folder every machine shares (the ray extra)")
    g.add_argument("--actors", type=positive, metavar="N",
                   help="with --ray: tracking actors (default: one per GPU of the cluster, else one per machine)")
    g.add_argument("--max-retries", type=_non_negative, default=3, metavar="N",
                   help="with --ray: try a group again on a new actor when its actor died, up to N times "
                        "(default: %(default)s)")
    g.add_argument("--coordinator", metavar="HOST:PORT", default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
                   help="multi-host JAX: process 0's address and a free port (default: $JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", type=positive, metavar="N", default=os.environ.get("JAX_NUM_PROCESSES"),
                   help="multi-host JAX: how many processes (default: $JAX_NUM_PROCESSES)")
    g.add_argument("--process-id", type=_non_negative, metavar="I", default=os.environ.get("JAX_PROCESS_ID"),
                   help="multi-host JAX: this one, 0..N-1 (default: $JAX_PROCESS_ID)")
    g.add_argument("--coordinator-timeout", type=positive, default=120, metavar="S",
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


def wait_reachable(address: str, option: str, seconds: float) -> None:
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
        wait_reachable(args.coordinator, "--coordinator", args.coordinator_timeout)
    import jax

    jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                               initialization_timeout=args.coordinator_timeout)
    return jax.process_index(), jax.process_count()


def gather(items: list, share: list) -> None:
    """Give every process the outcome of every item: each process's reports of its `share` are gathered
    over all processes' devices and set on `items`."""
    from ..tracking.sharding import process_allgather_json

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
        if isinstance(err, Terminated):  # raised at the common step: every process leaves the same way
            raise
        line, status = stopped("batch", err)
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
