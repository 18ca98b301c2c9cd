"""Parity of video tracking against transformers `Sam2VideoModel`, flow by flow (randomised weights, small
config, 24+ frames), plus compilation counts, state size and bad input."""

from __future__ import annotations

import copy
import numpy as np
import pytest
import torch
import transformers
from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

import jax
from sam2_jax.config import small_config
from sam2_jax import Sam2VideoModel, Sam2VideoProcessor
from sam2_jax.tracking import tracker
from reference import hf_config, randomize_, to_numpy

SIZE = 256
NUM_FRAMES = 24


def _video(num_frames=NUM_FRAMES, seed=0):
    """Frames at the model's size (the processors' resize is then a no-op): moving blobs on a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    frames = []
    for t in range(num_frames):
        base = np.stack([xx / SIZE * 200, yy / SIZE * 200, np.full_like(xx, 90)], -1)
        for k, (cx, cy, r) in enumerate([(60 + 4 * t, 80, 30), (180 - 3 * t, 150 + t, 25)]):
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            base[inside] = [220, 40 + 100 * k, 30]
        frames.append(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8))
    return frames


class Pair:
    """The same randomised weights in transformers and in sam2-jax."""

    def __init__(self, config, tmp_path, seed=1, bias_frames=8):
        torch.manual_seed(seed)
        self.hf = self.reference_model(config, seed)
        size = {"height": SIZE, "width": SIZE}
        self.hf_processor = transformers.Sam2VideoProcessor(
            image_processor=transformers.Sam2ImageProcessor(size=size), video_processor=Sam2VideoVideoProcessor(
                size=size))
        self._bias_object_scores(bias_frames)
        self.hf.save_pretrained(tmp_path)
        self.folder = tmp_path
        self.ours = Sam2VideoModel.from_pretrained(tmp_path)
        self.processor = Sam2VideoProcessor(size=SIZE)

    @staticmethod
    def reference_model(config, seed):
        """transformers' model of `config` with every parameter random."""
        return randomize_(transformers.Sam2VideoModel(hf_config(config)).eval(), seed=seed)

    @torch.no_grad()
    def _bias_object_scores(self, num_frames):
        """Random weights give nearly constant object scores; spread them and centre them on a two-object run of
        `num_frames` so that objects are present on some frames and absent (-1024 masks) on others."""
        head = self.hf.mask_decoder.pred_obj_score_head.proj_out
        head.weight.mul_(100.0)
        session = self.hf_processor.init_video_session(video=_video(num_frames=num_frames), inference_device="cpu")
        self.hf_processor.add_inputs_to_inference_session(
            session, frame_idx=0, obj_ids=[1, 2], input_points=[[[[70, 80]], [[180, 150]]]], input_labels=[[[1], [1]]])
        scores = [o.object_score_logits for o in self.hf.propagate_in_video_iterator(session, start_frame_idx=0)]
        head.bias.sub_(torch.cat(scores).median())


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return Pair(small_config(), tmp_path_factory.mktemp("video21"))


def _run(model, processor, session, actions, hf: bool):
    outputs = []
    for kind, arg in actions:
        if kind == "add":
            processor.add_inputs_to_inference_session(session, **arg)
        elif kind == "forward":
            outputs.append(model(inference_session=session, frame_idx=arg))
        elif kind == "propagate":
            outputs.extend(model.propagate_in_video_iterator(session, **arg))
        elif kind == "stream":
            frame, add = arg
            inputs = processor(images=frame, return_tensors="pt" if hf else "jax")
            if add is not None:
                processor.add_inputs_to_inference_session(session, original_size=inputs["original_sizes"][0], **add)
            outputs.append(model(inference_session=session, frame=inputs["pixel_values"][0]))
    return outputs


