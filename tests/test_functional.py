"""`sam2_jax.functional.propagate` against the session it must equal (`Sam2VideoModel` +
`propagate_in_video_iterator`, driven as the module docstring says) and against transformers, flow by flow;
`prepare` against the processor; vmap against the loop; bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from sam2_jax import functional
from sam2_jax.config import small_config
from sam2_jax.processing import preprocess_images
from test_video_model import SIZE, Pair, _video, run_flow
from reference import to_numpy

NUM_FRAMES = 20


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return Pair(small_config(), tmp_path_factory.mktemp("functional"))


@pytest.fixture(scope="module")
def video():
    return np.stack(_video(num_frames=NUM_FRAMES))


def _actions(objects, direction):
    """The session calls that `propagate` stands for: each prompted frame added and run in frame order (one
    call per object), then propagation from the first prompted frame (or back from the last)."""
    by_frame = {}
    for i, prompts in enumerate(objects):
        for q in prompts:
            by_frame.setdefault(q["frame"], []).append((i + 1, q))
    actions = []
    for frame in sorted(by_frame):
        for obj_id, q in by_frame[frame]:
            add = dict(frame_idx=frame, obj_ids=obj_id)
            if "mask" in q:
                add["input_masks"] = q["mask"]
            if "box" in q:
                add["input_boxes"] = [[q["box"]]]
            if "points" in q:
                add.update(input_points=[[q["points"]]], input_labels=[[q["labels"]]])
            actions += [("add", add), ("forward", frame)]
    first, last = min(by_frame), max(by_frame)
    if direction == "reverse":
        actions.append(("propagate", {"start_frame_idx": last, "reverse": True}))
    else:
        actions.append(("propagate", {"start_frame_idx": first}))
    if direction == "both":
        actions.append(("propagate", {"start_frame_idx": first, "reverse": True}))
    return actions


def _last_output_per_frame(outputs, skip):
    """Frame -> the session's last output for it, leaving out the `skip` outputs of the prompting calls."""
    return {o.frame_idx: o for o in outputs[skip:]}


MASK = np.zeros((SIZE, SIZE), bool)
MASK[50:110, 30:100] = True

FLOWS = {
    "clicks": ([[{"frame": 0, "points": [[70, 80]], "labels": [1]}],
                [{"frame": 0, "points": [[180, 150], [20, 20]], "labels": [1, 0]}]], "forward"),
    "boxes, an object starting late": ([[{"frame": 0, "box": [30, 50, 100, 120]}],
                                         [{"frame": 3, "box": [150, 120, 210, 180], "points": [[180, 150]],
                                           "labels": [1]}]], "forward"),
    "mask": ([[{"frame": 0, "mask": MASK}], [{"frame": 0, "points": [[180, 150]], "labels": [1]}]], "forward"),
    "several prompted frames": ([[{"frame": 0, "points": [[70, 80]], "labels": [1]},
                                  {"frame": 6, "points": [[95, 80], [40, 40]], "labels": [1, 0]}],
                                 [{"frame": 2, "points": [[175, 152]], "labels": [1]}]], "forward"),
    "reverse": ([[{"frame": 18, "points": [[140, 80]], "labels": [1]}],
                 [{"frame": 12, "points": [[150, 160]], "labels": [1]}]], "reverse"),
    "both directions": ([[{"frame": 5, "points": [[90, 80]], "labels": [1]}],
                         [{"frame": 8, "points": [[160, 158]], "labels": [1]}]], "both"),
}


@pytest.mark.parametrize("flow", list(FLOWS))
def test_propagate_equals_the_session_and_transformers(pair, video, flow):
    check_propagate(pair, video, flow, *FLOWS[flow])


def check_propagate(pair, video, flow, objects, direction):
    """`propagate` on `objects`' prompts against the session driven by `_actions` and against transformers
    (`run_flow`), frame by frame (also used by EdgeTAM's tests)."""
    actions = _actions(objects, direction)
    got, expected, _, _ = run_flow(pair, actions, video=list(video), name=flow)
    num_prompt_calls = sum(1 for kind, _ in actions if kind == "forward")
    session = _last_output_per_frame(got, num_prompt_calls)
    reference = _last_output_per_frame(expected, num_prompt_calls)
    prompts = functional.make_prompts(objects, SIZE, SIZE)
    with jax.default_matmul_precision("highest"):
        out = functional.propagate(pair.ours.params, pair.ours.config, video, prompts,
                                   reverse=direction == "reverse", both_directions=direction == "both")
    visited = np.flatnonzero(np.asarray(out["visited"])).tolist()
    assert visited == sorted(session), f"{flow}: visited frames {visited}, the session yields {sorted(session)}"
    worst_session = worst_reference = 0.0
    for frame, ours in session.items():
        rows = [list(ours.object_ids).index(i + 1) for i in range(len(objects))]  # sessions order ids by first use
        ref = to_numpy(reference[frame].pred_masks).astype(np.float64)[rows]
        scale = max(1.0, float(np.abs(ref[ref > -1000]).max()) if (ref > -1000).any() else 1.0)
        masks = np.asarray(out["pred_masks"][frame], np.float64)
        d_session = float(np.abs(masks - np.asarray(ours.pred_masks)[rows]).max()) / scale
        d_reference = float(np.abs(masks - ref).max()) / scale
        scores = np.asarray(out["object_score_logits"][frame])
        assert d_session <= 1e-5, f"{flow} frame {frame}: |functional - session| = {d_session:.3g} x scale"
        assert d_reference <= 1e-3, f"{flow} frame {frame}: |functional - transformers| = {d_reference:.3g} x scale"
        np.testing.assert_allclose(scores, np.asarray(ours.object_score_logits)[rows], atol=1e-5 * scale, rtol=1e-6)
        np.testing.assert_allclose(scores, to_numpy(reference[frame].object_score_logits)[rows], atol=1e-3 * scale)
        worst_session, worst_reference = max(worst_session, d_session), max(worst_reference, d_reference)
    unvisited = np.asarray(out["pred_masks"])[~np.asarray(out["visited"])]
    assert (unvisited == -1024).all()
    print(f"FUNCTIONAL {flow}: frames={len(session)} max|functional - session|/scale={worst_session:.3g} "
          f"max|functional - transformers|/scale={worst_reference:.3g}")


