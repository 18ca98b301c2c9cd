"""Speed of `sam2-jax train`'s step beside the original trainer's (the sam2 package's `SAM2Train` and its loss,
with AdamW), on the same weights and clips, in one fresh process per run (as training runs), repeated to
show the spread.

    python -m benchmarks.train_step [--config tiny-generated] [--clips 4] [--frames 8] [--objects 8]
        [--corrections 3] [--freeze PART ...] [--dtype float32] [--steps 10] [--repeats 2] [--cores N]
        [--no-reference] [--out benchmarks/results/]

Weights: the original's, randomised, converted (`loop.initial_params(config, 0)` with --no-reference). Each
step draws clips as `sam2-jax train` draws them (seed 0) and prompts them as each trainer does: sam2-jax per
object (`sam2-jax train`'s default mix), the original one kind for the whole batch (a mask half of the time
on clips, never on single images; else a click or a box), correcting clicks and boxes on the same frames;
the original gets the real objects, sam2-jax pads them to --objects slots. The two take turns step by step;
per run: the first step's time (compilation) and the median of the next --steps. The original runs in
float32 whatever --dtype. Step times on a shared CPU vary by several percent between identical runs:
compare settings by their spread.
"""

from __future__ import annotations

import argparse
import sys
import time

from .common import describe, in_fresh_process, machine, markdown_table, save, use_cores

# sam2-jax's part names -> the original's modules
ORIGINAL_PARTS = {"image_encoder": "image_encoder", "vision_encoder": "image_encoder",
                  "prompt_encoder": "sam_prompt_encoder", "mask_decoder": "sam_mask_decoder",
                  "memory_attention": "memory_attention", "memory_encoder": "memory_encoder"}


def _original_trainer(config, corrections: int, freeze: tuple):
    """The original trainer (randomised, parts in `freeze` without gradients), its AdamW and its weights in
    sam2-jax's tree."""
    import torch

    from convert.original import to_transformers
    from sam2_jax import weights
    from sam2_jax import Sam2VideoModel
    from tests.original_trainer import build_original_trainer
    from tests.reference import randomize_

    model = randomize_(build_original_trainer(config, corrections), seed=0)
    for part in freeze:
        getattr(model, ORIGINAL_PARTS[part]).requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                  weight_decay=0.05)
    converted = {k: v.numpy() for k, v in to_transformers(model.state_dict(), config).items()}
    return model, optimizer, weights.state_dict_to_params(converted, Sam2VideoModel.abstract_params(config))


def _original_step(model, optimizer, batch, kind: str) -> None:
    import torch

    from tests.original_trainer import loss_of_batch

    loss_of_batch(model, batch, kind).backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run_steps(config: str, clips: int, frames: int, objects: int, corrections: int, freeze: tuple,
              dtype: str, steps: int, reference: bool) -> dict:
    """Run in a fresh process: compile and time training steps, taking turns with the original's."""
    import jax
    import numpy as np

    from sam2_jax.train import loop
    from sam2_jax.train.batches import PromptMix, generated_clips, make_batch
    from sam2_jax.train.forward import with_memory_plan

    config = loop.build_config(config)
    recipe = loop.Recipe(tuple(freeze), num_corrections=corrections, dtype=dtype)
    if reference:
        model, optimizer, params = _original_trainer(config, corrections, tuple(freeze))
    else:
        params = loop.initial_params(config, 0)
    opt_state = recipe.optimizer(params).init(params)
    mix = loop.default_prompt_mix(frames)
    times, original_times, kinds = [], [], []
    for step in range(steps + 1):
        rng = np.random.default_rng([0, step, 1])
        sampled = generated_clips(0, step, clips, frames, config.image_size)
        batch = with_memory_plan(config, make_batch(sampled, objects, "random", rng, mix))
        if reference:  # the original's draw: one kind for the batch
            kind = rng.choice(["click", "box"]) if frames == 1 or rng.random() < 0.5 else "mask"
            kinds.append(str(kind))
            real = sum(masks.shape[1] for _, masks in sampled)
            one_kind = PromptMix(**{k: float(k == kind) for k in ("click", "box", "mask")})
            original_batch = make_batch(sampled, real, "random", rng, one_kind)
            if not corrections:  # the original's way to correct nothing (0 correction clicks fails there)
                original_batch = original_batch._replace(correct=np.zeros_like(original_batch.correct))
            started = time.perf_counter()
            _original_step(model, optimizer, original_batch, kind)
            original_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        params, opt_state, metrics = loop.train_step(config, recipe, params, opt_state, batch,
                                                     jax.random.PRNGKey(step), 1e-4)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - started)
    result = {"compile_s": times[0], "step_s": float(np.median(times[1:]))}
    if reference:
        result.update(original_step_s=float(np.median(original_times[1:])), original_kinds=kinds[1:])
    return result


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
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="time sam2-jax alone (no torch needed)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    use_cores(args.cores)
    before = machine()
    settings = dict(config=args.config, clips=args.clips, frames=args.frames, objects=args.objects,
                    corrections=args.corrections, freeze=tuple(args.freeze), dtype=args.dtype, steps=args.steps,
                    reference=args.reference)
    runs = [in_fresh_process("benchmarks.train_step", "run_steps", **settings) for _ in range(args.repeats)]
    frames = args.clips * args.frames
    header = ["run", "step (s, median)", "frames/s", "first step (s)"]
    rows = [[i + 1, f"{r['step_s']:.3f}", f"{frames / r['step_s']:.1f}", f"{r['compile_s']:.0f}"]
            for i, r in enumerate(runs)]
    if args.reference:
        header += ["original step (s, median)", "original frames/s", "speed-up (original / sam2-jax)"]
        for row, r in zip(rows, runs):
            row += [f"{r['original_step_s']:.3f}", f"{frames / r['original_step_s']:.1f}",
                    f"{r['original_step_s'] / r['step_s']:.2f}"]
    table = markdown_table(header, rows)
    text = (f"Training step of {args.config}: {args.clips} clips x {args.frames} frames, {args.objects} object "
            f"slots, {args.corrections} correction clicks, frozen: {', '.join(args.freeze) or 'nothing'}, "
            f"{args.dtype}; {args.steps} steps a run, each run in a fresh process"
            + (", taking turns with the original trainer (float32).\n" if args.reference else ".\n")
            + f"{describe(before, machine())}\n\n{table}")
    print(text)
    name = (f"train-step-{args.config}-{args.clips}x{args.frames}"
            + ("" if args.dtype == "float32" else f"-{args.dtype}"))
    for path in save(args.out, name, {"machine": before, "settings": settings, "runs": runs}, text):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
