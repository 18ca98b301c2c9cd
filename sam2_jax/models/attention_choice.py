"""Which formulation of memory attention runs on this machine's CPU, measured once per machine.

Memory attention's cross-attention has 4096 queries and up to 7 x 4096 + 64 keys. `layers.attention` can take
the queries in blocks with all keys at once (the (block x keys) scores written and reread) or also walk the
keys in blocks with an online softmax (no score matrix at all). Which is faster depends on the CPU's bandwidth,
caches and vector exponential, so on the first use on a machine each candidate is timed on a reduced memory
attention shape (1024 queries, all 7 x 4096 + 64 keys: about 0.1 s a call; a few seconds in all with the
compilation), and the fastest is kept in `runtime.CACHE_FOLDER / attention.json` under a key naming the CPU
(model name, ISA flags, cores and CPU devices, XLA_FLAGS' `--xla_cpu_max_isa`) and the jax version. Later
processes read it. The choice is static, made when a program is traced. GPUs keep their path (cuDNN for
bfloat16/float16, otherwise today's query blocks). $SAM2_JAX_ATTENTION forces a candidate by name, or any
blocks as "q<query block>-k<key block>".
"""

from __future__ import annotations

import concurrent.futures
import datetime
import functools
import json
import os
import platform
import re
import threading
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import runtime
from . import layers

ENVIRONMENT = "SAM2_JAX_ATTENTION"
CANDIDATES = {  # name: (query block, key block or None = all keys at once); "full" is the formulation before
    "full": (256, None),
    "q512-k2048": (512, 2048),
    "q1024-k1024": (1024, 1024),
    "q1024-k2048": (1024, 2048),
    "q1024-k4096": (1024, 4096),
}
# The timed shape: a quarter of memory attention's queries (one block of the largest query block but one), all
# its keys (7 memories + 64 pointer tokens: with fewer keys the scores of a query block would fit the caches
# better than the real ones do, and the full-keys formulation look faster than it is), its head dims (256,
# values 64). About 0.1 s a call on 2 cores; compiling the candidates costs more than running them.
TIMED_QUERIES, TIMED_KEYS, HEAD_DIM, VALUE_DIM = 1024, 7 * 4096 + 64, 256, 64
TIMED_ROUNDS = 3

_lock = threading.Lock()


class Choice(NamedTuple):
    """The formulation that runs: its name in `CANDIDATES`, its blocks, and why it was chosen."""

    name: str
    blocks: tuple[int, int | None]
    reason: str


def choice_file():
    """Where the per-machine choices are kept."""
    return runtime.CACHE_FOLDER / "attention.json"


def cores() -> int:
    """The cores this process may run on (its affinity, which XLA's thread pool is sized from; a container or
    `taskset` may give fewer than the machine has)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_key() -> str:
    """The CPU as the choice depends on it: model name, vector ISA flags, the cores this process runs on and
    the JAX CPU devices they are split into (the threads each program gets), XLA's --xla_cpu_max_isa limit,
    and the jax version (XLA's kernels change with it)."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = re.search(r"^model name\s*:\s*(.*)$", info, re.MULTILINE).group(1).strip()
        flags = re.search(r"^flags\s*:\s*(.*)$", info, re.MULTILINE).group(1).split()
        flags = " ".join(sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4"))))
    except (OSError, AttributeError):
        pass
    limit = re.search(r"--xla_cpu_max_isa=(\S+)", os.environ.get("XLA_FLAGS", ""))
    return (f"{model} | {flags} | {cores()} cores, {len(jax.devices('cpu'))} CPU device(s) | "
            f"max_isa={limit.group(1) if limit else 'none'} | jax {jax.__version__}")


def _timed_inputs():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((1, n, 1, d)), jnp.float32)
               for n, d in ((TIMED_QUERIES, HEAD_DIM), (TIMED_KEYS, HEAD_DIM), (TIMED_KEYS, VALUE_DIM)))
    return q, k, v, jnp.ones((1, TIMED_KEYS), bool)