def test_prepare_equals_the_processor():
    rng = np.random.default_rng(0)
    config = small_config()
    for height, width in ((200, 330), (256, 256), (512, 300)):
        frames = rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)
        expected, _ = preprocess_images(list(frames), size=config.image_size)
        got = jax.jit(functional.prepare, static_argnums=0)(config, frames)
        np.testing.assert_array_equal(np.asarray(got), expected.transpose(0, 2, 3, 1))


def test_vmap_over_videos_equals_the_loop(pair, video):
    """Two videos with different prompts (frames, kinds, counts), vmapped, equal each one run alone."""
    videos = np.stack([video[:8], video[8:16][::-1]])
    prompts = [functional.make_prompts([[{"frame": 0, "points": [[70, 80]], "labels": [1]}],
                                        [{"frame": 1, "box": [150, 120, 210, 180]}]], SIZE, SIZE),
               functional.make_prompts([[{"frame": 3, "box": [30, 50, 100, 120]}],
                                        [{"frame": 2, "points": [[180, 150]], "labels": [1]}]], SIZE, SIZE)]
    batch = jax.tree_util.tree_map(lambda *x: np.stack(x), *prompts)
    params, config = pair.ours.params, pair.ours.config
    with jax.default_matmul_precision("highest"):
        batched = jax.vmap(lambda f, p: functional.propagate(params, config, f, p, both_directions=True))(
            videos, batch)
        for i in range(2):
            alone = functional.propagate(params, config, videos[i], prompts[i], both_directions=True)
            for key in alone:
                np.testing.assert_allclose(np.asarray(batched[key][i]), np.asarray(alone[key]), atol=1e-5,
                                           err_msg=key)
    assert np.asarray(batched["visited"]).all()


def _prompts(**changes):
    base = functional.make_prompts([[{"frame": 0, "points": [[70, 80]], "labels": [1]}]], SIZE, SIZE)
    return base._replace(**changes)


@pytest.mark.parametrize("change, error, field", [
    (dict(frame_idx=np.array([[25]], np.int32)), ValueError, "prompts.frame_idx"),
    (dict(frame_idx=np.array([[-1]], np.int32)), ValueError, "no prompt"),
    (dict(points=np.zeros((1, 1, 2, 2), np.float32)), ValueError, "prompts.labels: expected shape (1, 1, 2)"),
    (dict(points=np.zeros((1, 2, 1, 2), np.float32)), ValueError, "prompts.points: expected shape (1, 1, 1, 2)"),
    (dict(labels=np.zeros((2, 1, 1), np.int32)), ValueError, "prompts.labels"),
    (dict(labels=np.full((1, 1, 1), -1, np.int32)), ValueError, "no points, box or mask"),
    (dict(points=np.full((1, 1, 1, 2), 300.0, np.float32)), ValueError, "prompts.points[0][0][0]"),
    (dict(boxes=np.zeros((1, 1, 4), np.float32)), ValueError, "prompts.has_box"),
])
def test_bad_prompts_are_named(pair, video, change, error, field):
    with pytest.raises(error, match=re.escape(field)):
        functional.propagate(pair.ours.params, pair.ours.config, video, _prompts(**change))


def test_bad_frames_are_named(pair, video):
    prompts = _prompts()
    with pytest.raises(TypeError, match="frames: expected dtype uint8"):
        functional.propagate(pair.ours.params, pair.ours.config, video.astype(np.float32), prompts)
    with pytest.raises(ValueError, match="frames: expected shape"):
        functional.propagate(pair.ours.params, pair.ours.config, video[..., :2], prompts)
    with pytest.raises(ValueError, match=r"objects\[0\]: expected a non-empty list"):
        functional.make_prompts([[]], SIZE, SIZE)


def test_one_program_per_shape(pair, video):
    """Other prompt values (frames, points, boxes, direction flags aside) reuse the compiled program."""
    params, config = pair.ours.params, pair.ours.config
    first = functional.make_prompts([[{"frame": 0, "points": [[70, 80]], "labels": [1]}],
                                     [{"frame": 2, "box": [150, 120, 210, 180]}]], SIZE, SIZE)
    second = functional.make_prompts([[{"frame": 4, "points": [[90, 60]], "labels": [0]}],
                                      [{"frame": 1, "box": [10, 20, 110, 120]}]], SIZE, SIZE)
    functional.propagate(params, config, video[:6], first)
    compiled = functional._propagate._cache_size()
    functional.propagate(params, config, video[6:12], second)
    functional.propagate(params, config, video[6:12], second, num_frames=5)
    assert functional._propagate._cache_size() == compiled
