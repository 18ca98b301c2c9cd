"""What the benchmarks share: the generated video, the machine's description, memory readings, fresh
processes and result files. Imports no torch, so that sam2-jax's fresh processes stay torch-free."""

from __future__ import annotations

import datetime
import json
import os
import pickle
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from sam2_jax.config import EDGETAM_PRESETS, EdgeTamVideoConfig, Sam2VideoConfig, small_config

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20
# On a GPU, JAX would otherwise take 75% of its memory at start: torch shares it in the side-by-side runs, and the
# fresh compile processes run beside their parent. Allocating as needed also makes the peak readings meaningful.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def config_named(name: str) -> Sam2VideoConfig | EdgeTamVideoConfig:
    """`small` (the tests' 9 M-parameter config at 256 px), a SAM 2 preset name such as `sam2.1-hiera-tiny`, or
    `edgetam` (the released EdgeTAM's config: RepViT-M1 and the perceiver at full size, 1024 px)."""
    if name == "small":
        return small_config()
    if name in EDGETAM_PRESETS:
        return EDGETAM_PRESETS[name]
    return Sam2VideoConfig.from_preset(name)


def moving_shapes(t: int, height: int, width: int, objects: int) -> tuple[np.ndarray, list[list[int]]]:
    """Frame t of a generated video: `objects` coloured discs moving side by side (never touching) over a
    gradient; (height, width, 3) uint8, and the discs' centres [x, y] (one positive click per object)."""
    yy, xx = np.ogrid[:height, :width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = xx * 200 // width
    frame[..., 1] = yy * 200 // height
    frame[..., 2] = 90
    lane = width / objects
    radius = min(height, lane) / 6
    centres = []
    for k in range(objects):
        cx = int(lane * (k + 0.5) + lane / 4 * np.sin(t / 12 + k))
        cy = int(height / 2 + height / 4 * np.sin(t / 17 + 1.3 * k))
        frame[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = (230, 60 + 50 * k % 190, 40 + 70 * k % 200)
        centres.append([cx, cy])
    return frame, centres


def use_cores(count: int | None) -> None:
    """Keep this process and those it starts on `count` of its cores (all when None). torch and XLA size their
    thread pools from this: call it before either starts. On a loaded machine, two threads per process
    oversubscribe the cores and torch's threads then spin (measured: 5 to 40 times slower frames)."""
    if count:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:count])


def rss() -> int:
    """Resident memory of this process in bytes (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def available_memory() -> int:
    """Memory the machine can still hand out, in bytes (Linux: MemAvailable)."""
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))


def device_memory() -> dict | None:
    """JAX's memory statistics of the default device (bytes_in_use, peak_bytes_in_use, ...); None on CPU."""
    return jax.devices()[0].memory_stats()


def machine() -> dict:
    """The machine and how busy it is now."""
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return {"device": jax.devices()[0].device_kind, "cpu": cpu, "cpu_count": os.cpu_count(),
            "cores_used": len(os.sched_getaffinity(0)),
            "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()], "isa_limits": isa_limits()}


def isa_limits() -> str:
    """The instruction-set limits this process runs under: XLA_FLAGS' --xla_cpu_max_isa (XLA) and
    $ATEN_CPU_CAPABILITY (torch), "none" where unset."""
    limit = re.search(r"--xla_cpu_max_isa=(\S+)", os.environ.get("XLA_FLAGS", ""))
    return (f"XLA max_isa {limit.group(1) if limit else 'none'}, "
            f"ATEN_CPU_CAPABILITY {os.environ.get('ATEN_CPU_CAPABILITY', 'none')}")


def describe(before: dict, after: dict) -> str:
    """One line naming the machine and its load average (1 min) before and after a run."""
    return (f"{before['device']} ({before['cpu']}, {before['cpu_count']} cores, {before['memory_gib']} GiB), "
            f"{before['cores_used']} core(s) used; {before['isa_limits']}; "
            f"load average {before['load_average_1_5_15'][0]} before, {after['load_average_1_5_15'][0]} after")


def in_fresh_process(module: str, function: str, **kwargs):
    """`module.function(**kwargs)` in a fresh Python (nothing imported, compiled or cached beforehand);
    arguments and result travel pickled through a temporary file."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "io.pickle")
        with open(path, "wb") as f:
            pickle.dump(kwargs, f)
        code = (f"import pickle, sys; from {module} import {function} as f\n"
                "with open(sys.argv[1], 'rb') as file: kwargs = pickle.load(file)\n"
                "result = f(**kwargs)\n"
                "with open(sys.argv[1], 'wb') as file: pickle.dump(result, file)")
        subprocess.run([sys.executable, "-c", code, path], check=True, cwd=ROOT)
        with open(path, "rb") as f:
            return pickle.load(f)


def best_seconds(fn, repeat: int = 1) -> float:
    """Best wall time of `repeat` calls of `fn`, in seconds (the best is the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(x) for x in row) + " |" for row in rows])


def save(out: str, stem: str, results: dict, text: str, paths: list[str] = ()) -> list[str]:
    """Write `results` as JSON and `text` as markdown to out/<device>-<stem>-<date>.{json,md}, or to
    <date>-2, -3... when a run of the same day is there already (its results stay); to `paths` when given
    (the files an earlier save of the same run returned)."""
    if paths:
        Path(paths[0]).write_text(json.dumps(results, indent=2) + "\n")
        Path(paths[1]).write_text(text + "\n")
        return list(paths)
    device = re.sub(r"[^a-z0-9]+", "-", jax.devices()[0].device_kind.lower()).strip("-")
    first = Path(out) / f"{device}-{stem}-{datetime.date.today().isoformat()}"  # stems may hold dots: no suffixes
    base, count = first, 1
    while Path(f"{base}.json").exists():
        count += 1
        base = Path(f"{first}-{count}")
    base.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{base}.json").write_text(json.dumps(results, indent=2) + "\n")
    Path(f"{base}.md").write_text(text + "\n")
    return [f"{base}.json", f"{base}.md"]