def run_flow(pair, actions, video=None, name="flow", **session_options):
    """Run `actions` on both implementations and compare every output frame."""
    video = _video() if video is None else video
    with torch.no_grad():  # transformers empties the caller's obj_ids lists: give each run its own copy
        hf_session = pair.hf_processor.init_video_session(video=video if video else None,
                                                          inference_device=pair.hf.device)
        expected = _run(pair.hf, pair.hf_processor, hf_session, copy.deepcopy(actions), hf=True)
    with jax.default_matmul_precision("highest"):
        session = pair.processor.init_video_session(video=video if video else None, **session_options)
        got = _run(pair.ours, pair.processor, session, copy.deepcopy(actions), hf=False)
    assert [o.frame_idx for o in got] == [o.frame_idx for o in expected]
    assert len(got) > 0
    report = []
    first_prompted = True
    for ours, ref in zip(got, expected):
        assert list(ours.object_ids) == list(ref.object_ids)
        a, b = np.asarray(ours.pred_masks, np.float64), to_numpy(ref.pred_masks).astype(np.float64)
        assert a.shape == b.shape
        scale = max(1.0, float(np.abs(b[b > -1000]).max()) if (b > -1000).any() else 1.0)
        diff = float(np.abs(a - b).max())
        tol = (1e-4 if first_prompted else 1e-3) * scale
        first_prompted = False
        inter = np.logical_and(a > 0, b > 0).sum()
        union = np.logical_or(a > 0, b > 0).sum()
        iou = 1.0 if union == 0 else inter / union
        report.append((ours.frame_idx, diff, iou))
        assert diff <= tol, f"{name} frame {ours.frame_idx}: max|diff| {diff:.3g} > {tol:.3g}"
        assert iou >= 0.999, f"{name} frame {ours.frame_idx}: binarised IoU {iou:.5f}"
        # ravel: transformers' EdgeTAM gives (N,) on a mask-prompted frame, (N, 1) elsewhere
        np.testing.assert_allclose(np.asarray(ours.object_score_logits).ravel(),
                                   to_numpy(ref.object_score_logits).ravel(),
                                   atol=1e-3 * scale, err_msg=f"{name} frame {ours.frame_idx} scores")
    worst = max(report, key=lambda r: r[1])
    absent = sum(int((to_numpy(o.pred_masks) <= -1000).all(axis=(1, 2, 3)).sum()) for o in expected)
    present = sum(len(o.object_ids) for o in expected) - absent
    print(f"PARITY {name}: frames={len(report)} prompted max|diff|={report[0][1]:.3g} worst tracked "
          f"max|diff|={worst[1]:.3g} (frame {worst[0]}) min IoU={min(r[2] for r in report):.5f} "
          f"absent/present object masks={absent}/{present}")
    return got, expected, absent, present


def pts(*xy):
    return [[[list(p) for p in xy]]]


ONE_CLICK = [("add", dict(frame_idx=0, obj_ids=1, input_points=pts((70, 80)), input_labels=[[[1]]])),
             ("forward", 0), ("propagate", {})]


def test_one_click(pair):
    run_flow(pair, ONE_CLICK, name="one click")


def test_several_clicks(pair):
    run_flow(pair, [("add", dict(frame_idx=0, obj_ids=1, input_points=pts((70, 80), (90, 60), (200, 200)),
                                 input_labels=[[[1, 1, 0]]])), ("forward", 0), ("propagate", {})],
             name="several clicks")


def test_box(pair):
    run_flow(pair, [("add", dict(frame_idx=0, obj_ids=1, input_boxes=[[[30, 50, 100, 120]]])), ("forward", 0),
                    ("propagate", {})], name="box")


def test_box_and_click(pair):
    run_flow(pair, [("add", dict(frame_idx=0, obj_ids=1, input_boxes=[[[30, 50, 100, 120]]],
                                 input_points=pts((70, 80)), input_labels=[[[1]]])), ("forward", 0),
                    ("propagate", {})], name="box + click")


def test_two_objects_with_ragged_clicks(pair):
    points = [[[[70, 80], [75, 90], [10, 10]], [[180, 150]]]]
    _, _, absent, present = run_flow(pair, [("add", dict(frame_idx=0, obj_ids=[2, 3], input_points=points, input_labels=[[[1, 1, 0], [1]]])),
                    ("forward", 0), ("propagate", {})], name="two objects ragged")
    assert absent > 0 and present > 0, "the flow should exercise present and absent objects"


