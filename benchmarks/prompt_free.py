"""Prompt-free tracking quality: J&F of `Sam2AutomaticVideoTracker` beside one click per object, on generated clips.

    python -m benchmarks.prompt_free [--clips 12] [--frames 24] [--seed 10000] [--points-per-side 16]
        [--out benchmarks/results]

Both use the packaged model (`sam2-jax-shapes`) on the same clips (`sam2_jax.data.generate_clip`, 240x320, up to
3 moving shapes; seeds from --seed on, away from the model's training clips). Clicked: one positive click at the
centre of each true object on frame 0 (as `sam2-jax demo` clicks), tracked by the session API. Prompt-free: no
input besides the video; objects are found on frame 0 (and, in a second run, again every 8 frames) by the
automatic mask generator at thresholds where this small model's masks pass (predicted IoU 0.5, stability 0.8).
Each true object is matched to its best track (the highest J&F); J&F follows the DAVIS rules (first and last
frames not scored) and is averaged over all true objects. Tracks that match no true object are counted apart.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sam2_jax import Sam2AutomaticMaskGenerator, Sam2AutomaticVideoTracker, Sam2VideoModel, Sam2VideoProcessor
from sam2_jax.automatic.video import image_model
from sam2_jax.cli import _interior_point
from sam2_jax.io.clips import generate_clip
from sam2_jax.io.evaluation import evaluate_sequence

from .common import describe, machine, markdown_table, save

MODEL = "sam2-jax-shapes"
THRESHOLDS = dict(pred_iou_thresh=0.5, stability_score_thresh=0.8)
HEIGHT, WIDTH = 240, 320


def masks_of(outputs, processor, obj_ids: list) -> np.ndarray:
    """(T, N, H, W) bool masks of `obj_ids` from one output per frame (an object absent from a frame: empty)."""
    outputs = list(outputs)
    masks = np.zeros((len(outputs), len(obj_ids), HEIGHT, WIDTH), bool)
    for o in outputs:
        if o.object_ids:
            frame = np.asarray(processor.post_process_masks([o.pred_masks], [(HEIGHT, WIDTH)], binarize=True)[0])
            for obj_id, mask in zip(o.object_ids, frame[:, 0]):
                masks[o.frame_idx, obj_ids.index(obj_id)] = mask
    return masks


def best_match(pred: np.ndarray, truth: np.ndarray) -> tuple[list[float], int]:
    """Each true object's J&F against its best track, and how many tracks were nobody's best."""
    scores, used = [], set()
    for g in range(truth.shape[1]):
        per_track = [evaluate_sequence(pred[:, k:k + 1], truth[:, g:g + 1])["J&F"] for k in range(pred.shape[1])]
        k = int(np.argmax(per_track)) if per_track else None
        scores.append(per_track[k] if per_track else 0.0)
        used.add(k)
    return scores, pred.shape[1] - len(used - {None})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)

    before = machine()
    model = Sam2VideoModel.from_pretrained(MODEL)
    processor = Sam2VideoProcessor.from_pretrained(MODEL)
    generator = Sam2AutomaticMaskGenerator(image_model(model), points_per_side=args.points_per_side, **THRESHOLDS)
    runs = {"clicked": [], "prompt-free": [], "prompt-free, every 8 frames": []}
    extra = {name: 0 for name in runs}
    seconds = {name: 0.0 for name in runs}
    for seed in range(args.seed, args.seed + args.clips):
        clip = generate_clip(seed, args.frames, HEIGHT, WIDTH, max_objects=3)
        for name in runs:
            session = processor.init_video_session(video=clip.frames)
            began = time.perf_counter()
            if name == "clicked":
                ids = list(clip.obj_ids)
                clicks = [[list(_interior_point(mask))] for mask in clip.masks[0]]
                processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=ids, input_points=[clicks],
                                                          input_labels=[[[1]] * len(ids)])
                model(session, frame_idx=0)
                outputs = list(model.propagate_in_video_iterator(session, start_frame_idx=0))
            else:
                tracker = Sam2AutomaticVideoTracker(model, generator, auto_every=8 if "every" in name else None,
                                                    processor=processor)
                outputs = list(tracker.propagate(session))
                ids = session.obj_ids
            seconds[name] += time.perf_counter() - began
            scores, unmatched = best_match(masks_of(outputs, processor, ids), clip.masks)
            runs[name] += scores
            extra[name] += unmatched if name != "clicked" else 0
        print(f"clip {seed}: {len(clip.obj_ids)} objects; " + ", ".join(
            f"{name} {np.mean(scores[-len(clip.obj_ids):]):.3f}" for name, scores in runs.items()), flush=True)

    after = machine()
    objects = len(runs["clicked"])
    rows = [[name, f"{np.mean(scores):.3f}", f"{np.mean(np.asarray(scores) >= 0.5):.0%}", extra[name],
             f"{seconds[name]:.0f}"] for name, scores in runs.items()]
    table = markdown_table(["input", "J&F (mean over objects)", "objects found (J&F >= 0.5)",
                            "extra tracks", "seconds (all clips)"], rows)
    text = "\n".join([
        f"# Prompt-free tracking against one click per object: {MODEL}, generated clips", "",
        f"`python -m benchmarks.prompt_free --clips {args.clips} --frames {args.frames} --seed {args.seed} "
        f"--points-per-side {args.points_per_side}`", "",
        f"{args.clips} clips of {args.frames} frames ({WIDTH}x{HEIGHT}, seeds {args.seed}..{args.seed + args.clips - 1}), "
        f"{objects} true objects. Generator: {args.points_per_side}x{args.points_per_side} points, predicted IoU "
        f">= 0.5, stability >= 0.8, new objects below IoU 0.5 with every track. Each true object is scored against "
        f"its best track; extra tracks are those that are no true object's best. Seconds include compilation "
        f"(the first clip of each input).", "",
        table, "", f"Machine: {describe(before, after)}."])
    results = {"args": vars(args), "objects": objects, "jf": runs, "extra_tracks": extra, "seconds": seconds,
               "machine_before": before, "machine_after": after}
    for path in save(args.out, f"prompt-free-{MODEL}", results, text):
        print(f"wrote {path}")
    print(text)


if __name__ == "__main__":
    main()