def measure() -> dict[str, float]:
    """Milliseconds per call of every candidate on the timed shape, float32 on the CPU: each compiled and run
    once, then the best of `TIMED_ROUNDS` rounds that take the candidates in turn (so load from other
    processes hits them alike)."""
    args = _timed_inputs()
    functions = {}
    for name, blocks in CANDIDATES.items():
        functions[name] = jax.jit(functools.partial(layers.attention, scale=HEAD_DIM ** -0.5, blocks=blocks))
        jax.block_until_ready(functions[name](*args[:3], mask=args[3]))
    best = dict.fromkeys(CANDIDATES, float("inf"))
    for _ in range(TIMED_ROUNDS):
        for name, function in functions.items():
            start = time.perf_counter()
            jax.block_until_ready(function(*args[:3], mask=args[3]))
            best[name] = min(best[name], (time.perf_counter() - start) * 1e3)
    return best


def _read() -> dict:
    try:
        with open(choice_file()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write(key: str, entry: dict) -> None:
    """Add this machine's entry to the file (others kept); a read-only cache folder only costs a re-measure."""
    path = choice_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        choices = _read()
        choices[key] = entry
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(choices, indent=2))
        os.replace(tmp, path)
    except OSError:
        pass


def _forced() -> Choice | None:
    """$SAM2_JAX_ATTENTION: "auto" (or unset), a candidate's name, or any "q<query block>-k<key block>" (the
    tests force small blocks)."""
    name = os.environ.get(ENVIRONMENT, "auto")
    if name == "auto":
        return None
    blocks = re.fullmatch(r"q([1-9]\d*)-k([1-9]\d*)", name)
    if name not in CANDIDATES and not blocks:
        raise ValueError(f"${ENVIRONMENT}: expected 'auto', one of {', '.join(CANDIDATES)} or "
                         f"'q<query block>-k<key block>', got {name!r}")
    blocks = CANDIDATES.get(name) or (int(blocks.group(1)), int(blocks.group(2)))
    return Choice(name, blocks, f"forced by ${ENVIRONMENT}")


def choice() -> Choice:
    """This machine's formulation: forced by $SAM2_JAX_ATTENTION, else the cached measurement, else measured
    now (in a thread of its own, so that it runs even while a program is being traced) and cached."""
    forced = _forced()
    if forced:
        return forced
    with _lock:
        return _measured_choice(machine_key())


@functools.cache
def _measured_choice(key: str) -> Choice:
    entry = _read().get(key)
    source = f"measured earlier on this CPU, kept in {choice_file()}"
    if entry is None or entry.get("choice") not in CANDIDATES:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            times = pool.submit(measure).result()
        entry = {"choice": min(times, key=times.get), "ms": {n: round(t, 2) for n, t in times.items()},
                 "shape": f"{TIMED_QUERIES} queries x {TIMED_KEYS} keys, head dims {HEAD_DIM}/{VALUE_DIM}",
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        _write(key, entry)
        source = f"measured now on this CPU, kept in {choice_file()}"
    times = ", ".join(f"{n} {t:.1f}" for n, t in sorted(entry.get("ms", {}).items(), key=lambda x: x[1]))
    return Choice(entry["choice"], CANDIDATES[entry["choice"]], f"fastest of the candidates (ms a call on "
                                                                   f"{entry.get('shape')}: {times}); {source}")


def memory_attention_blocks() -> tuple[int, int | None] | None:
    """The blocks memory attention passes to `layers.attention`: this machine's choice on the CPU; None (the
    default path) elsewhere."""
    return choice().blocks if jax.default_backend() == "cpu" else None


def describe() -> str:
    """One line for `sam2-jax info`: which formulation memory attention runs and why."""
    if jax.default_backend() != "cpu":
        return (f"memory attention: {jax.default_backend()} path (cuDNN's fused kernel for bfloat16/float16, "
                f"else query blocks of {layers._QUERY_BLOCK} over all keys); no per-machine choice off the CPU")
    chosen = choice()
    query_block, key_block = chosen.blocks
    how = (f"query blocks of {query_block} over all keys at once" if key_block is None else
           f"query blocks of {query_block}, key blocks of {key_block} with an online softmax")
    return f"memory attention: {chosen.name} ({how}): {chosen.reason}; key {machine_key()}"