def test_batched_boxes(pair):
    run_flow(pair, [("add", dict(frame_idx=0, obj_ids=[2, 3], input_boxes=[[[30, 50, 100, 120], [150, 120, 210, 180]]])),
                    ("propagate", {"start_frame_idx": 0})], name="batched boxes")


def test_mask_prompt(pair):
    mask = np.zeros((SIZE, SIZE), bool)
    mask[50:110, 30:100] = True
    run_flow(pair, [("add", dict(frame_idx=0, obj_ids=1, input_masks=mask)), ("forward", 0), ("propagate", {})],
             name="mask prompt")


def test_refinement_click_on_tracked_frame_then_propagate_again(pair):
    actions = ONE_CLICK + [("add", dict(frame_idx=10, obj_ids=1, input_points=pts((100, 85)), input_labels=[[[0]]])),
                           ("forward", 10), ("propagate", {"start_frame_idx": 10, "max_frame_num_to_track": 8}),
                           ("propagate", {"start_frame_idx": 0})]
    run_flow(pair, actions, name="refinement")


def test_object_first_prompted_on_a_later_frame(pair):
    actions = ONE_CLICK + [("add", dict(frame_idx=12, obj_ids=5, input_points=pts((180, 150)), input_labels=[[[1]]])),
                           ("forward", 12), ("propagate", {"start_frame_idx": 12})]
    run_flow(pair, actions, name="later object")


def test_reverse(pair):
    actions = [("add", dict(frame_idx=20, obj_ids=1, input_points=pts((140, 80)), input_labels=[[[1]]])),
               ("forward", 20), ("propagate", {"reverse": True}), ("propagate", {"start_frame_idx": 20})]
    run_flow(pair, actions, name="reverse")


def test_start_frame_and_max_frames(pair):
    actions = [("add", dict(frame_idx=5, obj_ids=1, input_points=pts((90, 80)), input_labels=[[[1]]])),
               ("propagate", {"start_frame_idx": 5, "max_frame_num_to_track": 6}),
               ("propagate", {"start_frame_idx": 3, "max_frame_num_to_track": 2, "reverse": True}),
               ("propagate", {"start_frame_idx": 0, "max_frame_num_to_track": 0, "reverse": True})]
    run_flow(pair, actions, name="start/max frames")


def test_short_video_offline_and_streaming(pair):
    video = _video(num_frames=9, seed=3)
    first = dict(obj_ids=1, input_points=pts((70, 80)), input_labels=[[[1]]])
    run_flow(pair, [("add", dict(frame_idx=0, **first)), ("propagate", {"start_frame_idx": 0})], video=video,
             name="short offline")
    stream = [("stream", (frame, dict(frame_idx=0, **first) if i == 0 else None)) for i, frame in enumerate(video)]
    run_flow(pair, stream, video=[], name="short streaming")


def test_streaming_long(pair):
    video = _video(num_frames=NUM_FRAMES, seed=4)
    first = dict(frame_idx=0, obj_ids=[1, 2], input_points=[[[[70, 80]], [[180, 150]]]], input_labels=[[[1], [1]]])
    stream = [("stream", (frame, first if i == 0 else None)) for i, frame in enumerate(video)]
    run_flow(pair, stream, video=[], name="streaming")


def test_sam2_0_config(tmp_path):
    pair20 = Pair(small_config(version="2.0"), tmp_path, seed=7)
    run_flow(pair20, ONE_CLICK + [("add", dict(frame_idx=8, obj_ids=2, input_boxes=[[[150, 120, 210, 180]]])),
                                  ("forward", 8), ("propagate", {"start_frame_idx": 8})], name="sam2.0")


# ------------------------------------------------------------------------------------------ beyond parity
def _session(pair, video=None, **options):
    session = pair.processor.init_video_session(video=_video() if video is None else video, **options)
    return session


def _snapshot(session):
    """What a failed call must leave unchanged."""
    return (session.obj_ids, [dict(t.point_inputs) for t in session._objects],
            [dict(t.mask_inputs) for t in session._objects], [dict(t.cond_outputs) for t in session._objects],
            [dict(t.tracked) for t in session._objects], list(session.obj_with_new_inputs), session.num_streamed)


