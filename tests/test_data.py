"""Generated clips and the DAVIS / SA-V readers of sam2_jax/data.py."""

import shutil

import numpy as np
import pytest
from PIL import Image

from sam2_jax.io.clips import Clip, generate_clip, write_clip_davis

from sam2_jax.io.datasets import DavisDataset, SavDataset
from sam2_jax.io.writers import SavWriter


def test_same_seed_same_clip_other_seed_other_clip():
    a, b, c = generate_clip(7), generate_clip(7), generate_clip(8)
    for field in ("frames", "masks", "amodal", "depth"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.obj_ids == b.obj_ids
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("num_frames, height, width, max_objects",
                         [(8, 128, 128, 3), (3, 64, 96, 2), (5, 80, 48, 1)])
def test_shapes_and_types(num_frames, height, width, max_objects):
    clip = generate_clip(1, num_frames, height, width, max_objects)
    assert isinstance(clip, Clip)
    n = len(clip.obj_ids)
    assert 1 <= n <= max_objects and clip.obj_ids == tuple(range(1, n + 1))
    assert clip.frames.shape == (num_frames, height, width, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == clip.amodal.shape == (num_frames, n, height, width)
    assert clip.masks.dtype == clip.amodal.dtype == bool
    assert sorted(clip.depth) == list(range(n))


def test_object_counts_vary_between_seeds():
    counts = {len(generate_clip(s, num_frames=1).obj_ids) for s in range(20)}
    assert counts == {1, 2, 3}


@pytest.mark.parametrize("seed", range(6))
def test_masks_are_the_visible_parts(seed):
    clip = generate_clip(seed, min_area=40)
    for i, depth in enumerate(clip.depth):
        above = clip.amodal[:, clip.depth > depth].any(axis=1)
        np.testing.assert_array_equal(clip.masks[:, i], clip.amodal[:, i] & ~above)
    assert (clip.masks.sum(axis=1) <= 1).all()  # visible parts never overlap
    assert (clip.masks[0].sum(axis=(1, 2)) >= 40).all()


def test_occlusion_and_leaving_the_frame_happen_across_seeds():
    clips = [generate_clip(s, num_frames=16) for s in range(12)]
    occluded = [c for c in clips if (c.amodal & ~c.masks).any()]
    gone = [c for c in clips if (c.amodal.sum(axis=(2, 3)) == 0).any()]  # an object wholly outside
    assert len(occluded) >= 3 and len(gone) >= 3
    for clip in gone:  # its mask is empty then, and it was in the frame at the start
        empty = clip.amodal.sum(axis=(2, 3)) == 0
        assert not clip.masks[empty].any() and not empty[0].any()


def test_objects_drawn_exactly_where_their_masks_are():
    # Background and noise come from their own streams of the seed: two clips with different
    # objects share every pixel where neither draws an object, and differ where one does.
    a, b = generate_clip(3, max_objects=1), generate_clip(3, max_objects=3)
    a_any, b_any = a.masks.any(axis=1), b.masks.any(axis=1)
    neither = ~a_any & ~b_any
    np.testing.assert_array_equal(a.frames[neither], b.frames[neither])
    for only in (a_any & ~b_any, b_any & ~a_any):
        assert only.sum() > 100
        assert (a.frames[only] != b.frames[only]).any(axis=-1).mean() > 0.9


@pytest.mark.parametrize("kwargs, match", [
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"num_frames": 0}, "num_frames"),
    ({"height": 8}, "height"), ({"max_objects": 0}, "max_objects"),
    ({"min_objects": 3, "max_objects": 2}, "min_objects"), ({"max_noise": 2.0}, "max_noise"),
    ({"min_area": 10_000, "height": 32, "width": 32}, "min_area"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_clip(**{"seed": 0, **kwargs})


def _check_sequence(sequence, clip, name, frames=None, exact=True):
    """The read VideoSequence holds the clip's masks (on `frames`, all by default) and frames."""
    seq_name, source, masks, obj_ids = sequence
    frames = range(len(clip.frames)) if frames is None else frames
    assert seq_name == name and obj_ids == clip.obj_ids and list(masks) == list(frames)
    for t in frames:
        assert masks[t].dtype == bool
        np.testing.assert_array_equal(masks[t], clip.masks[t])
    read = np.stack(list(source))
    assert read.shape == clip.frames.shape
    if exact:
        np.testing.assert_array_equal(read, clip.frames)
    else:  # JPEG
        assert np.abs(read.astype(int) - clip.frames).mean() < 4


def test_davis_round_trip(tmp_path):
    clips = {"b_clip": generate_clip(11, num_frames=5), "a_clip": generate_clip(12, num_frames=4)}
    write_clip_davis(clips["b_clip"], tmp_path, "b_clip", frame_format="png", split="val")
    write_clip_davis(clips["a_clip"], tmp_path, "a_clip", split="val")
    assert (tmp_path / "JPEGImages/480p/a_clip/00000.jpg").is_file()
    assert Image.open(tmp_path / "Annotations/480p/a_clip/00003.png").mode == "P"
    assert (tmp_path / "ImageSets/2017/val.txt").read_text() == "b_clip\na_clip\n"

    dataset = DavisDataset(tmp_path)
    assert dataset.names == ["a_clip", "b_clip"] and len(dataset) == 2
    _check_sequence(dataset["b_clip"], clips["b_clip"], "b_clip")
    _check_sequence(dataset["a_clip"], clips["a_clip"], "a_clip", exact=False)
    assert [s.name for s in DavisDataset(tmp_path, split="val")] == ["b_clip", "a_clip"]

    # Without the 480p level, and a bare folder of sequences (predictions: no frames).
    for kind in ("JPEGImages", "Annotations"):
        shutil.move(tmp_path / kind / "480p", tmp_path / f"{kind}_flat")
        shutil.rmtree(tmp_path / kind)
        shutil.move(tmp_path / f"{kind}_flat", tmp_path / kind)
    _check_sequence(DavisDataset(tmp_path)["b_clip"], clips["b_clip"], "b_clip")
    bare = DavisDataset(tmp_path / "Annotations")["b_clip"]
    assert bare.frames is None and bare.obj_ids == clips["b_clip"].obj_ids


def test_davis_void_is_background_and_ids_are_those_present(tmp_path):
    folder = tmp_path / "Annotations" / "seq"
    folder.mkdir(parents=True)
    labels = np.zeros((2, 6, 8), np.uint8)
    labels[0, 1, 1], labels[0, 2, 2], labels[1, 3, 3], labels[1, 0, 0] = 5, 255, 2, 255
    for t, frame in enumerate(labels):
        Image.fromarray(frame, mode="L").save(folder / f"{t:05d}.png")
    sequence = DavisDataset(tmp_path)["seq"]
    assert sequence.obj_ids == (2, 5) and sequence.frames is None
    np.testing.assert_array_equal(sequence.masks[0], [labels[0] == 2, labels[0] == 5])
    np.testing.assert_array_equal(sequence.masks[1], [labels[1] == 2, labels[1] == 5])


def test_sav_round_trip_with_sparse_annotations(tmp_path):
    clip = generate_clip(21, num_frames=9)
    annotated = [0, 4, 8]  # as SA-V annotates every 4th frame
    with SavWriter(tmp_path / "Annotations_6fps" / "sav_001") as writer:
        for t in annotated:
            writer.write(t, clip.masks[t], clip.obj_ids)
    frames = tmp_path / "JPEGImages_24fps" / "sav_001"
    frames.mkdir(parents=True)
    for t, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(frames / f"{t:05d}.png")
    dataset = SavDataset(tmp_path)
    assert dataset.names == ["sav_001"]
    (sequence,) = list(dataset)
    _check_sequence(sequence, clip, "sav_001", frames=annotated)
    bare = SavDataset(tmp_path / "Annotations_6fps")["sav_001"]
    assert bare.frames is None and list(bare.masks) == annotated


def test_sav_objects_may_overlap(tmp_path):
    masks = np.zeros((2, 5, 5), bool)
    masks[0, 1:4, 1:4] = masks[1, 2:5, 2:5] = True
    with SavWriter(tmp_path / "vid") as writer:
        writer.write(0, masks, [3, 7])
    sequence = SavDataset(tmp_path)["vid"]
    assert sequence.obj_ids == (3, 7)
    np.testing.assert_array_equal(sequence.masks[0], masks)


def test_reader_errors(tmp_path):
    with pytest.raises(ValueError, match="root: .*does not exist"):
        DavisDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="root: .*found none"):
        SavDataset(tmp_path)
    write_clip_davis(generate_clip(0, num_frames=2), tmp_path / "davis", "seq")
    with pytest.raises(ValueError, match="split: .*val.txt"):
        DavisDataset(tmp_path / "davis", split="val")
    with pytest.raises(ValueError, match="name: .*'other'"):
        DavisDataset(tmp_path / "davis")["other"]
    Image.new("RGB", (128, 128)).save(tmp_path / "davis/Annotations/480p/seq/00001.png")
    with pytest.raises(ValueError, match="masks: expected an indexed or greyscale PNG"):
        DavisDataset(tmp_path / "davis")["seq"]

    sav = tmp_path / "sav" / "vid"
    for obj, frames in (("001", (0, 1)), ("002", (0,))):
        (sav / obj).mkdir(parents=True)
        for t in frames:
            Image.new("L", (4, 4)).save(sav / obj / f"{t:05d}.png")
    with pytest.raises(ValueError, match="annotate different frames or sizes"):
        SavDataset(tmp_path / "sav")["vid"]
    (sav / "notes").mkdir()
    with pytest.raises(ValueError, match="per-object folders named by id"):
        SavDataset(tmp_path / "sav")["vid"]
    shutil.rmtree(sav / "notes")
    Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4)).save(sav / "002" / "00001.png")
    with pytest.raises(ValueError, match="one object per SA-V PNG"):
        SavDataset(tmp_path / "sav")["vid"].masks[1]


def test_write_clip_davis_errors(tmp_path):
    clip = generate_clip(0, num_frames=2)
    write_clip_davis(clip, tmp_path, "seq")
    with pytest.raises(ValueError, match="already exists"):
        write_clip_davis(clip, tmp_path, "seq")
    write_clip_davis(generate_clip(1, num_frames=3), tmp_path, "seq", overwrite=True)
    assert len(list((tmp_path / "JPEGImages/480p/seq").iterdir())) == 3
    with pytest.raises(TypeError, match="clip: expected a Clip"):
        write_clip_davis(clip.frames, tmp_path, "x")
    for name in ("", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="name: expected a plain folder name"):
            write_clip_davis(clip, tmp_path, name)
    with pytest.raises(ValueError, match="frame_format"):
        write_clip_davis(clip, tmp_path, "y", frame_format="bmp")
