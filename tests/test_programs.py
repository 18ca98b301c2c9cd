"""The fixed set of programs of a video session (`sam2_jax.tracking.programs`, listed in docs/performance.md):
a session that goes through every action kind with 1 to 16 objects compiles no more than that set, and a
second session doing the same compiles nothing; `warm_up` compiles the set ahead, so a session after it
compiles nothing for the buckets it covered."""

import logging
import re

import jax
import numpy as np
import pytest

from sam2_jax import Sam2VideoModel, Sam2VideoProcessor
from sam2_jax.io.clips import generate_clip
from sam2_jax.tracking.tracker import object_bucket

MODEL = "sam2-jax-shapes"  # the packaged model: 128 px


class _Traces(logging.Handler):
    """The name of every program JAX traces (compiled, or loaded from the persistent cache) meanwhile."""

    def __init__(self):
        super().__init__()
        self.names = []

    def emit(self, record):
        found = re.match(r"Finished tracing (?:\+ transforming )?(\S+) for p?jit", record.getMessage())
        if found:
            self.names.append(found.group(1))


@pytest.fixture()
def traces():
    handler = _Traces()
    logger = logging.getLogger("jax")
    before, level, propagate = jax.config.jax_log_compiles, logger.level, logger.propagate
    jax.config.update("jax_log_compiles", True)
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False  # JAX's long compilation messages stay out of the test's output
    yield handler.names
    logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate
    jax.config.update("jax_log_compiles", before)


@pytest.fixture(scope="module")
def model():
    return Sam2VideoModel.from_pretrained(MODEL)


def _every_action(model, processor):
    """A session through every action kind, 1 to 16 objects: clicks, a negative click, a box, a mask, several
    objects in one call, propagation both ways, a correction, objects added mid-video and removed; then a
    streamed video."""
    clip = generate_clip(3, 20, 96, 128, max_objects=3)
    session = processor.init_video_session(video=clip.frames)

    def prompt(frame, obj_ids, **inputs):
        processor.add_inputs_to_inference_session(session, frame_idx=frame, obj_ids=obj_ids, **inputs)
        return model(inference_session=session, frame_idx=frame)

    def propagate(**kwargs):
        return list(model.propagate_in_video_iterator(session, **kwargs))

    prompt(0, 1, input_points=[[[[40, 40]]]], input_labels=[[[1]]])
    prompt(0, 1, input_points=[[[[40, 40], [70, 50]]]], input_labels=[[[1, 0]]])
    prompt(0, 2, input_boxes=[[[10, 10, 50, 60]]])
    prompt(0, 3, input_masks=[clip.masks[0, 0]])
    assert len(propagate()) == 20
    prompt(12, 1, input_points=[[[[60, 30]]]], input_labels=[[[1]]])
    assert len(propagate(start_frame_idx=12, reverse=True)) == 13
    ids = list(range(4, 17))  # 16 objects in all
    out = prompt(5, ids, input_points=[[[[8 * i, 40]] for i in ids]], input_labels=[[[1] for _ in ids]])
    assert out.pred_masks.shape[0] == 16
    assert len(propagate(start_frame_idx=5)) == 15
    session.remove_object(2)
    assert [o.pred_masks.shape[0] for o in propagate(start_frame_idx=0, max_frame_num_to_track=9)] == [15] * 10

    stream = processor.init_video_session()
    for t, frame in enumerate(clip.frames[:6]):
        inputs = processor(images=frame, device="cpu")  # indexed as numpy: jax's indexing compiles (the user's)
        if t == 0:
            processor.add_inputs_to_inference_session(stream, frame_idx=0, obj_ids=[1, 2], input_points=[[
                [[40, 40]], [[90, 60]]]], input_labels=[[[1], [1]]], original_size=np.asarray(inputs.original_sizes)[0])
        out = model(inference_session=stream, frame=np.asarray(inputs.pixel_values)[0])
        assert out.pred_masks.shape[0] == 2


def test_a_session_compiles_only_the_listed_set_and_nothing_twice(model, traces):
    processor = Sam2VideoProcessor.from_pretrained(MODEL)
    before = set(model.programs.compile_seconds)  # what other tests of this process compiled for this config
    _every_action(model, processor)
    listed = {"encode_frames_apart", "track_step", "track_frames_apart", "set_object_memories"}
    assert set(traces) <= listed, f"programs outside the listed set: {sorted(set(traces) - listed)}"
    # At most one program a bucket (fewer where an earlier test of this process compiled some): encode once;
    # step for the row buckets of 1, 2, 3 and 16 objects (the stream's 2 share the video's; on the CPU all are
    # 16 rows); scan for 3 and 16 (15 after the removal share 16's); one conditioning frame a step throughout.
    step_rows = {object_bucket(n) for n in (1, 2, 3, 16)}
    assert traces.count("encode_frames_apart") <= 1
    assert traces.count("track_step") <= len(step_rows)
    assert traces.count("track_frames_apart") <= len({object_bucket(3), object_bucket(16)})
    buckets = {f"{name}[rows={rows}, cond=1, points=8]" for name in ("step", "scan") for rows in step_rows}
    buckets.add(f"encode[frames={model.programs.frames()}]")
    assert set(model.programs.compile_seconds) - before <= buckets
    print("\n".join(f"{name}: {seconds:.1f} s" for name, seconds in sorted(model.programs.compile_seconds.items())))

    second = Sam2VideoModel.from_pretrained(MODEL)  # a second model of the same checkpoint (loading traces shapes)
    del traces[:]
    _every_action(second, processor)
    assert traces == [], f"compiled again: {traces}"


def test_warm_up_compiles_the_set_ahead(traces):
    model = Sam2VideoModel.from_pretrained(MODEL)
    warm = model.warm_up(max_objects=4)
    assert warm.wait(timeout=900)
    assert warm.done
    del traces[:]
    processor = Sam2VideoProcessor.from_pretrained(MODEL)
    clip = generate_clip(5, 10, 96, 128, max_objects=3)
    session = processor.init_video_session(video=clip.frames)
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=[1, 2, 3], input_points=[[
        [[20, 20]], [[60, 40]], [[100, 70]]]], input_labels=[[[1], [1], [1]]])
    model(inference_session=session, frame_idx=0)
    assert len(list(model.propagate_in_video_iterator(session))) == 10
    assert traces == [], f"compiled after warm-up: {traces}"


def test_warm_up_refuses_a_bad_object_count(model):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_objects"):
            model.warm_up(max_objects=bad)
