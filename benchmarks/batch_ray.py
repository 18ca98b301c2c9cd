"""Videos per minute of `sam2-jax batch` in one process against `batch --ray` with 1 and 2 actors on a local
Ray cluster (the overhead of Ray), and the time from killing an actor mid-write to its video's recovery.

    python -m benchmarks.batch_ray [--videos 24] [--frames 32] [--height 96] [--width 128] [--objects 2]
        [--rounds 1] [--note TEXT] [--out benchmarks/results/]

The packaged model (sam2-jax-shapes, 128 px) on `--videos` generated videos (moving discs,
`common.moving_shapes`, each starting at another time, folders of PNGs), one click per object on frame 0,
davis output. Every run is the whole command in a fresh process (`python -m sam2_jax.commands batch`: JAX
import, model load, compilation from a warm compilation cache, tracking, writing) into an empty --out;
the Ray runs connect to one local cluster (`ray.init(num_cpus=2)`) started here beforehand, so their time
includes the actors' start (each imports JAX, loads the model and compiles) but not the cluster's. An
untimed run first fills the compilation cache. `--rounds R` runs every setting R times, in turn, keeping
the fastest. The recovery run uses 2 actors and SIGKILLs the first actor seen with a temporary output
open; recovery is the time from the kill to that video's output complete (a restarted actor tracked it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from .common import ROOT, describe, machine, markdown_table, moving_shapes, save

WORKER = b"ray::MapWorker(MapBatches(RayWorker))"  # the process title of a tracking actor


def make_manifest(folder: Path, count: int, frames: int, height: int, width: int, objects: int) -> Path:
    """`count` videos (folders of PNGs) and manifest.jsonl: one click per object on frame 0."""
    lines = []
    for i in range(count):
        shots = [moving_shapes(t + 11 * i, height, width, objects) for t in range(frames)]
        (folder / f"video_{i:03d}").mkdir()
        for t, (frame, _) in enumerate(shots):
            Image.fromarray(frame).save(folder / f"video_{i:03d}" / f"{t:05d}.png")
        prompts = [{"obj_id": k + 1, "points": [centre]} for k, centre in enumerate(shots[0][1])]
        lines.append(json.dumps({"video": f"video_{i:03d}", "prompts": prompts}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "manifest.jsonl"


def batch(manifest: Path, out: Path, cache: Path, *extra: str, kill: bool = False) -> dict:
    """`sam2-jax batch` in a fresh process: its wall seconds and summary; with `kill`, the seconds from
    killing an actor mid-write to that video's output complete."""
    command = [sys.executable, "-m", "sam2_jax.commands", "batch", str(manifest), "--model", "sam2-jax-shapes", "--out",
               str(out), "--compile-cache", str(cache), *extra]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    result = {}
    if kill:
        result.update(kill_a_writer(out, process))
    summary = json.loads(process.communicate()[0])
    result.update(seconds=time.perf_counter() - start, summary=summary)
    assert process.returncode == 0 and summary["totals"]["failed"] == 0, summary["totals"]
    return result


def kill_a_writer(out: Path, process: subprocess.Popen) -> dict:
    """SIGKILL the first actor seen writing under `out`; wait for the video it was writing to be complete."""
    while process.poll() is None:
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            try:
                if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(WORKER):
                    continue
                partials = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            except OSError:
                continue
            partials = [Path(p) for p in partials if p.startswith(str(out)) and ".partial" in p]
            if partials:
                os.kill(pid, signal.SIGKILL)
                killed = time.perf_counter()
                video = partials[0].name[1:].split(".")[0]  # .NAME.XXXX.partial
                while not any((out / "davis" / video).glob("*.png")) and process.poll() is None:
                    time.sleep(0.01)
                return {"killed_video": video, "recovery_s": time.perf_counter() - killed}
        time.sleep(0.005)
    return {}