def test_bad_input_raises_and_leaves_the_session_unchanged(pair):
    model, processor = pair.ours, pair.processor
    session = _session(pair)
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=pts((70, 80)),
                                              input_labels=[[[1]]])
    model(inference_session=session, frame_idx=0)
    before = _snapshot(session)
    mask = np.ones((SIZE, SIZE), bool)
    cases = [
        (lambda: model(inference_session=session, frame_idx=NUM_FRAMES), ValueError, "frame_idx"),
        (lambda: model(inference_session=session, frame_idx=-1), ValueError, "frame_idx"),
        (lambda: list(model.propagate_in_video_iterator(session, start_frame_idx=NUM_FRAMES + 3)), ValueError,
         "start_frame_idx"),
        (lambda: processor.add_inputs_to_inference_session(session, frame_idx=NUM_FRAMES, obj_ids=1,
                                                           input_points=pts((1, 1)), input_labels=[[[1]]]),
         ValueError, "frame_idx"),
        (lambda: processor.add_inputs_to_inference_session(session, frame_idx=2, obj_ids=1, input_points=pts((1, 1)),
                                                           input_labels=[[[1, 1]]]), ValueError, "labels"),
        (lambda: processor.add_inputs_to_inference_session(session, frame_idx=2, obj_ids=1, input_points=pts((1, 1)),
                                                           input_labels=[[[1]]], input_masks=mask), ValueError,
         "input_masks"),
        (lambda: processor.add_inputs_to_inference_session(session, frame_idx=2, obj_ids=[1, 2],
                                                           input_points=pts((1, 1)), input_labels=[[[1]]]),
         ValueError, "number of object ids"),
        (lambda: processor.add_inputs_to_inference_session(session, frame_idx=2, obj_ids=1,
                                                           input_points=pts((SIZE + 5, 1)), input_labels=[[[1]]]),
         ValueError, "input_points"),
        (lambda: session.remove_object(99), ValueError, "obj_id"),
        (lambda: session.clear_prompts_in_frame(0, 99), ValueError, "obj_id"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
        assert _snapshot(session) == before


def test_propagating_with_no_prompts_and_unseen_objects(pair):
    session = _session(pair)
    with pytest.raises(ValueError, match="no objects"):
        list(pair.ours.propagate_in_video_iterator(session, start_frame_idx=0))
    pair.processor.add_inputs_to_inference_session(session, frame_idx=3, obj_ids=1, input_points=pts((70, 80)),
                                                   input_labels=[[[1]]])
    with pytest.raises(ValueError, match="start_frame_idx"):
        list(pair.ours.propagate_in_video_iterator(session))


def test_points_and_mask_on_one_frame_for_one_object(pair):
    session = _session(pair)
    pair.processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=pts((70, 80)),
                                                   input_labels=[[[1]]])
    session._objects[0].mask_inputs[0] = np.ones((SIZE, SIZE, 1), np.float32)  # as a raw session edit could do
    before = _snapshot(session)
    with pytest.raises(ValueError, match="simultaneously"):
        pair.ours(inference_session=session, frame_idx=0)
    assert _snapshot(session) == before


def test_streaming_errors_leave_the_session_unchanged(pair):
    session = pair.processor.init_video_session()
    frame = pair.processor(images=_video(1)[0])["pixel_values"][0]
    with pytest.raises(ValueError, match="no objects"):
        pair.ours(inference_session=session, frame=frame)
    with pytest.raises(ValueError, match="original_size"):
        pair.processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=pts((5, 5)),
                                                       input_labels=[[[1]]])
    pair.processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=pts((5, 5)),
                                                   input_labels=[[[1]]], original_size=(SIZE, SIZE))
    pair.ours(inference_session=session, frame=frame)
    before = _snapshot(session)
    with pytest.raises(ValueError, match="frame"):
        pair.ours(inference_session=session, frame=np.zeros((3, SIZE // 2, SIZE // 2), np.float32))
    assert _snapshot(session) == before


def test_refinement_survives_repropagation_only_with_add_all_frames_to_correct_as_cond(pair):
    """By default (both references) a click on a tracked frame is overwritten when tracking passes it again."""
    results = {}
    for option in (False, True):
        session = _session(pair, add_all_frames_to_correct_as_cond=option)
        processor, model = pair.processor, pair.ours
        processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=pts((70, 80)),
                                                  input_labels=[[[1]]])
        list(model.propagate_in_video_iterator(session, start_frame_idx=0, max_frame_num_to_track=12))
        processor.add_inputs_to_inference_session(session, frame_idx=6, obj_ids=1,
                                                  input_points=pts((100, 85), (30, 200)), input_labels=[[[1, 0]]])
        refined = np.asarray(model(inference_session=session, frame_idx=6).pred_masks)
        again = {o.frame_idx: np.asarray(o.pred_masks) for o in model.propagate_in_video_iterator(
            session, start_frame_idx=0, max_frame_num_to_track=12)}
        results[option] = np.array_equal(again[6], refined)
    assert results == {False: False, True: True}


def test_clear_non_cond_mem_around_input_drops_nearby_tracked_memories(pair):
    session = _session(pair, clear_non_cond_mem_around_input=True, add_all_frames_to_correct_as_cond=True)
    pair.processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=pts((70, 80)),
                                                   input_labels=[[[1]]])
    list(pair.ours.propagate_in_video_iterator(session, start_frame_idx=0))
    pair.processor.add_inputs_to_inference_session(session, frame_idx=12, obj_ids=1, input_points=pts((100, 85)),
                                                   input_labels=[[[1]]])
    pair.ours(inference_session=session, frame_idx=12)
    kept = sorted(session._objects[0].memories)
    r = pair.ours.config.num_maskmem
    assert not any(12 - r <= f <= 12 + r for f in kept)
    assert 1 in kept and NUM_FRAMES - 1 in kept


def test_remove_object_and_clear_prompts(pair):
    session = _session(pair)
    pair.processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=[1, 2],
                                                   input_points=[[[[70, 80]], [[180, 150]]]],
                                                   input_labels=[[[1], [1]]])
    both = list(pair.ours.propagate_in_video_iterator(session, start_frame_idx=0, max_frame_num_to_track=4))
    session.remove_object(1)
    assert session.obj_ids == [2]
    only = list(pair.ours.propagate_in_video_iterator(session, start_frame_idx=0, max_frame_num_to_track=4))
    for a, b in zip(both, only):
        np.testing.assert_allclose(np.asarray(b.pred_masks)[0], np.asarray(a.pred_masks)[1], atol=1e-5)
    session.clear_prompts_in_frame(0, 2)
    assert 0 not in session._objects[0].point_inputs


