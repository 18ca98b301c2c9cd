"""Prompt-free video (sam2_jax.automatic_video, `track --auto`) on the packaged model and generated clips.

The video: 4 grey frames (the generator finds nothing there), 8 frames of a clip of moving shapes, 2 grey frames.
Its tracks are checked against the session API driven by hand with the same masks as prompts, and against the
generator's own records of the frame where the objects appear.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sam2_jax import Sam2AutomaticMaskGenerator, Sam2AutomaticVideoTracker, Sam2VideoModel, Sam2VideoProcessor
from sam2_jax.commands.main import main
from sam2_jax.automatic.video import image_model
from sam2_jax.io.clips import generate_clip

MODEL = "sam2-jax-shapes"
SETTINGS = dict(points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.8)  # the shapes model's masks pass
APPEAR = 4  # the first frame with objects


@pytest.fixture(scope="module")
def model():
    return Sam2VideoModel.from_pretrained(MODEL)


@pytest.fixture(scope="module")
def processor():
    return Sam2VideoProcessor.from_pretrained(MODEL)


@pytest.fixture(scope="module")
def generator(model):
    return Sam2AutomaticMaskGenerator(image_model(model), **SETTINGS)


@pytest.fixture(scope="module")
def video():
    clip = generate_clip(3, 8, 120, 160, max_objects=3)
    grey = np.full((120, 160, 3), 128, np.uint8)
    return np.stack([grey] * APPEAR + list(clip.frames) + [grey] * 2)


def _logits(outputs):
    """{frame: {obj_id: low-res logits}}"""
    return {o.frame_idx: dict(zip(o.object_ids, np.asarray(o.pred_masks)[:, 0])) for o in outputs}


@pytest.fixture(scope="module")
def tracked(model, processor, generator, video):
    tracker = Sam2AutomaticVideoTracker(model, generator, auto_every=APPEAR)
    outputs = list(tracker.propagate(processor.init_video_session(video=video)))
    return tracker, outputs


def test_objects_appear_where_the_generator_finds_them_and_keep_their_ids(tracked, video):
    tracker, outputs = tracked
    assert [o.frame_idx for o in outputs] == list(range(len(video)))
    assert all(o.object_ids == [] and o.pred_masks.shape[0] == 0 for o in outputs[:APPEAR])
    seeded = [s for s in tracker.seeds if s.frame_idx == APPEAR]
    assert len(seeded) >= 2 and [s.obj_id for s in seeded] == list(range(1, len(seeded) + 1))
    ids = [s.obj_id for s in tracker.seeds]
    assert ids == list(range(1, len(ids) + 1))  # counted up, never reused
    for o in outputs[APPEAR:]:
        assert o.object_ids == [s.obj_id for s in tracker.seeds if s.frame_idx <= o.frame_idx]
    assert not any(s.frame_idx == len(video) - 2 for s in tracker.seeds)  # a grey frame adds nothing


def test_seeds_are_the_generators_masks_one_per_object(tracked, generator, video):
    """Best first, a mask is taken when its IoU with every mask taken before it is below 0.5."""
    tracker, _ = tracked
    records = [r["segmentation"] for r in generator.generate(video[APPEAR])]
    expected = []
    for mask in records:
        if all((mask & other).sum() / (mask | other).sum() < 0.5 for other in expected):
            expected.append(mask)
    seeds = [s.record["segmentation"] for s in tracker.seeds if s.frame_idx == APPEAR]
    assert len(seeds) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(seeds, expected))


def test_tracks_equal_the_session_api_with_the_same_masks(tracked, model, processor, video):
    """The objects of frame APPEAR, given to a fresh session as mask prompts and propagated in one call, get
    the tracker's masks on every frame, though the tracker stopped every 4 frames to look for new objects."""
    tracker, outputs = tracked
    seeds = [s for s in tracker.seeds if s.frame_idx == APPEAR]
    session = processor.init_video_session(video=video)
    processor.add_inputs_to_inference_session(session, frame_idx=APPEAR, obj_ids=[s.obj_id for s in seeds],
                                              input_masks=[s.record["segmentation"] for s in seeds])
    expected = _logits(model.propagate_in_video_iterator(session, start_frame_idx=APPEAR))
    got = _logits(outputs)
    for frame in range(APPEAR, len(video)):
        for s in seeds:
            np.testing.assert_allclose(got[frame][s.obj_id], expected[frame][s.obj_id], atol=1e-4, rtol=0)


