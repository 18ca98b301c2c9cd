"""Frame sources and mask writers of sam2_jax/video.py, on tiny clips generated with PyAV."""

import json
import tracemalloc

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from pycocotools import mask as coco_mask

from sam2_jax.io.frames import FrameArray, FrameIndexError, FrameList, FrameStream, ImageFolder, VideoError, VideoFile, open_video

from sam2_jax.io.writers import DAVIS_PALETTE, PromptMark, draw_overlay, make_writer, rle_encode

pytestmark = pytest.mark.filterwarnings(  # pycocotools' own use of numpy 2
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

T, H, W, FPS = 12, 64, 96, 12

# name -> (codec, container format, codec options, bit rate); all ship with the PyAV wheel.
FORMATS = {
    "mp4": ("libx264", "mp4", {"crf": "10"}, None),
    "mov": ("libx264", "mov", {"crf": "10"}, None),
    "mkv": ("libx264", "matroska", {"crf": "10"}, None),
    "avi": ("mpeg4", "avi", {}, 4_000_000),
    "webm": ("libvpx-vp9", "webm", {"crf": "10", "b": "0"}, None),
}


def make_clip(n=T, h=H, w=W) -> np.ndarray:
    """(n, h, w, 3) uint8: a gradient with a yellow disk moving down-right and a blue bar moving left."""
    yy, xx = np.mgrid[:h, :w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        frames[t, ..., 0], frames[t, ..., 1], frames[t, ..., 2] = 60 + 2 * xx // 3, 40 + yy, 90
        frames[t][(yy - 16 - 2 * t) ** 2 + (xx - 12 - 5 * t) ** 2 < 100] = (250, 220, 30)
        frames[t, 8:20, w - 20 - 3 * t: w - 8 - 3 * t] = (20, 30, 230)
    return frames


def encode(path, frames, name, gop=4, **container_options):
    """Write frames (T, H, W, 3) uint8 to `path` as format `name` (see FORMATS), a keyframe every `gop`."""
    codec, fmt, options, bit_rate = FORMATS[name]
    with av.open(str(path), "w", format=fmt, options=container_options) as container:
        stream = container.add_stream(codec, rate=FPS, options=options)
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        stream.codec_context.gop_size = gop
        if bit_rate:
            stream.bit_rate = bit_rate
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def clip():
    return make_clip()


@pytest.fixture(scope="module")
def videos(tmp_path_factory, clip):
    folder = tmp_path_factory.mktemp("videos")
    return {name: encode(folder / f"clip.{name}", clip, name) for name in FORMATS}


# ---------------------------------------------------------------------------------------------
# Video files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_video_file_count_size_rate_and_pixels(videos, clip, name):
    with open_video(videos[name]) as video:
        assert isinstance(video, VideoFile)
        assert (video.num_frames, len(video), video.height, video.width) == (T, T, H, W)
        assert video.fps == pytest.approx(FPS)
        frames = np.stack(list(video))
    assert frames.shape == clip.shape and frames.dtype == np.uint8
    error = np.abs(frames.astype(int)[:, None] - clip[None]).mean(axis=(2, 3, 4))  # (decoded, generated)
    assert error.diagonal().max() < 4, error.diagonal()
    assert (error.argmin(axis=1) == np.arange(T)).all()  # each frame is its own, not a neighbour


@pytest.mark.parametrize("name", ["mp4", "avi", "webm"])
def test_random_access_equals_iteration(videos, name):
    video = VideoFile(videos[name], cache_size=2)
    frames = list(video)
    assert video._keyframes == [0, 4, 8]  # gop 4: the order below seeks forward, back and within a GOP
    for i in [5, 6, 11, 2, 0, 9, 7, 7, -1, -12, 3]:
        assert np.array_equal(video[i], frames[i]), i
    assert not video[3].flags.writeable  # cached frames are shared, hence read-only
    with pytest.raises(FrameIndexError, match=r"index: expected a frame index in \[-12, 12\), got 12"):
        video[12]
    with pytest.raises(IndexError):
        video[-13]
    with pytest.raises(TypeError, match="index: expected an int"):
        video[1.0]
    video.close()
    assert np.array_equal(video[4], frames[4])  # reopens after close


@pytest.mark.parametrize("name, container_options", [
    ("mp4", {}), ("mp4", {"movflags": "faststart"}), ("avi", {}), ("mkv", {}), ("webm", {})])
def test_truncated_video_raises(tmp_path, clip, name, container_options):
    path = encode(tmp_path / f"full.{name}", clip, name, **container_options)
    data = path.read_bytes()
    cut = tmp_path / f"cut.{name}"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(VideoError, match="truncated|not a readable|unreadable|holds no"):
        VideoFile(cut)


def test_bad_video_paths(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        open_video(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(VideoError, match="is not a readable video"):
        open_video(tmp_path / "text.mp4")
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    with pytest.raises(VideoError, match="got the image"):
        VideoFile(tmp_path / "image.png")
    with pytest.raises(VideoError, match="is a folder"):
        VideoFile(tmp_path)
    with pytest.raises(ValueError, match="fps: a video file carries its own rate"):
        open_video(tmp_path / "text.mp4", fps=10)


# ---------------------------------------------------------------------------------------------
# Folders, arrays, lists, streams
# ---------------------------------------------------------------------------------------------


def save_frames(folder, names, size=(H, W)):
    """Save one flat PNG per name; the red channel of frame `name` holds the number in its name."""
    folder.mkdir(exist_ok=True)
    for name in names:
        value = int("".join(c for c in name.split(".")[0] if c.isdigit()))
        Image.new("RGB", size[::-1], (value, 7, 9)).save(folder / name)


def test_folder_sorted_by_frame_number(tmp_path):
    save_frames(tmp_path / "a", ["10.png", "9.png", "100.png", "00000.png", "00005.PNG"])
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    Image.new("RGB", (3, 3)).save(tmp_path / "a" / ".hidden.png")
    folder = open_video(tmp_path / "a", fps=24)
    assert isinstance(folder, ImageFolder)
    assert [p.name for p in folder.paths] == ["00000.png", "00005.PNG", "9.png", "10.png", "100.png"]
    assert (folder.num_frames, folder.height, folder.width, folder.fps) == (5, H, W, 24.0)
    assert [int(f[0, 0, 0]) for f in folder] == [0, 5, 9, 10, 100]
    assert folder[-1].shape == (H, W, 3) and folder[3][5, 5].tolist() == [10, 7, 9]
    save_frames(tmp_path / "b", ["frame_2.png", "frame_10.png", "frame_1.png"])
    assert [int(f[0, 0, 0]) for f in ImageFolder(tmp_path / "b")] == [1, 2, 10]


def test_folder_of_jpegs_close_to_source(tmp_path, clip):
    (tmp_path / "j").mkdir()
    for t, frame in enumerate(clip):
        Image.fromarray(frame).save(tmp_path / "j" / f"{t:05d}.jpg", quality=95)
    frames = np.stack(list(open_video(tmp_path / "j")))
    assert frames.shape == clip.shape and np.abs(frames.astype(int) - clip).mean() < 3


@pytest.mark.parametrize("names, sizes, match", [
    ([], None, "found none"),
    (["1.png", "cover.png"], None, "named by frame number"),
    (["1.png", "01.jpg"], None, "frame number 1 appears twice"),
    (["0.png", "1.png"], [(H, W), (H, W + 2)], "every frame must be 64x96"),
])
def test_bad_folders(tmp_path, names, sizes, match):
    (tmp_path / "f").mkdir()
    for name, size in zip(names, sizes or [(H, W)] * len(names)):
        Image.new("RGB", size[::-1]).save(tmp_path / "f" / name)
    with pytest.raises(VideoError, match=match):
        open_video(tmp_path / "f")


def test_folder_with_broken_image(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "00000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoError, match="00000.jpg' is not a readable image"):
        ImageFolder(tmp_path / "f")


def test_arrays_and_lists(clip):
    array = open_video(clip, fps=12)
    assert isinstance(array, FrameArray)
    assert (len(array), array.height, array.width, array.fps) == (T, H, W, 12.0)
    assert array[3] is not None and np.shares_memory(array[3], clip)  # no copy of a uint8 array
    floats = FrameArray(clip.astype(np.float32) / 255)
    assert np.array_equal(np.stack(list(floats)), clip)
    mixed = open_video([Image.fromarray(clip[0]), clip[1], clip[2].astype(np.float64) / 255,
                        Image.fromarray(clip[3]).convert("L")])
    assert isinstance(mixed, FrameList) and len(mixed) == 4
    assert [np.array_equal(mixed[i], clip[i]) for i in range(3)] == [True] * 3
    assert mixed[3].shape == (H, W, 3)  # grayscale images come back as RGB


@pytest.mark.parametrize("frames, error, match", [
    (np.zeros((2, H, W, 3), np.int32), TypeError, "frames: expected dtype uint8, or float in \\[0, 1\\]"),
    (np.zeros((H, W, 3), np.uint8), VideoError, r"frames: expected an RGB array of shape \(T, H, W, 3\)"),
    (np.zeros((2, H, W, 4), np.uint8), VideoError, r"got array of shape \(2, 64, 96, 4\)"),
    (np.full((2, H, W, 3), 2.0), VideoError, r"must lie in \[0, 1\]"),
    (np.full((2, H, W, 3), np.nan), VideoError, r"must lie in \[0, 1\]"),
    (np.zeros((0, H, W, 3), np.uint8), VideoError, "at least one frame"),
    ([], VideoError, "empty list"),
    ([np.zeros((H, W, 3), np.uint8), np.zeros((H, W + 1, 3), np.uint8)], VideoError,
     r"frames\[1\]: expected size \(H, W\) = \(64, 96\)"),
    ([np.zeros((H, W, 3), np.uint8), "frame.png"], TypeError, r"frames\[1\]: expected a PIL image"),
    (42, TypeError, "source: expected a path"),
])
def test_bad_frames(frames, error, match):
    with pytest.raises(error, match=match):
        open_video(frames)


def test_stream_reads_once_in_order(clip):
    stream = open_video(iter(clip), fps=30)
    assert isinstance(stream, FrameStream)
    assert (stream.num_frames, stream.height, stream.width, stream.fps) == (None, H, W, 30.0)
    with pytest.raises(TypeError, match="live stream"):
        len(stream)
    with pytest.raises(TypeError, match="no random access"):
        stream[0]
    assert np.array_equal(np.stack(list(stream)), clip)
    with pytest.raises(VideoError, match="read only once"):
        next(iter(stream))
    bad = FrameStream(iter([clip[0], clip[1], clip[2, :32]]))
    with pytest.raises(VideoError, match=r"frames\[2\]: expected size \(H, W\) = \(64, 96\)"):
        list(bad)
    with pytest.raises(VideoError, match="empty one"):
        FrameStream(iter([]))


def test_stream_memory_stays_flat():
    """1,000 frames of 480x854 (1.2 GB if they were held) pass through with a few frames' memory."""

    def camera():
        for t in range(1000):
            yield np.full((480, 854, 3), t % 256, np.uint8)

    tracemalloc.start()
    try:
        total = sum(int(frame[0, 0, 0]) for frame in open_video(camera()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == sum(t % 256 for t in range(1000))
    assert peak < 8 * 480 * 854 * 3, peak  # under 8 frames (10 MB)


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def random_masks(n_frames=3, ids=(1, 2, 7), size=(H, W), seed=0):
    """(frames, objects, H, W) bool: overlapping rectangles plus noise."""
    rng = np.random.default_rng(seed)
    masks = rng.random((n_frames, len(ids), *size)) > 0.8
    masks[:, :, 10:40, 20:60] = True  # every object covers this block, so they overlap
    return masks


def test_davis_palette_pngs(tmp_path, clip):
    masks, ids = random_masks(), [1, 2, 7]
    with make_writer("davis", tmp_path / "davis") as writer:
        for t in range(3):
            if t == 1:  # the dict form
                writer.write(t, dict(zip(ids, masks[t])), frame=clip[t])
            else:
                writer.write(t, masks[t], ids)
    assert sorted(p.name for p in (tmp_path / "davis").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert DAVIS_PALETTE[[1, 2, 3, 8, 255]].tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0], [64, 0, 0],
                                                         [224, 224, 192]]
    for t in range(3):
        image = Image.open(tmp_path / "davis" / f"{t:05d}.png")
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image.getpalette(), np.uint8).reshape(-1, 3), DAVIS_PALETTE)
        labels = np.asarray(image)
        expected = np.zeros((H, W), np.uint8)
        for k in (2, 1, 0):  # lower ids win where masks overlap
            expected[masks[t, k]] = ids[k]
        assert np.array_equal(labels, expected)
        assert (labels[10:40, 20:60] == 1).all()


def test_sav_per_object_pngs(tmp_path):
    masks, ids = random_masks(), [1, 2, 7]
    with make_writer("sav", tmp_path / "sav") as writer:
        writer.write(0, masks[0], ids)
        writer.write(1, masks[1][:2], ids[:2])  # object 7 missing on frame 1
        writer.write(2, masks[2], ids)
    assert sorted(p.name for p in (tmp_path / "sav").iterdir()) == ["001", "002", "007"]
    for k, obj_id in enumerate(ids):
        for t in range(3):
            values = np.asarray(Image.open(tmp_path / "sav" / f"{obj_id:03d}" / f"{t:05d}.png"))
            assert set(np.unique(values)) <= {0, 1}  # sav_evaluator reads values > 0, two at most
            expected = np.zeros((H, W), bool) if (obj_id, t) == (7, 1) else masks[t, k]
            assert np.array_equal(values > 0, expected)


def test_coco_rle_json_decodes_with_pycocotools(tmp_path):
    masks, ids = random_masks(), [3, 1, 40]
    masks[1, 0] = True  # a full mask (starts with a run of ones)
    masks[1, 1] = False  # an empty one
    with make_writer("coco", tmp_path / "masks.json") as writer:
        for t in range(3):
            writer.write(t, masks[t], ids)
    entries = json.loads((tmp_path / "masks.json").read_text())
    assert [(e["frame_idx"], e["obj_id"]) for e in entries] == [(t, i) for t in range(3) for i in ids]
    for e in entries:
        assert e["segmentation"]["size"] == [H, W] and isinstance(e["segmentation"]["counts"], str)
        decoded = coco_mask.decode(e["segmentation"])
        assert np.array_equal(decoded.astype(bool), masks[e["frame_idx"], ids.index(e["obj_id"])])


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_rle_encode_equals_pycocotools(mask):
    expected = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle_encode(mask) == {"size": list(expected["size"]), "counts": expected["counts"].decode()}


def test_overlay_video(tmp_path):
    h, w = 31, 45  # odd: the video gets one extra row and column
    frames = make_clip(4, h, w)
    masks = np.zeros((4, 2, h, w), bool)
    masks[:, 0, 5:20, 5:25] = True
    masks[:, 1, 10:30, 30:44] = True
    prompts = [PromptMark(2, 1, points=[(12, 12)], labels=[1]), PromptMark(2, 2, box=(30, 10, 43, 29))]
    with make_writer("overlay", tmp_path / "overlay.mp4", fps=8, prompts=prompts) as writer:
        for t in [0, 1, 2, 5]:
            writer.write(t, masks[min(t, 3)], [1, 2], frame=frames[min(t, 3)])
    with av.open(str(tmp_path / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (stream.frames, stream.height, stream.width) == (4, h + 1, w + 1)
        assert stream.average_rate == 8
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 4
    expected = draw_overlay(frames[0], [1, 2], masks[0]).astype(int)
    # Colours survive 4:2:0 chroma subsampling as region means (1-pixel outlines do not).
    regions = {"object 1": np.s_[8:18, 8:22], "object 2": np.s_[16:28, 33:42],
               "background": np.s_[22:31, 0:20]}
    for name, region in regions.items():
        mean = decoded[0][region].mean(axis=(0, 1))
        assert np.abs(mean - expected[region].mean(axis=(0, 1))).max() < 6, name
    assert np.abs(decoded[0][8:18, 8:22].astype(int) - frames[0, 8:18, 8:22]).mean() > 20  # tinted


def test_draw_overlay_colours_ids_and_prompts():
    frame = np.full((60, 80, 3), 100, np.uint8)
    masks = np.zeros((2, 60, 80), bool)
    masks[0, 30:50, 10:30] = True
    masks[1, 40:55, 20:40] = True  # overlaps object 1 at rows 40:50, cols 20:30
    prompts = [PromptMark(0, 1, points=[(60, 10), (70, 20)], labels=[1, 0]),
               PromptMark(0, 2, box=(45, 30, 75, 55))]
    image = draw_overlay(frame, [1, 2], masks, prompts, alpha=0.5)
    assert image[35, 15].tolist() == [114, 50, 50]  # inside object 1: half frame, half (128, 0, 0)
    assert image[52, 35].tolist() == [50, 114, 50]  # inside object 2 only: half (0, 128, 0)
    assert image[45, 25].tolist() == [89, 57, 25]  # overlap: object 1 blended over object 2's blend
    assert image[30, 10].tolist() == [128, 0, 0]  # the outline is opaque
    assert image[10, 60].tolist() == [0, 255, 0] and image[20, 70].tolist() == [255, 0, 0]  # crosses
    assert image[30, 60].tolist() == [0, 128, 0]  # box edge in object 2's colour
    assert (image[15:29, 10:30] != 100).any()  # the id is written above object 1


def test_writers_finish_or_leave_nothing(tmp_path):
    masks = random_masks(1)[0]
    for fmt, out in [("davis", "d"), ("sav", "s"), ("coco", "c.json"), ("overlay", "o.mp4")]:
        with pytest.raises(RuntimeError, match="boom"):
            with make_writer(fmt, tmp_path / out) as writer:
                writer.write(0, masks, [1, 2, 7], frame=np.zeros((H, W, 3), np.uint8))
                raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # no output, no temporary left behind
    writer = make_writer("overlay", tmp_path / "empty.mp4")
    with pytest.raises(VideoError, match="no frame was written"):
        writer.close()
    assert list(tmp_path.iterdir()) == []


def test_writer_output_place(tmp_path):
    masks = random_masks(1)[0]
    (tmp_path / "empty").mkdir()
    with make_writer("davis", tmp_path / "empty") as writer:  # an existing empty folder is fine
        writer.write(0, masks, [1, 2, 7])
    with pytest.raises(VideoError, match="already exists; pass overwrite=True"):
        make_writer("davis", tmp_path / "empty")
    with make_writer("davis", tmp_path / "empty", overwrite=True) as writer:
        writer.write(4, masks, [1, 2, 7])
    assert [p.name for p in (tmp_path / "empty").iterdir()] == ["00004.png"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(VideoError, match="out: cannot write to"):
        make_writer("coco", tmp_path / "file" / "masks.json")
    with pytest.raises(VideoError, match="out: expected a folder path, got .* an existing file"):
        make_writer("sav", tmp_path / "file", overwrite=True)
    known = r"\['coco', 'davis', 'overlay', 'sav'\]"
    with pytest.raises(ValueError, match=rf"format: expected one of {known}, got 'png'"):
        make_writer("png", tmp_path / "x")
    with pytest.raises(VideoError, match="already closed"):
        writer.write(5, masks, [1, 2, 7])
    writer.close()  # closing twice is harmless


def test_write_checks_its_input(tmp_path):
    masks = random_masks(1)[0]
    frame = np.zeros((H, W, 3), np.uint8)
    writer = make_writer("davis", tmp_path / "d")
    writer.write(0, masks, [1, 2, 7])
    ids = [1, 2, 7]
    cases = [
        (TypeError, r"masks: expected a dict of bool \(H, W\) masks", dict(masks=masks.astype(np.uint8))),
        (ValueError, "obj_ids: expected 3 ids, one per mask", dict(obj_ids=[1, 2])),
        (ValueError, "obj_ids: expected distinct ids", dict(obj_ids=[1, 1, 2])),
        (TypeError, "obj_ids: expected None when masks is a dict", dict(masks={1: masks[0]}, obj_ids=[1])),
        (TypeError, r"masks\[1\]: expected a bool \(H, W\) mask", dict(masks={1: masks[0, 0]}, obj_ids=None)),
        (VideoError, r"masks: expected size \(H, W\) = \(64, 96\)", dict(masks=masks[:, :32])),
        (VideoError, r"frame: expected size \(H, W\) = \(64, 96\)", dict(frame=frame[:32])),
        (TypeError, r"frame: expected a uint8 \(H, W, 3\) array", dict(frame=frame[..., 0])),
        (ValueError, "obj_ids: DAVIS PNGs hold ids in 1..254", dict(obj_ids=[0, 2, 7])),
        (ValueError, "frame_idx: frame 0 was already written", dict(frame_idx=0)),
        (ValueError, "frame_idx: expected a non-negative int", dict(frame_idx=-1)),
    ]
    for error, match, kwargs in cases:
        with pytest.raises(error, match=match):
            writer.write(**{"frame_idx": 1, "masks": masks, "obj_ids": ids, **kwargs})
    writer.write(1, {}, frame=frame)  # no objects on this frame: all background
    writer.close()
    assert not np.asarray(Image.open(tmp_path / "d" / "00001.png")).any()
    overlay = make_writer("overlay", tmp_path / "o.mp4")
    with pytest.raises(ValueError, match="frame: the overlay writer needs"):
        overlay.write(0, masks, [1, 2, 7])
    overlay.write(3, masks, [1, 2, 7], frame=frame)
    with pytest.raises(ValueError, match="frame_idx: overlay frames must come in increasing order"):
        overlay.write(2, masks, [1, 2, 7], frame=frame)
    overlay.abort()
    with pytest.raises(ValueError, match=r"labels: expected one label in \{0, 1\} per point"):
        PromptMark(0, 1, points=[(1, 2)], labels=[2])
    with pytest.raises(ValueError, match=r"points: expected \(N, 2\) x, y pairs"):
        PromptMark(0, 1, points=[1, 2], labels=[1, 1])
