"""Speed of `sam2-jax train`'s step, each run in a fresh process (as training runs), repeated to show the spread.

    python -m benchmarks.train_step [--config tiny-generated] [--clips 4] [--frames 8] [--objects 8]
        [--corrections 3] [--freeze PART ...] [--dtype float32] [--steps 10] [--repeats 2] [--cores N]
        [--out benchmarks/results/]

Weights from `loop.initial_params(config, 0)`, batches drawn as `sam2-jax train` draws them (seed 0), the
recipe's defaults otherwise. Per run: the first step's time (compilation) and the median of the next --steps.
Step times on a shared CPU vary by several percent between identical runs: compare settings by their spread.
"""

from __future__ import annotations

import argparse
import sys
import time

from .common import describe, in_fresh_process, machine, markdown_table, save, use_cores


def run_steps(config: str, clips: int, frames: int, objects: int, corrections: int, freeze: tuple,
              dtype: str, steps: int) -> dict:
    """Run in a fresh process: compile and time training steps."""
    import jax
    import numpy as np

    from sam2_jax.train import loop
    from sam2_jax.train.batches import PromptMix, generated_clips, make_batch
    from sam2_jax.train.forward import with_memory_plan

    config = loop.build_config(config)
    recipe = loop.Recipe(tuple(freeze), num_corrections=corrections, dtype=dtype)
    params = loop.initial_params(config, 0)
    opt_state = recipe.optimizer(params).init(params)
    times = []
    for step in range(steps + 1):
        rng = np.random.default_rng([0, step, 1])
        sampled = generated_clips(0, step, clips, frames, config.image_size)
        batch = with_memory_plan(config, make_batch(sampled, objects, "random", rng, PromptMix()))
        started = time.perf_counter()
        params, opt_state, metrics = loop.train_step(config, recipe, params, opt_state, batch,
                                                     jax.random.PRNGKey(step), 1e-4)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - started)
    return {"compile_s": times[0], "step_s": float(np.median(times[1:]))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny-generated")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--corrections", type=int, default=3)
    parser.add_argument("--freeze", nargs="*", default=[])
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cores", type=int)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    use_cores(args.cores)
    before = machine()
    settings = dict(config=args.config, clips=args.clips, frames=args.frames, objects=args.objects,
                    corrections=args.corrections, freeze=tuple(args.freeze), dtype=args.dtype, steps=args.steps)
    runs = [in_fresh_process("benchmarks.train_step", "run_steps", **settings) for _ in range(args.repeats)]
    frames = args.clips * args.frames
    rows = [[i + 1, f"{r['step_s']:.3f}", f"{frames / r['step_s']:.1f}", f"{r['compile_s']:.0f}"]
            for i, r in enumerate(runs)]
    table = markdown_table(["run", "step (s, median)", "frames/s", "first step (s)"], rows)
    text = (f"Training step of {args.config}: {args.clips} clips x {args.frames} frames, {args.objects} object "
            f"slots, {args.corrections} correction clicks, frozen: {', '.join(args.freeze) or 'nothing'}, "
            f"{args.dtype}; {args.steps} steps a run, each run in a fresh process.\n"
            f"{describe(before, machine())}\n\n{table}")
    print(text)
    name = f"train-step-{args.config}" + ("" if args.dtype == "float32" else f"-{args.dtype}")
    for path in save(args.out, name, {"machine": before, "settings": settings, "runs": runs}, text):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