def test_compiles_each_step_function_once_over_200_frames_with_three_objects(tmp_path):
    config = small_config(image_size=128)
    model = Sam2VideoModel.from_config(config, seed=0)
    processor = Sam2VideoProcessor(size=128)
    frames = [f[:128, :128] for f in _video(num_frames=40, seed=5)] * 5  # 200 frames
    session = processor.init_video_session(video=np.stack(frames))
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=[1, 2, 3],
                                              input_points=[[[[30, 40]], [[90, 70]], [[60, 100]]]],
                                              input_labels=[[[1], [1], [1]]])
    before, count = set(model.programs.compile_seconds), len(model.programs)  # the config's, this process's
    outputs = list(model.propagate_in_video_iterator(session, start_frame_idx=0))
    assert len(outputs) == 200
    compiled = set(model.programs.compile_seconds) - before
    print(f"COMPILATIONS over 200 frames x 3 objects: {sorted(compiled)}")
    rows = tracker.object_bucket(3)  # 4, or 16 on the CPU
    assert compiled <= {"encode[frames=4]", f"scan[rows={rows}, cond=1, points=8]", f"step[rows={rows}, cond=1, points=8]"}
    assert len(model.programs) - count == len(compiled)  # each once


def test_streaming_state_size_is_flat(tmp_path):
    config = small_config(image_size=128)
    model = Sam2VideoModel.from_config(config, seed=0)
    processor = Sam2VideoProcessor(size=128)
    session = processor.init_video_session()
    sizes = {}
    frames = [f[:128, :128] for f in _video(num_frames=20, seed=6)]
    for i in range(200):  # the memory ring (7 frames) and the pointer window (16) are full by frame 50
        inputs = processor(images=frames[i % len(frames)])
        if i == 0:
            processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=[1, 2],
                                                      input_points=[[[[30, 40]], [[90, 70]]]],
                                                      input_labels=[[[1], [1]]],
                                                      original_size=inputs["original_sizes"][0])
        model(inference_session=session, frame=inputs["pixel_values"][0])
        if i + 1 in (50, 200):  # the bytes held, and the per-frame bookkeeping (frames tracked, memories)
            sizes[i + 1] = (session.nbytes, [(len(t.tracked), len(t.memories)) for t in session._objects])
    print(f"STATE BYTES streaming: {sizes}")
    assert sizes[50] == sizes[200]


