"""Compile time of `functional.propagate`: cold (empty persistent cache) and warm (the cache filled by the
cold run), each in a fresh process, per object count; and how many programs one video shape compiles.

    python -m benchmarks.propagate_compile [--config sam2.1-hiera-tiny] [--objects 1 4] [--frames 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

from benchmarks.common import ROOT, config_named, machine, save


def _child(config_name: str, objects: int, frames: int, cache: str) -> dict:
    """Runs in a fresh process: lower and compile `propagate` for one shape, then call it twice."""
    import jax
    import numpy as np

    from benchmarks.common import moving_shapes
    from sam2_jax import functional
    from sam2_jax import Sam2VideoModel

    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    config = config_named(config_name)
    params = Sam2VideoModel.abstract_params(config)
    size = config.image_size
    video = np.stack([moving_shapes(t, size, size, objects)[0] for t in range(frames)])
    _, centres = moving_shapes(0, size, size, objects)
    prompts = functional.make_prompts([[{"frame": 0, "points": [c], "labels": [1]}] for c in centres], size, size)
    began = time.perf_counter()
    lowered = functional._propagate.lower(params, config, video, prompts, np.int32(frames), reverse=False,
                                          both_directions=False)
    lowered_s = time.perf_counter() - began
    compiled = lowered.compile()
    compile_s = time.perf_counter() - began - lowered_s
    real = Sam2VideoModel.from_config(config).params
    runs = []
    for _ in range(2):  # the first run would show any compilation left for run time
        began = time.perf_counter()
        jax.block_until_ready(compiled(real, video, prompts, np.int32(frames)))
        runs.append(round(time.perf_counter() - began, 1))
    return {"objects": objects, "frames": frames, "trace_lower_s": round(lowered_s, 1),
            "compile_s": round(compile_s, 1), "total_s": round(lowered_s + compile_s, 1),
            "first_run_s": runs[0], "second_run_s": runs[1]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="sam2.1-hiera-tiny")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--child", nargs=3, metavar=("OBJECTS", "FRAMES", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.config, int(args.child[0]), int(args.child[1]), args.child[2])))
        return 0
    rows = []
    for objects in args.objects:
        with tempfile.TemporaryDirectory() as cache:
            for kind in ("cold", "warm"):
                done = subprocess.run([sys.executable, "-m", "benchmarks.propagate_compile", "--config", args.config,
                                       "--child", str(objects), str(args.frames), cache], cwd=ROOT,
                                      capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append({"cache": kind, **row})
                print(rows[-1], flush=True)
    table = ["| objects | cache | trace + lower (s) | compile (s) | total (s) | first run (s) | second run (s) |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r['objects']} | {r['cache']} | {r['trace_lower_s']} | {r['compile_s']} | {r['total_s']} | "
              f"{r['first_run_s']} | {r['second_run_s']} |" for r in rows]
    note = (f"`functional.propagate` ({args.config}, {args.frames} frames, one click per object, float32): one "
            "program per video shape and flags; each row a fresh process; warm reads the persistent cache "
            "written by the cold run; the runs call the compiled program on random weights (first and second). Command: `python -m benchmarks.propagate_compile --config "
            f"{args.config}`.")
    print("\n".join(table))
    for path in save(str(ROOT / "benchmarks" / "results"), f"propagate-compile-{args.config}",
                     {"machine": machine(), "rows": rows, "note": note}, "\n".join([note, "", *table])):
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
