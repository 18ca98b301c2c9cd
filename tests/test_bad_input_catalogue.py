"""The bad-input catalogue: every kind of bad input a user can give the video API, each raising the error
its kind calls for with a message naming the argument, and leaving the session (prompts, memory bank,
outputs) exactly as it was. Plus inputs that are not errors but could break a careless implementation
(8K frames, thousands of clicks, hundreds of objects), a damaged frame in the middle of a file, a malicious
pickle given to the converter, and fuzzed prompt arguments."""

from __future__ import annotations

import dataclasses
import json
import os
import tracemalloc
from typing import Callable

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from sam2_jax import Sam2Model, Sam2Processor, Sam2VideoModel, Sam2VideoProcessor
from sam2_jax.processing import prepare_prompts
from sam2_jax.io.frames import VideoError

MODEL = "sam2-jax-shapes"  # the packaged model: 128 px, fast to compile
SIZE = 128
H, W = 96, 112  # the test video's frames: not the model's size, so the processor really resizes
NUM_FRAMES = 6


def _frames(num_frames=NUM_FRAMES, height=H, width=W):
    """A bright square moving over a dark background."""
    frames = np.full((num_frames, height, width, 3), 30, np.uint8)
    for t in range(num_frames):
        y, x = height // 3, width // 4 + 3 * t
        frames[t, y:y + height // 4, x:x + width // 4] = (220, 200, 40)
    return frames


@pytest.fixture(scope="module")
def model():
    return Sam2VideoModel.from_pretrained(MODEL)


@pytest.fixture(scope="module")
def processor():
    return Sam2VideoProcessor.from_pretrained(MODEL)


@pytest.fixture(scope="module")
def tracked(model, processor):
    """A session with one object clicked on frame 0 and tracked to frame 2: prompts, memories and outputs."""
    session = processor.init_video_session(video=_frames())
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=[[[[40, 40]]]],
                                              input_labels=[[[1]]])
    list(model.propagate_in_video_iterator(session, start_frame_idx=0, max_frame_num_to_track=2))
    return session


@pytest.fixture(scope="module")
def streaming(model, processor):
    """A streaming session that has seen one frame."""
    session = processor.init_video_session()
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=[[[[40, 40]]]],
                                              input_labels=[[[1]]], original_size=(H, W))
    model(inference_session=session, frame=processor(images=_frames(1)[0]).pixel_values[0])
    return session


