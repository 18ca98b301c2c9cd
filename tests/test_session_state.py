"""The session's transformers accessors (add/remove point and mask inputs, get_output, store_output, get_frame
and the state views): the same call sequence on transformers' `Sam2VideoInferenceSession` and ours gives the
same outputs (parity, randomised weights), and every accessor refuses bad arguments without changing anything."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from reference import to_numpy
from test_video_model import SIZE, Pair, _video
from sam2_jax.config import small_config

NUM_FRAMES = 12
KEYS = ("pred_masks", "object_score_logits", "object_pointer", "maskmem_features")
WORST: dict[str, float] = {}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return Pair(small_config(), tmp_path_factory.mktemp("session_state"))


def _np(x):
    return to_numpy(x).astype(np.float64) if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def _check(name, ours, ref, atol):
    a, b = _np(ours), _np(ref)
    assert a.shape == b.shape, f"{name}: shape {a.shape} != {b.shape}"
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    key = name.split(" frame")[0]
    WORST[key] = max(WORST.get(key, 0.0), diff)
    assert diff <= atol, f"{name}: max|diff| {diff:.3g} > {atol}"


def _both(pair, video):
    hf = pair.hf_processor.init_video_session(video=video, inference_device="cpu")
    ours = pair.processor.init_video_session(video=video)
    return hf, ours


def _forward(pair, hf, ours, frame_idx, name):
    with torch.no_grad():
        ref = pair.hf(inference_session=hf, frame_idx=frame_idx)
    got = pair.ours(inference_session=ours, frame_idx=frame_idx)
    _check(f"masks {name}", got.pred_masks, ref.pred_masks, 1e-3 * max(1.0, float(np.abs(_np(ref.pred_masks)).max())))
    return got, ref


def _compare_outputs(hf, ours, frame_idx, cond, keys=KEYS):
    for key in keys:
        ref = hf.get_output(0, frame_idx, key, is_conditioning_frame=cond)
        got = ours.get_output(0, frame_idx, key, is_conditioning_frame=cond)
        assert (ref is None) == (got is None), (key, frame_idx, cond)
        if ref is not None:
            scale = max(1.0, float(np.abs(_np(ref)).max()))
            _check(f"get_output {key} frame {frame_idx}", got, ref, (2e-2 if key == "maskmem_features" else 1e-3) * scale)


def test_accessor_sequence_matches_transformers(pair):
    video = _video(num_frames=NUM_FRAMES)
    hf, ours = _both(pair, video)
    with torch.no_grad(), jax.default_matmul_precision("highest"):
        for proc, session in ((pair.hf_processor, hf), (pair.processor, ours)):
            proc.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=[1], input_points=[[[[70, 80]]]],
                                                 input_labels=[[[1]]])
        _forward(pair, hf, ours, 0, "frame 0")
        _compare_outputs(hf, ours, 0, True)
        # get_frame and processed_frames: the processor's pixel values.
        _check("frames", ours.get_frame(3), hf.get_frame(3), 1e-4)
        assert len(ours.processed_frames) == len(hf.processed_frames) == NUM_FRAMES
        # add_point_inputs straight on the session (model-input pixels), then the model on that frame.
        points = {"point_coords": torch.tensor([[[[100.0, 90.0], [40.0, 60.0]]]]),
                  "point_labels": torch.tensor([[[1, 0]]], dtype=torch.int32)}
        hf.add_point_inputs(0, 3, points)
        ours.add_point_inputs(0, 3, {k: v.numpy() for k, v in points.items()})
        _check("inputs", ours.point_inputs_per_obj[0][3]["point_coords"], hf.point_inputs_per_obj[0][3]["point_coords"], 0)
        hf.obj_with_new_inputs, ours.obj_with_new_inputs = [1], [1]
        _forward(pair, hf, ours, 3, "frame 3 (points)")
        _compare_outputs(hf, ours, 3, True)
        # add_mask_inputs on a new frame, the model, then remove it: the stored output stays.
        mask = torch.zeros(1, 1, SIZE, SIZE)
        mask[..., 100:160, 40:120] = 1.0
        for session in (hf, ours):
            session.add_mask_inputs(0, 6, mask if session is hf else mask.numpy())
            session.obj_with_new_inputs = [1]
        _forward(pair, hf, ours, 6, "frame 6 (mask)")
        for session in (hf, ours):
            session.remove_mask_inputs(0, 6)
            session.remove_point_inputs(0, 3)
        assert 6 not in ours.mask_inputs_per_obj[0] and 3 not in ours.point_inputs_per_obj[0]
        # store_output: a changed conditioning pointer and memory (one key, then a dict), used by later frames.
        pointer = hf.get_output(0, 0, "object_pointer") * 0.5
        memory = hf.get_output(0, 3, "maskmem_features") * 0.5
        hf.store_output(0, 0, "object_pointer", pointer)
        ours.store_output(0, 0, "object_pointer", pointer.numpy())
        stored = {k: hf.get_output(0, 3, k) for k in (*KEYS, "maskmem_pos_enc")}
        stored["maskmem_features"] = memory
        hf.store_output(0, 3, output_value=stored)
        ours.store_output(0, 3, output_value={k: to_numpy(v) if v.dtype != torch.bfloat16 else v.float().numpy()
                                              for k, v in stored.items()})
        _compare_outputs(hf, ours, 0, True)
        _compare_outputs(hf, ours, 3, True)
        ref_frames = list(pair.hf.propagate_in_video_iterator(hf, start_frame_idx=0))
        got_frames = list(pair.ours.propagate_in_video_iterator(ours, start_frame_idx=0))
        assert [o.frame_idx for o in got_frames] == [o.frame_idx for o in ref_frames]
        for got, ref in zip(got_frames, ref_frames):
            _check(f"masks propagation frame {got.frame_idx}", got.pred_masks, ref.pred_masks,
                   1e-3 * max(1.0, float(np.abs(_np(ref.pred_masks)).max())))
        for f in (1, 2, 8):
            _compare_outputs(hf, ours, f, False)
        # A tracked frame's mask and score stored (they only change what get_output returns), then read back.
        masks = hf.get_output(0, 2, "pred_masks", is_conditioning_frame=False) - 1.0
        hf.store_output(0, 2, "pred_masks", masks, is_conditioning_frame=False)
        ours.store_output(0, 2, "pred_masks", masks.numpy(), is_conditioning_frame=False)
        _compare_outputs(hf, ours, 2, False)
        assert ours.frames_tracked_per_obj == {0: {f: dict(v) for f, v in hf.frames_tracked_per_obj[0].items()}}
        assert set(ours.output_dict_per_obj[0]["cond_frame_outputs"]) == set(
            hf.output_dict_per_obj[0]["cond_frame_outputs"])
        # A tracked frame's memory stored, then the frames after it tracked again.
        memory = hf.get_output(0, 8, "maskmem_features", is_conditioning_frame=False) * 0.25
        hf.store_output(0, 8, "maskmem_features", memory, is_conditioning_frame=False)
        ours.store_output(0, 8, "maskmem_features", memory.float().numpy(), is_conditioning_frame=False)
        for f in (9, 10):
            _forward(pair, hf, ours, f, f"frame {f} (after a stored memory)")
    print("SESSION PARITY max|diff|: " + ", ".join(f"{k}={v:.3g}" for k, v in sorted(WORST.items())))


@pytest.fixture(scope="module")
def tracked(pair):
    session = pair.processor.init_video_session(video=_video(num_frames=4))
    pair.processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=[1], input_points=[[[[70, 80]]]],
                                                   input_labels=[[[1]]])
    pair.ours(inference_session=session, frame_idx=0)
    return session


def _state(session):
    return (copy.deepcopy(session.point_inputs_per_obj), copy.deepcopy(session.mask_inputs_per_obj),
            {k: np.asarray(v) for k, v in session.output_dict_per_obj[0]["cond_frame_outputs"][0].items()})


BAD = [
    ("add_point_inputs", (1, 0, {"point_coords": np.zeros((1, 1, 1, 2)), "point_labels": np.ones((1, 1, 1), int)}),
     ValueError, "obj_idx: expected an index in \\[0, 0\\]"),
    ("add_point_inputs", (0, 9, {"point_coords": np.zeros((1, 1, 1, 2)), "point_labels": np.ones((1, 1, 1), int)}),
     ValueError, "frame_idx"),
    ("add_point_inputs", (0, 1, {"point_coords": np.zeros((1, 1, 2))}), ValueError, "inputs: expected a dict"),
    ("add_point_inputs", (0, 1, {"point_coords": np.zeros((1, 1, 2)), "point_labels": np.ones((1, 1), int)}),
     ValueError, "point_coords'\\]: expected shape"),
    ("add_point_inputs", (0, 1, {"point_coords": np.zeros((1, 1, 1, 2)), "point_labels": np.ones((1, 1, 2), int)}),
     ValueError, "point_labels'\\]: expected shape"),
    ("add_point_inputs", (0, 1, {"point_coords": np.full((1, 1, 1, 2), 900.0), "point_labels": np.ones((1, 1, 1), int)}),
     ValueError, "coordinates in"),
    ("add_point_inputs", ("0", 1, {}), TypeError, "obj_idx: expected an int"),
    ("add_mask_inputs", (0, 1, np.zeros((1, 1, 64, 64))), ValueError, "inputs: expected a mask of shape"),
    ("add_mask_inputs", (0, -1, np.zeros((1, 1, SIZE, SIZE))), ValueError, "frame_idx"),
    ("remove_point_inputs", (2, 0), ValueError, "obj_idx"),
    ("remove_mask_inputs", (0, 4), ValueError, "frame_idx"),
    ("get_frame", (4,), ValueError, "frame_idx"),
    ("get_output", (0, 0, "masks"), ValueError, "output_key: expected one of"),
    ("get_output", (0, 0, "pred_masks", True), None, None),
    ("get_output", (3, 0, "pred_masks"), ValueError, "obj_idx"),
    ("store_output", (0, 0, "maskmem_pos_enc", np.zeros(3)), ValueError, "output_key: expected one of"),
    ("store_output", (0, 0, "pred_masks", np.zeros((1, 1, 8, 8))), ValueError, "pred_masks'\\]: expected shape"),
    ("store_output", (0, 0, "maskmem_features", np.zeros((5, 1, 64))), ValueError, "maskmem_features'\\]"),
    ("store_output", (0, 0, "object_pointer", np.zeros((1, 3))), ValueError, "object_pointer'\\]"),
    ("store_output", (0, 2, "object_pointer", np.zeros((1, 256))), ValueError, "no stored conditioning outputs"),
    ("store_output", (0, 0, None, np.zeros(3)), TypeError, "output_value: expected a dict"),
    ("store_output", (0, 0, None, {"bad": 1}), ValueError, "output_value: expected one of"),
    ("store_output", (0, 1, "pred_masks", np.zeros((1, 1, 64, 64)), False), ValueError, "no stored tracked"),
]


@pytest.mark.parametrize("method, args, error, match", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments_leave_the_session_unchanged(tracked, method, args, error, match):
    before = _state(tracked)
    if error is None:
        assert getattr(tracked, method)(*args).shape == (1, 1, SIZE // 4, SIZE // 4)
        return
    with pytest.raises(error, match=match):
        getattr(tracked, method)(*args)
    after = _state(tracked)
    assert before[0].keys() == after[0].keys() and before[1].keys() == after[1].keys()
    for key in before[2]:
        np.testing.assert_array_equal(before[2][key], after[2][key])


def test_session_devices_and_cache_size(pair):
    session = pair.processor.init_video_session(video=_video(num_frames=2), inference_device="cpu",
                                                inference_state_device=jax.devices("cpu")[0],
                                                video_storage_device=None, processing_device="cpu",
                                                max_vision_features_cache_size=3)
    assert session.inference_device == jax.devices("cpu")[0] and session.max_vision_features_cache_size == 3
    assert session.get_frame(1).shape == (3, SIZE, SIZE) and session.get_frame(1).dtype == jnp.float32
    for kwargs, error, match in [({"processing_device": "nowhere"}, ValueError, "processing_device"),
                                 ({"inference_state_device": 3}, TypeError, "inference_state_device"),
                                 ({"max_vision_features_cache_size": 0}, ValueError, "max_vision_features_cache_size")]:
        with pytest.raises(error, match=match):
            pair.processor.init_video_session(video=_video(num_frames=2), **kwargs)


def test_get_image_features_matches_transformers(pair):
    pixels = np.asarray(pair.processor(images=_video(num_frames=2)).pixel_values)
    with torch.no_grad():
        ref = pair.hf.get_image_features(torch.from_numpy(pixels))
    with jax.default_matmul_precision("highest"):
        got = pair.ours.get_image_features(pixels)
    for level in range(3):
        ref_level = ref.fpn_hidden_states[level]
        _check(f"features level {level}", got.fpn_hidden_states[level], ref_level,
               1e-3 * max(1.0, float(np.abs(_np(ref_level)).max())))
    for level in range(3):
        _check(f"features position encoding {level}", got.fpn_position_encoding[level],
               ref.fpn_position_encoding[level], 1e-4)
    with pytest.raises(ValueError, match="pixel_values: expected shape"):
        pair.ours.get_image_features(pixels[:, :, :8])