@pytest.mark.slow
def test_full_tiny_at_1024_two_objects(tmp_path, monkeypatch):
    from sam2_jax.config import PRESETS

    monkeypatch.setattr(__import__(__name__), "SIZE", 1024)
    pair = Pair(PRESETS["sam2.1-hiera-tiny"], tmp_path, seed=11, bias_frames=2)  # 8 frames at 1024 px: 50 s
    run_flow(pair, [("add", dict(frame_idx=0, obj_ids=[1, 2], input_points=[[[[280, 320]], [[720, 600]]]],
                                 input_labels=[[[1], [1]]])), ("forward", 0), ("propagate", {})],
             video=_video(num_frames=3, seed=8), name="tiny@1024 two objects")


def test_propagate_in_video_both_directions_covers_the_video(pair):
    session = _session(pair)
    pair.processor.add_inputs_to_inference_session(session, frame_idx=10, obj_ids=1, input_points=pts((120, 80)),
                                                   input_labels=[[[1]]])
    outputs = pair.ours.propagate_in_video(session, start_frame_idx=10, both_directions=True)
    assert sorted(outputs) == list(range(NUM_FRAMES))
    assert all(o.pred_masks.shape == (1, 1, 64, 64) for o in outputs.values())


def test_more_conditioning_frames_than_slots_matches_max_cond_frame_num(pair, monkeypatch):
    """Three prompted frames, two slots: transformers with max_cond_frame_num=2 picks the same closest frames.
    Compared up to frame 8: past it transformers also takes the pointer of the unselected frame 0."""
    monkeypatch.setattr(pair.hf.config, "max_cond_frame_num", 2)
    actions = []
    for f in (0, 8, 16):
        actions += [("add", dict(frame_idx=f, obj_ids=1, input_points=pts((70 + 4 * f, 80)), input_labels=[[[1]]])),
                    ("forward", f)]
    actions.append(("propagate", {"start_frame_idx": 0, "max_frame_num_to_track": 8}))
    run_flow(pair, actions, name="closest conditioning frames", max_conditioning_frames=2)


def test_more_conditioning_frames_than_slots_keeps_the_closest(pair):
    """With capacity 2 and prompts on frames 0, 8 and 16, frame 18 attends to 16 and 8 (closest before, then
    nearest): it must equal a session that only ever had those two prompts' memories in reach."""
    model, processor = pair.ours, pair.processor
    session = _session(pair, max_conditioning_frames=2)
    for f in (0, 8, 16):
        processor.add_inputs_to_inference_session(session, frame_idx=f, obj_ids=1, input_points=pts((70 + 4 * f, 80)),
                                                  input_labels=[[[1]]])
        model(inference_session=session, frame_idx=f)
    assert sorted(session._planner.cond_frames[0]) == [8, 16]
    out = model(inference_session=session, frame_idx=2)  # closest before: 0, closest after: 8
    assert sorted(session._planner.cond_frames[0]) == [0, 8]
    assert out.pred_masks.shape == (1, 1, 64, 64)
    from sam2_jax.tracking.plan import select_closest_cond_frames

    assert select_closest_cond_frames(18, [0, 8, 16], 2) == [16, 8]
    assert select_closest_cond_frames(5, [0, 8, 16], 2) == [0, 8]
    assert select_closest_cond_frames(5, [0, 8, 16], 5) == [0, 8, 16]