def _freeze(x):
    """A comparable, deep copy of session state: arrays by shape, dtype and bytes."""
    if isinstance(x, dict):
        return tuple(sorted((repr(k), _freeze(v)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(_freeze(v) for v in x)
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        array = np.asarray(x)
        return array.shape, str(array.dtype), array.tobytes()
    if dataclasses.is_dataclass(x):
        return _freeze(dataclasses.asdict(x))
    return repr(x) if isinstance(x, set) else x


def _snapshot(session):
    """Prompts, memory bank, outputs and bookkeeping of a session."""
    return _freeze({"objects": [dataclasses.asdict(t) for t in session._objects], "ids": session.obj_ids,
                    "new": session.obj_with_new_inputs, "removed": sorted(session._removed_obj_ids),
                    "bank": None if session._state is None else list(session._state),
                    "streamed": session.streamed_frames, "num_streamed": session.num_streamed,
                    "size": (session.video_height, session.video_width)})


@dataclasses.dataclass
class Case:
    """One bad input: `call(model, processor, session)` must raise `error` with `name` in the message."""

    kind: str
    call: Callable
    error: type
    name: str
    session: str = "tracked"  # the session fixture the call gets (and must leave unchanged)


def _add(frame_idx=1, obj_ids=1, **prompts):
    """A prompt call: one click at (40, 40) on frame 1 for object 1, with the given changes (a call with masks or
    boxes gets no click)."""
    if not {"input_masks", "input_boxes"} & prompts.keys():
        prompts = {"input_points": [[[[40, 40]]]], "input_labels": [[[1]]], **prompts}
    return lambda m, p, s: p.add_inputs_to_inference_session(s, frame_idx=frame_idx, obj_ids=obj_ids, **prompts)


def _removed_then_added(m, p, s):
    """Prompts for an object that was removed; the removal itself happens on a copy of the call's session."""
    other = p.init_video_session(video=_frames())
    p.add_inputs_to_inference_session(other, frame_idx=0, obj_ids=[1, 2], input_points=[[[[40, 40]], [[80, 60]]]],
                                      input_labels=[[[1], [1]]])
    other.remove_object(2)
    before = _snapshot(other)
    try:
        p.add_inputs_to_inference_session(other, frame_idx=0, obj_ids=2, input_points=[[[[40, 40]]]],
                                          input_labels=[[[1]]])
    finally:
        assert _snapshot(other) == before
    return other


def _mismatched_processor(m, p, s):
    """A processor of another size than the model: refused at the model's boundary."""
    other = Sam2VideoProcessor(size=256)
    session = other.init_video_session(video=_frames())
    other.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=[[[[40, 40]]]],
                                          input_labels=[[[1]]])
    before = _snapshot(session)
    try:
        m(inference_session=session, frame_idx=0)
    finally:
        assert _snapshot(session) == before


def _frame(m, p, s, **kwargs):
    return m(inference_session=s, **kwargs)


def _propagate(**kwargs):
    return lambda m, p, s: list(m.propagate_in_video_iterator(s, **kwargs))


def _video(source):
    return lambda m, p, s: p.init_video_session(video=source() if callable(source) else source)


MASK = np.zeros((H, W), bool)
MASK[30:50, 30:60] = True

CASES = [
    # frame indices
    Case("frame_idx past the end", lambda m, p, s: _frame(m, p, s, frame_idx=NUM_FRAMES), ValueError, "frame_idx"),
    Case("negative frame_idx", lambda m, p, s: _frame(m, p, s, frame_idx=-1), ValueError, "frame_idx"),
    Case("float frame_idx", lambda m, p, s: _frame(m, p, s, frame_idx=1.0), TypeError, "frame_idx"),
    Case("no frame_idx", lambda m, p, s: _frame(m, p, s), ValueError, "frame_idx"),
    Case("start_frame_idx past the end", _propagate(start_frame_idx=NUM_FRAMES + 3), ValueError, "start_frame_idx"),
    Case("negative max_frame_num_to_track", _propagate(start_frame_idx=0, max_frame_num_to_track=-1), ValueError,
         "max_frame_num_to_track"),
    Case("prompt on a frame past the end", _add(frame_idx=NUM_FRAMES), ValueError, "frame_idx"),
    # object ids
    Case("duplicate obj_ids", _add(obj_ids=[1, 1], input_points=[[[[40, 40]], [[50, 50]]]], input_labels=[[[1], [1]]]), ValueError, "obj_ids"),
    Case("obj_ids a string", _add(obj_ids="a"), TypeError, "obj_ids"),
    Case("obj_ids a bool", _add(obj_ids=True), TypeError, "obj_ids"),
    Case("obj_ids a float", _add(obj_ids=[1.5]), TypeError, "obj_ids"),
    Case("obj_ids empty", _add(obj_ids=[]), ValueError, "obj_ids"),
    Case("obj_ids fewer than prompts", _add(obj_ids=[1], input_points=[[[[40, 40]], [[50, 50]]]], input_labels=[[[1], [1]]]), ValueError,
         "number of object ids"),
    Case("removed obj_id prompted again", _removed_then_added, ValueError, "obj_ids"),
    Case("remove an unknown object", lambda m, p, s: s.remove_object(99), ValueError, "obj_id"),
    Case("clear prompts of an unknown object", lambda m, p, s: s.clear_prompts_in_frame(0, 99), ValueError, "obj_id"),
    # points, labels, boxes
    Case("points without labels", _add(input_points=[[[[40, 40]]]], input_labels=None), ValueError, "input_"),
    Case("more labels than points", _add(input_labels=[[[1, 1]]]), ValueError, "input_labels"),
    Case("label not in the label set", _add(input_labels=[[[5]]]), ValueError, "input_labels"),
    Case("point outside the frame", _add(input_points=[[[[W + 5, 10]]]]), ValueError, "input_points"),
    Case("NaN point", _add(input_points=[[[[np.nan, 10]]]]), ValueError, "input_points"),
    Case("point with three coordinates", _add(input_points=[[[[1, 2, 3]]]]), ValueError, "input_points"),
    Case("points nested too shallow", _add(input_points=[[[40, 40]]]), ValueError, "input_points"),
    Case("string coordinate", _add(input_points=[[[["4", 4]]]]), TypeError, "input_points"),
    Case("prompts for two frames in one call", _add(input_points=[[[[4, 4]]], [[[5, 5]]]],
                                                    input_labels=[[[1]], [[1]]]), ValueError, "input_points"),
    Case("inverted box", _add(input_points=None, input_boxes=[[[60, 10, 20, 40]]]), ValueError, "input_boxes"),
    Case("box outside the frame", _add(input_points=None, input_boxes=[[[0, 0, W + 50, 40]]]), ValueError,
         "input_boxes"),
    Case("box added to old points", _add(input_boxes=[[[10, 10, 40, 40]]], clear_old_inputs=False), ValueError,
         "clear_old_inputs"),
    Case("no prompt at all", _add(input_points=None, input_labels=None), ValueError, "input_points"),
    # masks
    Case("mask with points", _add(input_masks=MASK, input_points=[[[[4, 4]]]], input_labels=[[[1]]]), ValueError,
         "input_masks"),
    Case("mask of the wrong size", _add(input_masks=np.ones((H + 3, W), bool)), ValueError, "input_masks"),
    Case("mask of strings", _add(input_masks=np.full((H, W), "x")), TypeError, "input_masks"),
    Case("mask not an array", _add(input_masks="mask.png"), TypeError, "input_masks"),
    Case("mask of five dimensions", _add(input_masks=np.ones((1, 1, 1, H, W), bool)), ValueError, "input_masks"),
    Case("two masks for one object", _add(input_masks=[MASK, MASK]), ValueError, "input_masks"),
    # the session's transformers accessors
    Case("add_point_inputs for an unknown object index",
         lambda m, p, s: s.add_point_inputs(1, 1, {"point_coords": np.zeros((1, 1, 1, 2)),
                                                   "point_labels": np.ones((1, 1, 1), int)}), ValueError, "obj_idx"),
    Case("add_point_inputs past the video", lambda m, p, s: s.add_point_inputs(
        0, NUM_FRAMES, {"point_coords": np.zeros((1, 1, 1, 2)), "point_labels": np.ones((1, 1, 1), int)}),
         ValueError, "frame_idx"),
    Case("add_point_inputs of the wrong shape", lambda m, p, s: s.add_point_inputs(
        0, 1, {"point_coords": np.zeros((1, 2)), "point_labels": np.ones((1, 1, 1), int)}), ValueError,
         "point_coords"),
    Case("add_point_inputs without labels", lambda m, p, s: s.add_point_inputs(0, 1, {"point_coords": np.zeros(
        (1, 1, 1, 2))}), ValueError, "inputs"),
    Case("add_mask_inputs of the frame's size", lambda m, p, s: s.add_mask_inputs(0, 1, np.ones((1, 1, H, W))),
         ValueError, "inputs"),
    Case("remove_point_inputs with a float frame", lambda m, p, s: s.remove_point_inputs(0, 1.0), TypeError,
         "frame_idx"),
    Case("remove_mask_inputs for an unknown object index", lambda m, p, s: s.remove_mask_inputs(-1, 0), ValueError,
         "obj_idx"),
    Case("get_frame past the video", lambda m, p, s: s.get_frame(NUM_FRAMES), ValueError, "frame_idx"),
    Case("get_output with an unknown key", lambda m, p, s: s.get_output(0, 0, "mask"), ValueError, "output_key"),
    Case("store_output of a tracked frame's mask of the wrong shape",
         lambda m, p, s: s.store_output(0, 1, "pred_masks", np.zeros((1, 1, 8, 8)), False), ValueError, "pred_masks"),
    Case("store_output of the wrong shape", lambda m, p, s: s.store_output(0, 0, "pred_masks", np.zeros((1, 1, 8, 8))),
         ValueError, "pred_masks"),
    Case("store_output with an unknown key", lambda m, p, s: s.store_output(0, 0, "masks", np.zeros(1)), ValueError,
         "output_key"),
    Case("store_output of one key on a frame without outputs",
         lambda m, p, s: s.store_output(0, 4, "object_pointer", np.zeros((1, 1, 256))), ValueError, "output_key"),
    Case("store_output of a list", lambda m, p, s: s.store_output(0, 0, None, [1, 2]), TypeError, "output_value"),
    # sessions and processors
    Case("not a session", lambda m, p, s: m(inference_session="session", frame_idx=0), TypeError,
         "inference_session"),
    Case("processor size does not fit the model", _mismatched_processor, ValueError, "inference_session"),
    Case("propagate a streaming session", _propagate(start_frame_idx=0), ValueError, "inference_session",
         "streaming"),
    Case("prompt on a streamed frame not yet seen", _add(frame_idx=5, original_size=(H, W)), ValueError, "frame_idx",
         "streaming"),
    Case("run a streamed frame not yet seen", lambda m, p, s: _frame(m, p, s, frame_idx=3), ValueError, "frame_idx",
         "streaming"),
    Case("streamed frame of the wrong size",
         lambda m, p, s: _frame(m, p, s, frame=np.zeros((3, SIZE // 2, SIZE // 2), np.float32)), ValueError, "frame",
         "streaming"),
    Case("bad original_size", _add(frame_idx=1, original_size=(H, -W)), ValueError, "original_size", "streaming"),
    # videos
    Case("frames of the wrong dtype", _video(np.zeros((2, H, W, 3), np.int32)), TypeError, "frames", None),
    Case("frames of the wrong rank", _video(np.zeros((H, W, 3), np.uint8)), VideoError, "frames", None),
    Case("frames with four channels", _video(np.zeros((2, H, W, 4), np.uint8)), VideoError, "frames", None),
    Case("float frames outside [0, 1]", _video(np.full((2, H, W, 3), 2.0)), VideoError, "frames", None),
    Case("a video of zero frames", _video(np.zeros((0, H, W, 3), np.uint8)), VideoError, "frames", None),
    Case("frames of two sizes", _video([np.zeros((H, W, 3), np.uint8), np.zeros((H, W + 1, 3), np.uint8)]),
         VideoError, "frames[1]", None),
    Case("a path that does not exist", _video("no/such/video.mp4"), VideoError, "path", None),
    Case("not a video source", _video(42), TypeError, "source", None),
]


def test_catalogue_size():
    assert len(CASES) + len(VIDEO_FILES) >= 40
    assert len({case.kind for case in CASES} | set(VIDEO_FILES)) == len(CASES) + len(VIDEO_FILES)


@pytest.mark.parametrize("case", CASES, ids=[case.kind for case in CASES])
def test_bad_input(case, model, processor, request):
    session = request.getfixturevalue(case.session) if case.session else None
    before = _snapshot(session) if session else None
    with pytest.raises(case.error) as err:
        case.call(model, processor, session)
    assert case.name in str(err.value), str(err.value)
    if session:
        assert _snapshot(session) == before


# ------------------------------------------------------------------------------------------ video files

def _encode(path, frames, codec="libx264", fps=10, **options):
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _damage_frame(path, index):
    """Overwrite most of the bytes of one frame's packet."""
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    pos, size = packets[index]
    data = bytearray(path.read_bytes())
    data[pos + size // 4:pos + size] = bytes([0x00, 0xFF]) * ((size - size // 4) // 2) + bytes((size - size // 4) % 2)
    path.write_bytes(bytes(data))
    return path


VIDEO_FILES = {  # kind: (make the file in a folder, what the error says)
    "zero-byte video file": (lambda d: _write(d / "empty.mp4", b""), "not a readable video"),
    "text file named .mp4": (lambda d: _write(d / "text.mp4", b"hello"), "not a readable video"),
    "video truncated mid-stream": (lambda d: _truncate(_encode(d / "full.mp4", _frames(12), movflags="faststart")), "truncated"),
    "image given as a video": (lambda d: (Image.new("RGB", (8, 8)).save(d / "x.png"), d / "x.png")[1], "the image"),
}


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _truncate(path):
    data = path.read_bytes()
    cut = path.with_name("cut.mp4")
    cut.write_bytes(data[: int(len(data) * 0.6)])
    return cut


@pytest.mark.parametrize("kind", list(VIDEO_FILES))
def test_bad_video_file(kind, processor, tmp_path):
    make, says = VIDEO_FILES[kind]
    with pytest.raises(VideoError, match="path") as err:
        processor.init_video_session(video=make(tmp_path))
    assert says in str(err.value)


@pytest.mark.parametrize("source", ["file", "folder"])
def test_damaged_frame_in_the_middle(source, model, processor, tmp_path):
    """Tracking stops at the damaged frame with an error naming it; the frames before it are tracked, and stay
    usable afterwards, and the failed step leaves the session as it was."""
    frames = _frames(12)
    if source == "file":
        video = _damage_frame(_encode(tmp_path / "v.avi", frames, codec="mjpeg"), 6)
    else:
        video = tmp_path / "frames"
        video.mkdir()
        for t, frame in enumerate(frames):
            Image.fromarray(frame).save(video / f"{t:05d}.jpg")
        data = (video / "00006.jpg").read_bytes()
        (video / "00006.jpg").write_bytes(data[:len(data) // 2] + bytes(len(data) // 2))  # header intact
    session = processor.init_video_session(video=str(video))
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=[[[[40, 40]]]],
                                              input_labels=[[[1]]])
    tracked, snapshot = [], None
    with pytest.raises(VideoError, match="frame 6") as err:
        for out in model.propagate_in_video_iterator(session, start_frame_idx=0):
            tracked.append(out.frame_idx)
            snapshot = _snapshot(session)
    assert "path" in str(err.value) or "folder" in str(err.value)
    assert tracked == [0, 1, 2, 3, 4, 5]
    assert _snapshot(session) == snapshot
    assert model(inference_session=session, frame_idx=3).frame_idx == 3


# ----------------------------------------------------------------------------------- big, not bad, inputs

def test_8k_frames_are_decoded_lazily(model, processor, tmp_path):
    """Four 8K frames (400 MB as uint8) tracked with at most about two of them in host memory at a time."""
    folder = tmp_path / "8k"
    folder.mkdir()
    for t in range(4):
        Image.new("RGB", (7680, 4320), (20 * t, 90, 40)).save(folder / f"{t:05d}.png")
    frame_bytes = 7680 * 4320 * 3
    tracemalloc.start()
    try:
        session = processor.init_video_session(video=str(folder))
        processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1,
                                                  input_points=[[[[3000, 2000]]]], input_labels=[[[1]]])
        outputs = list(model.propagate_in_video_iterator(session, start_frame_idx=0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [o.frame_idx for o in outputs] == list(range(4))
    assert peak < 2.5 * frame_bytes, f"peak {peak / 1e6:.0f} MB for {frame_bytes / 1e6:.0f} MB frames"


def test_thousands_of_clicks_on_one_object(model, processor):
    rng = np.random.default_rng(0)
    points = np.stack([rng.uniform(0, W, 3000), rng.uniform(0, H, 3000)], -1)
    session = processor.init_video_session(video=_frames())
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=[[points.tolist()]],
                                              input_labels=[[rng.integers(0, 2, 3000).tolist()]])
    out = model(inference_session=session, frame_idx=0)
    assert out.pred_masks.shape == (1, 1, SIZE // 4, SIZE // 4) and np.isfinite(np.asarray(out.pred_masks)).all()


def test_hundreds_of_objects(model, processor):
    n = 200
    session = processor.init_video_session(video=_frames(3))
    points = [[[float(5 + (k * 7) % (W - 10)), float(5 + (k * 13) % (H - 10))]] for k in range(n)]
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=list(range(1, n + 1)),
                                              input_points=[points], input_labels=[[[1]] * n])
    outputs = list(model.propagate_in_video_iterator(session, start_frame_idx=0))
    assert [o.pred_masks.shape[0] for o in outputs] == [n] * 3
    assert all(np.isfinite(np.asarray(o.pred_masks)).all() for o in outputs)


# -------------------------------------------------------------------------------- checkpoints, converter

def test_processor_from_a_checkpoint_with_unsupported_preprocessing(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    with pytest.raises(ValueError, match="do_normalize = False"):
        Sam2Processor.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        Sam2Processor.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json"):
        Sam2Processor.from_pretrained(tmp_path / "empty")


def test_image_model_names_both_sizes():
    model = Sam2Model.from_pretrained(MODEL)
    pixels = Sam2Processor()(images=_frames(1)[0]).pixel_values  # the default 1024 px
    with pytest.raises(ValueError, match=r"pixel_values: the model takes 128x128 px .* got 1024x1024.*"
                                         r"Sam2Processor.from_pretrained"):
        model(pixel_values=pixels, input_points=[[[[4, 4]]]], input_labels=[[[1]]])


class _Payload:
    """Pickled, it runs a command on load, as a malicious checkpoint would."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_converter_refuses_a_malicious_pickle(tmp_path, capsys):
    import torch

    from convert.__main__ import main

    marker = tmp_path / "pwned"
    torch.save({"model": {"x": _Payload(marker)}}, tmp_path / "evil.pt")
    assert main([str(tmp_path / "evil.pt"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "not a readable PyTorch checkpoint" in err and "Unpickl" in err, err
    assert not marker.exists() and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- fuzzing

_number = st.one_of(st.integers(-20, 300), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.text(max_size=2), st.none())
_nested = st.recursive(_number, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner), max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(points=_nested, labels=_nested, boxes=st.one_of(st.none(), _nested))
def test_fuzzed_prompts_raise_only_value_or_type_errors(points, labels, boxes):
    try:
        prepare_prompts(points, labels, boxes, original_sizes=[(H, W)], target_size=SIZE)
    except (ValueError, TypeError):
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(points=_nested, labels=_nested, obj_ids=st.one_of(_nested, st.integers()))
def test_fuzzed_session_prompts_raise_only_value_or_type_errors_and_change_nothing(processor, tracked, points,
                                                                                    labels, obj_ids):
    before = _snapshot(tracked)
    try:
        processor.add_inputs_to_inference_session(tracked, frame_idx=1, obj_ids=obj_ids, input_points=points,
                                                  input_labels=labels)
    except (ValueError, TypeError):
        assert _snapshot(tracked) == before
