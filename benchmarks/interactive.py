"""A person annotating a clip, each run in a fresh process: the time of every action of an annotation sequence
through the session API, sam2-jax beside transformers on the same checkpoint (the packaged model by default),
sam2-jax with an empty persistent compilation cache (cold) and with the cache the cold run filled (warm).
sam2-jax warms up (`model.warm_up(max_objects)`, the whole program set) right after loading, as the app does;
"model ready" is loading plus that warm-up, and every action after it is timed as the person waits for it
(the call and the masks on the host).

    python -m benchmarks.interactive [--model sam2-jax-shapes] [--frames 24] [--max-objects 16] [--no-warm-up]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks.common import ROOT, describe, in_fresh_process, machine, markdown_table, save

ACTIONS = ("click object 1", "add a negative point", "add object 2", "add object 3 by a box", "propagate",
           "correction click on the middle frame", "propagate again", "add object 4 on frame 5", "propagate (4)")


def _frames(count: int):
    from sam2_jax.io.clips import generate_clip

    return generate_clip(7, count, 240, 320, max_objects=3).frames


def sequence(implementation: str, model_name: str, frames: int, cache: str | None, warm_up: bool,
             max_objects: int) -> dict:
    """Runs in a fresh process: load, (warm up,) then every action of `ACTIONS`; seconds of each."""
    if cache is not None:
        os.environ["SAM2_JAX_COMPILE_CACHE"] = cache
    video = _frames(frames)
    began = time.perf_counter()
    if implementation == "transformers":
        import torch
        import transformers

        from sam2_jax.weights import resolve_pretrained

        torch.set_grad_enabled(False)
        folder = resolve_pretrained(model_name)
        model = transformers.Sam2VideoModel.from_pretrained(folder).eval()
        processor = transformers.Sam2VideoProcessor.from_pretrained(folder)
        session = processor.init_video_session(video=list(video), inference_device="cpu")
        masks = lambda out: out.pred_masks.numpy()  # noqa: E731
    else:
        import numpy as np

        from sam2_jax import Sam2VideoModel, Sam2VideoProcessor

        model = Sam2VideoModel.from_pretrained(model_name)
        if warm_up:
            model.warm_up(max_objects=max_objects, background=False)
        processor = Sam2VideoProcessor.from_pretrained(model_name)
        session = processor.init_video_session(video=video)
        masks = lambda out: np.asarray(out.pred_masks)  # noqa: E731
    seconds = {"model ready": time.perf_counter() - began}

    def prompt(frame, obj_id, points=None, labels=None, box=None):
        inputs = {"input_points": [[points]], "input_labels": [[labels]]} if points else {}
        if box:
            inputs["input_boxes"] = [[box]]
        processor.add_inputs_to_inference_session(inference_session=session, frame_idx=frame, obj_ids=obj_id,
                                                  **inputs)
        masks(model(inference_session=session, frame_idx=frame))

    def propagate():
        began = time.perf_counter()
        for i, out in enumerate(model.propagate_in_video_iterator(session, start_frame_idx=0)):
            masks(out)
            if i == 1:
                seconds.setdefault("first propagated frame", time.perf_counter() - began)

    middle = frames // 2
    steps = [lambda: prompt(0, 1, [[100, 100]], [1]), lambda: prompt(0, 1, [[100, 100], [160, 120]], [1, 0]),
             lambda: prompt(0, 2, [[220, 150]], [1]), lambda: prompt(0, 3, box=[30, 30, 90, 100]), propagate,
             lambda: prompt(middle, 1, [[110, 110]], [1]), propagate, lambda: prompt(5, 4, [[260, 60]], [1]),
             propagate]
    for name, step in zip(ACTIONS, steps):
        began = time.perf_counter()
        step()
        seconds[name] = time.perf_counter() - began
    seconds["whole sequence"] = sum(seconds[name] for name in ACTIONS)
    seconds["ready + sequence"] = seconds["model ready"] + seconds["whole sequence"]
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2-jax-shapes", help="a checkpoint folder or the packaged model")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--max-objects", type=int, default=16, help="sam2-jax's warm-up covers up to this many")
    parser.add_argument("--no-warm-up", action="store_true", help="sam2-jax compiles each program on first use")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    before = machine()
    options = {"model_name": args.model, "frames": args.frames, "warm_up": not args.no_warm_up,
               "max_objects": args.max_objects}
    with tempfile.TemporaryDirectory() as cache:
        runs = {"transformers": in_fresh_process("benchmarks.interactive", "sequence", implementation="transformers",
                                                 cache=None, **options),
                "sam2-jax cold": in_fresh_process("benchmarks.interactive", "sequence", implementation="sam2-jax",
                                                  cache=cache, **options),
                "sam2-jax warm": in_fresh_process("benchmarks.interactive", "sequence", implementation="sam2-jax",
                                                  cache=cache, **options)}
    after = machine()
    reference = runs["transformers"]
    names = ["model ready", *ACTIONS, "first propagated frame", "whole sequence", "ready + sequence"]
    rows = [[name] + [f"{runs[run][name]:.2f} s" for run in runs]
            + [f"{runs[run]['whole sequence'] / reference['whole sequence']:.2f}x" if name == "whole sequence"
               else "" for run in ("sam2-jax cold", "sam2-jax warm")] for name in names]
    header = ["action", *runs, "cold / transformers", "warm / transformers"]
    text = (f"# An annotation sequence, fresh processes: {args.model}, {args.frames} frames of 320x240\n\n"
            f"`python -m benchmarks.interactive --model {args.model} --frames {args.frames} --max-objects "
            f"{args.max_objects}{' --no-warm-up' if args.no_warm_up else ''}`\n\n{describe(before, after)}\n\n"
            + markdown_table(header, rows))
    print(text)
    save(args.out, f"interactive-{os.path.basename(args.model.rstrip('/'))}", {"runs": runs, "options": options,
                                                                               "machine": before}, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
