"""The packaged sam2-jax-shapes model: held-out J&F through the inference API, against the targets.

`track_with_api` prompts the API as the trainer's batches prompt (`batches.make_batch`); `test_train` uses it
too, to check the training pass against the API."""

from __future__ import annotations

import numpy as np

from sam2_jax.io.evaluation import evaluate_sequence
from sam2_jax.train import batches
from sam2_jax import Sam2VideoModel, Sam2VideoProcessor


def track_with_api(model, processor, frames, truth, kind, prompt_frames=(0,)):
    """Masks (T,N,H,W) bool from the inference API, prompted as `batches.make_batch` prompts: each prompted frame
    in turn gets its prompts and runs (an object out of sight there gets its empty mask), then the video is
    propagated from frame 0."""
    session = processor.init_video_session(video=list(frames))
    ids = list(range(1, truth.shape[1] + 1))
    for t in prompt_frames:
        shown = [i for i in ids if truth[t, i - 1].any()]
        if kind == "mask" or len(shown) < len(ids):
            masked = ids if kind == "mask" else [i for i in ids if i not in shown]
            processor.add_inputs_to_inference_session(session, frame_idx=t, obj_ids=masked,
                                                      input_masks=[truth[t, i - 1] for i in masked])
        if kind == "click" and shown:
            processor.add_inputs_to_inference_session(
                session, frame_idx=t, obj_ids=shown, input_labels=[[[1]] * len(shown)],
                input_points=[[[batches.centre_click(truth[t, i - 1]).tolist()] for i in shown]])
        elif kind == "box" and shown:
            processor.add_inputs_to_inference_session(
                session, frame_idx=t, obj_ids=shown, input_boxes=[[batches.box_of(truth[t, i - 1]).tolist()
                                                                    for i in shown]])
        model(session, frame_idx=t)
    out = np.zeros_like(truth)
    for step in model.propagate_in_video_iterator(session, start_frame_idx=0):
        masks = processor.post_process_masks([step.pred_masks], [list(truth.shape[2:])])[0]
        out[step.frame_idx] = np.asarray(masks)[:, 0]
    return out


# What the shipped model scores on these 16 clips (0.867 / 0.883 / 0.892, copy 0.384), less a margin for other
# platforms' rounding. On the 100 held-out clips of `sam2-jax train --eval-only` it meets both targets (click
# 0.881 against 0.85, mask 0.902 against 0.9).
SHIPPED_CLICK, SHIPPED_BOX, SHIPPED_MASK = 0.84, 0.84, 0.87


def test_the_shipped_model_tracks_held_out_clips():
    """The packaged sam2-jax-shapes model, loaded by name, through the inference API on held-out generated
    clips (seeds the training stream never draws): J&F (DAVIS rules) from a click, a box and a mask on
    frame 0, against the copy-the-first-mask baseline."""
    model, processor = Sam2VideoModel.from_pretrained("sam2-jax-shapes"), Sam2VideoProcessor.from_pretrained("sam2-jax-shapes")
    scores = {kind: [] for kind in ("click", "box", "mask", "copy")}
    for frames, truth in batches.held_out_clips(16, 8, 128, start=100):
        for kind in ("click", "box", "mask"):
            result = evaluate_sequence(track_with_api(model, processor, frames, truth, kind), truth)
            scores[kind] += [o["J&F"] for o in result["objects"]]
        copy = evaluate_sequence(np.broadcast_to(truth[:1], truth.shape).copy(), truth)
        scores["copy"] += [o["J&F"] for o in copy["objects"]]
    means = {kind: float(np.mean(v)) for kind, v in scores.items()}
    print("held-out J&F:", means)
    assert means["copy"] < 0.4, means
    assert means["click"] >= SHIPPED_CLICK and means["box"] >= SHIPPED_BOX and means["mask"] >= SHIPPED_MASK, means
