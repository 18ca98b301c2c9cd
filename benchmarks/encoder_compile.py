"""Compile time and run time of the vision encoder program (`tracking.tracker.encode_frames` on one frame,
float32): each measurement in a fresh process with no persistent compilation cache, for this tree's sam2_jax
and, with --rev, for the sam2_jax of other git revisions (exported to a temporary folder), in turn.

    python -m benchmarks.encoder_compile [--models sam2-jax-shapes sam2.1-hiera-tiny] [--repeat 3] [--rev HEAD~1 ...]

A model is a preset name (random weights, `Sam2VideoModel.from_config`) or a packaged one (`from_pretrained`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchmarks.common import ROOT, describe, machine, markdown_table, use_cores


def _child(model_name: str, runs: int) -> dict:
    """Runs in a fresh process: trace + lower, compile, then the best of `runs` calls; wall and CPU seconds
    (CPU: this process's threads together, which moves less than wall time when other work shares the cores)."""
    import functools
    import time

    import jax
    import numpy as np

    import sam2_jax
    from sam2_jax import Sam2VideoModel
    from sam2_jax.config import PRESETS
    from sam2_jax.tracking.tracker import encode_frames

    def timed(fn):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - wall, time.process_time() - cpu

    jax.config.update("jax_compilation_cache_dir", None)
    model = (Sam2VideoModel.from_config(PRESETS[model_name]) if model_name in PRESETS
             else Sam2VideoModel.from_pretrained(model_name))
    size = model.config.image_size
    pixels = np.random.default_rng(0).standard_normal((1, size, size, 3)).astype(np.float32)
    encode = jax.jit(functools.partial(encode_frames, model.module))
    lowered, lower_s, lower_cpu = timed(lambda: encode.lower(model.params, pixels))
    compiled, compile_s, compile_cpu = timed(lowered.compile)
    jax.block_until_ready(compiled(model.params, pixels))
    calls = [timed(lambda: jax.block_until_ready(compiled(model.params, pixels)))[1:] for _ in range(runs)]
    return {"imported": sam2_jax.__file__, "size": size, "stablehlo_lines": lowered.as_text().count("\n"),
            "trace_lower_s": round(lower_s, 2), "trace_lower_cpu_s": round(lower_cpu, 2),
            "compile_s": round(compile_s, 2), "compile_cpu_s": round(compile_cpu, 2),
            "run_ms": round(1e3 * min(c[0] for c in calls), 1), "run_cpu_ms": round(1e3 * min(c[1] for c in calls), 1)}


def _measure(model_name: str, package_root: str, runs: int) -> dict:
    """`_child` in a fresh Python that imports sam2_jax from `package_root` (and benchmarks from this tree)."""
    code = (f"import sys, json; sys.path[:0] = [{package_root!r}, {str(ROOT)!r}]\n"
            f"from benchmarks.encoder_compile import _child; print(json.dumps(_child({model_name!r}, {runs})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(), capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sam2-jax-shapes", "sam2.1-hiera-tiny"])
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per model and revision")
    parser.add_argument("--runs", type=int, default=5, help="calls of the compiled program (best reported)")
    parser.add_argument("--rev", nargs="*", default=[], help="also measure the sam2_jax of these git revisions")
    parser.add_argument("--cores", type=int, help="use this many cores (all by default)")
    parser.add_argument("--out", help="write the markdown table to this file")
    args = parser.parse_args(argv)
    use_cores(args.cores)
    before = machine()
    with tempfile.TemporaryDirectory() as folder:
        trees = {}
        for rev in args.rev:
            commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True,
                                    text=True).stdout.strip()
            archive = subprocess.run(["git", "archive", commit, "sam2_jax"], cwd=ROOT, check=True,
                                     capture_output=True).stdout
            os.makedirs(os.path.join(folder, commit))
            subprocess.run(["tar", "-x", "-C", os.path.join(folder, commit)], input=archive, check=True)
            trees[f"{rev} ({commit})" if rev != commit else commit] = os.path.join(folder, commit)
        trees["this tree"] = str(ROOT)
        rows = []
        for model_name in args.models:
            for _ in range(args.repeat):  # alternate the trees, so that all see the same load
                for label, root in trees.items():
                    result = _measure(model_name, root, args.runs)
                    rows.append({"model": model_name, "sam2_jax": label, **result})
                    print(json.dumps(rows[-1]), flush=True)
    header = ["model", "sam2_jax", "size", "StableHLO lines", "trace + lower s (CPU s)", "compile s (CPU s)",
              f"run ms/frame, best of {args.runs} (CPU ms)"]
    table = markdown_table(header, [[r["model"], r["sam2_jax"], r["size"], r["stablehlo_lines"],
                                     f"{r['trace_lower_s']} ({r['trace_lower_cpu_s']})",
                                     f"{r['compile_s']} ({r['compile_cpu_s']})", f"{r['run_ms']} ({r['run_cpu_ms']})"]
                                    for r in rows])
    text = f"{describe(before, machine())}\n\n{table}"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