def run(args) -> dict:
    """Every setting, `--rounds` times in turn, then the recovery run."""
    import ray

    results = {"command": "python -m benchmarks.batch_ray " + shlex.join(sys.argv[1:]), "machine_before": machine(),
               "work": f"{args.videos} videos x {args.frames} frames {args.height}x{args.width}, {args.objects} "
                       "object(s), one click each on frame 0, davis output, sam2-jax-shapes (128 px)"}
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, logging_level=logging.WARNING,
             log_to_driver=False)
    address = ray.get_runtime_context().gcs_address
    settings = {"one process (no Ray)": [], "Ray, 1 actor": ["--ray", address, "--actors", "1"],
                "Ray, 2 actors": ["--ray", address, "--actors", "2"]}
    runs = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            (folder / "data").mkdir()
            manifest = make_manifest(folder / "data", args.videos, args.frames, args.height, args.width, args.objects)
            cache = folder / "cache"
            batch(manifest, folder / "warm", cache)
            for round_ in range(args.rounds):
                for name, extra in settings.items():
                    print(f"round {round_ + 1}: {name}...", file=sys.stderr, flush=True)
                    out = folder / f"out-{round_}-{len(runs)}-{name.replace(' ', '_')}"
                    seconds = batch(manifest, out, cache, *extra)["seconds"]
                    runs.setdefault(name, []).append(seconds)
            print("recovery...", file=sys.stderr, flush=True)
            recovery = batch(manifest, folder / "killed", cache, *settings["Ray, 2 actors"], kill=True)
    finally:
        ray.shutdown()
    results["runs"] = [{"setting": name, "seconds": seconds, "best_s": min(seconds),
                        "videos_per_minute": 60 * args.videos / min(seconds)} for name, seconds in runs.items()]
    results["recovery"] = {"killed_video": recovery.get("killed_video"), "recovery_s": recovery.get("recovery_s"),
                           "run_s": recovery["seconds"],
                           "retries": {v["name"]: v["retries"] for v in recovery["summary"]["videos"]
                                       if v.get("retries")}}
    results["machine_after"] = machine()
    return results


def report(results: dict) -> str:
    """The results as markdown."""
    base = results["runs"][0]["videos_per_minute"]
    rows = [[run["setting"], f"{run['videos_per_minute']:.1f}", f"{run['best_s']:.1f}",
             f"{run['videos_per_minute'] / base:.2f}"] for run in results["runs"]]
    table = markdown_table(["setting", "videos/minute", "wall s (best)", "vs one process"], rows)
    r = results["recovery"]
    recovery = (f"Recovery (2 actors, the actor writing `{r['killed_video']}` SIGKILLed): its output was complete "
                f"{r['recovery_s']:.1f} s after the kill (a restarted actor imported JAX, loaded the model, compiled "
                f"from the cache and tracked it again); the whole run took {r['run_s']:.1f} s; retries in the "
                f"summary: {r['retries']}." if r["recovery_s"] is not None else "Recovery: no actor was seen writing.")
    notes = ("Wall seconds of the whole command in a fresh process, its startup included (JAX import, model "
             "load, compilation from a warm cache; for Ray, the actors' start but not the cluster's), the best "
             "of the rounds. The actors share this machine's cores, so a second actor adds no hardware here.")
    return "\n".join([f"## batch on Ray: {results['work']}", "", f"`{results['command']}`", "",
                      f"Machine: {describe(results['machine_before'], results['machine_after'])}.", "", table, "",
                      recovery, "", notes] + ([f"\n{results['note']}"] if results.get("note") else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=32, help="per video")
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="run every setting this many times, in turn, keeping "
                                                              "the fastest (evens out other processes' load)")
    parser.add_argument("--note", help="a line added to the results (e.g. what else ran on the machine)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for <device>-batch-ray-<date>.*")
    args = parser.parse_args()
    results = run(args)
    results["note"] = args.note
    text = report(results)
    print(text)
    print("wrote", *save(args.out, "batch-ray", results, text))


if __name__ == "__main__":
    main()