def test_max_objects_takes_the_best_first(model, processor, generator, video):
    tracker = Sam2AutomaticVideoTracker(model, generator, max_objects=1)
    outputs = list(tracker.propagate(processor.init_video_session(video=video), start_frame_idx=APPEAR,
                                     max_frame_num_to_track=2))
    assert [o.frame_idx for o in outputs] == [APPEAR, APPEAR + 1, APPEAR + 2]
    assert [o.object_ids for o in outputs] == [[1]] * 3
    best = generator.generate(video[APPEAR])[0]["segmentation"]
    assert np.array_equal(tracker.seeds[0].record["segmentation"], best)


def test_bad_arguments_name_themselves(model, processor, generator, video):
    coco = Sam2AutomaticMaskGenerator(image_model(model), output_mode="coco_rle", **SETTINGS)
    cases = [(dict(model=image_model(model)), TypeError, "model"), (dict(generator=coco), ValueError, "generator"),
             (dict(auto_every=0), ValueError, "auto_every"), (dict(max_objects=1.5), TypeError, "max_objects"),
             (dict(new_object_iou=1.5), ValueError, "new_object_iou")]
    for kwargs, error, name in cases:
        with pytest.raises(error, match=name):
            Sam2AutomaticVideoTracker(**{"model": model, "generator": generator, **kwargs})
    tracker = Sam2AutomaticVideoTracker(model, generator)
    session = processor.init_video_session(video=video)
    with pytest.raises(ValueError, match="start_frame_idx"):
        next(tracker.propagate(session, start_frame_idx=len(video)))
    with pytest.raises(ValueError, match="whole video"):
        next(tracker.propagate(processor.init_video_session()))
    assert session.obj_ids == [] and tracker.seeds == []


def test_track_auto_writes_the_apis_masks(tracked, processor, video, tmp_path, capsys):
    folder = tmp_path / "clip"
    folder.mkdir()
    for t, frame in enumerate(video):
        Image.fromarray(frame).save(folder / f"{t:05d}.png")
    argv = ["track", str(folder), "--model", MODEL, "--auto", "--auto-every", str(APPEAR), "--out",
            str(tmp_path / "out"), "--compile-cache", "off", "--points-per-side", "8", "--pred-iou-thresh", "0.5",
            "--stability-score-thresh", "0.8"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    tracker, outputs = tracked
    assert f"found object(s) {[s.obj_id for s in tracker.seeds if s.frame_idx == APPEAR]} on frame {APPEAR}" in printed
    for o in outputs:
        png = np.asarray(Image.open(tmp_path / "out" / "davis" / "clip" / f"{o.frame_idx:05d}.png"))
        expected = np.zeros(video.shape[1:3], np.uint8)
        if o.object_ids:
            masks = np.asarray(processor.post_process_masks([o.pred_masks], [video.shape[1:3]], binarize=True)[0])
            for obj_id, mask in reversed(list(zip(o.object_ids, masks[:, 0]))):  # the lower id wins
                expected[mask] = obj_id
        assert (png != expected).mean() <= 0.0005


@pytest.mark.parametrize("extra, message", [
    (["--point", "3,4"], "--auto: finds the objects itself"),
    (["--reverse"], "--reverse: --auto tracks forward only"),
    (["--pred-iou-thresh", "2"], "--pred-iou-thresh: expected a number in [0, 1]"),
])
def test_track_auto_bad_options(extra, message, video, tmp_path, capsys):
    folder = tmp_path / "clip"
    folder.mkdir()
    Image.fromarray(video[0]).save(folder / "00000.png")
    assert main(["track", str(folder), "--model", MODEL, "--auto", "--out", str(tmp_path / "out"), *extra]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_auto_options_need_auto(video, tmp_path, capsys):
    folder = tmp_path / "clip"
    folder.mkdir()
    Image.fromarray(video[0]).save(folder / "00000.png")
    assert main(["track", str(folder), "--model", MODEL, "--point", "3,4", "--max-objects", "2"]) == 1
    assert "--max-objects: only applies with --auto" in capsys.readouterr().err
