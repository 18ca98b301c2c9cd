"""Video in, masks out: frame sources and mask writers.

Sources hand out frames as uint8 RGB arrays of shape (H, W, 3), decoded lazily, one at a time,
at the video's own size: memory stays flat whatever the length. Every source has `num_frames`
(None for a live stream), `height`, `width`, `fps` (None where unknown), iteration in order and,
where the frame count is known, `len()` and random access `source[i]`.

- `VideoFile`: mp4, mov, webm, avi, mkv... through PyAV (imported only by `VideoFile` and
  `OverlayWriter`, so frames in memory and PNG/JSON writers work without it).
- `ImageFolder`: a folder of JPEG/PNG frames sorted by the number that ends each file name.
- `FrameArray`: a (T, H, W, 3) array, uint8 or float in [0, 1].
- `FrameList`: a list of PIL images or (H, W, 3) arrays.
- `FrameStream`: a live iterator of frames (webcam, network); read once, in order.
`open_video(source)` picks the right one.

Writers take the masks of one frame at a time, as a dict {obj_id: bool (H, W)} or as a bool
(N, H, W) array with its `obj_ids`: `DavisWriter` (indexed-palette PNG per frame), `SavWriter`
(one binary PNG per object per frame), `CocoRleWriter` (COCO compressed RLE in JSON) and
`OverlayWriter` (H.264 mp4 of the frames with masks, ids and prompts drawn). `make_writer`
picks one by name.

Bad input raises `VideoError` (a ValueError) or TypeError naming the argument, what was
expected and what came.
"""

from __future__ import annotations

import bisect
import collections
import json
import numbers
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class VideoError(ValueError):
    """A video, folder, frame or mask that cannot be read or written as promised."""


class FrameIndexError(IndexError, ValueError):
    """A frame index outside the video (an IndexError for Python, a ValueError for the project)."""


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, Image.Image):
        return f"PIL image of mode {value.mode} and size {value.size}"
    return type(value).__name__


def _check_array(array: np.ndarray, name: str, rank: int) -> None:
    """Raise unless `array` is uint8, or float with every value in [0, 1], of shape (..., 3)."""
    if array.ndim != rank or array.shape[-1] != 3:
        dims = "(T, H, W, 3)" if rank == 4 else "(H, W, 3)"
        raise VideoError(f"{name}: expected an RGB array of shape {dims}, got {_describe(array)}")
    if array.dtype == np.uint8:
        return
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name}: expected dtype uint8, or float in [0, 1], got {_describe(array)}")
    if array.size and not (array.min() >= 0.0 and array.max() <= 1.0):  # also false for NaN
        raise VideoError(f"{name}: float frames must lie in [0, 1]; got values in "
                         f"[{array.min()}, {array.max()}]")


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 or float in [0, 1] -> (H, W, 3) uint8 (floats rounded from x * 255)."""
    if frame.dtype == np.uint8:
        return frame
    return np.round(frame * 255.0).astype(np.uint8)


def _checked_frame(frame, name: str) -> np.ndarray | Image.Image:
    """Validate one frame (PIL image or (H, W, 3) array) without converting it."""
    if isinstance(frame, Image.Image):
        return frame
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"{name}: expected a PIL image or an (H, W, 3) numpy array, got {_describe(frame)}")
    _check_array(frame, name, rank=3)
    return frame


def _frame_size(frame) -> tuple[int, int]:
    """(H, W) of a PIL image or an array frame."""
    return (frame.size[1], frame.size[0]) if isinstance(frame, Image.Image) else frame.shape[:2]


def _rgb(frame) -> np.ndarray:
    """A validated frame -> (H, W, 3) uint8."""
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    return _to_uint8(frame)


def _check_size(frame, size: tuple[int, int], name: str) -> None:
    """Raise unless the frame is (H, W) = size, the size of frames[0]."""
    if _frame_size(frame) != size:
        raise VideoError(f"{name}: expected size (H, W) = {size} like frames[0], got {_frame_size(frame)}")


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


class FrameSource:
    """Frames of one video, (H, W, 3) uint8 RGB, in order. Treat frames as read-only: some are
    views of the caller's array or shared with a cache.

    Subclasses set `num_frames` (None for a live stream), `height`, `width`, `fps` (None where
    unknown) and implement `_frame(i)`; a stream overrides `__iter__` instead.
    """

    num_frames: int | None
    height: int
    width: int
    fps: float | None

    def __len__(self) -> int:
        if self.num_frames is None:
            raise TypeError(f"{type(self).__name__} is a live stream: its length is unknown")
        return self.num_frames

    def __getitem__(self, index: int) -> np.ndarray:
        """Frame `index` (negative counts from the end) as (H, W, 3) uint8."""
        if self.num_frames is None:
            raise TypeError(f"{type(self).__name__} is a live stream: it has no random access")
        n = self.num_frames
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        if not -n <= index < n:
            raise FrameIndexError(f"index: expected a frame index in [{-n}, {n}), got {index}")
        return self._frame(int(index) % n)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self._frame(i)

    def _frame(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release open files; the base source holds none."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_frames={self.num_frames}, height={self.height}, "
                f"width={self.width}, fps={self.fps})")


class FrameArray(FrameSource):
    """Frames from an array (T, H, W, 3): uint8, or float with values in [0, 1] (converted per
    frame as round(x * 255), never as a whole). The array is used as is, not copied."""

    def __init__(self, frames: np.ndarray, fps: float | None = None):
        if not isinstance(frames, np.ndarray):
            raise TypeError(f"frames: expected a numpy array (T, H, W, 3), got {_describe(frames)}")
        _check_array(frames, "frames", rank=4)
        if frames.shape[0] == 0:
            raise VideoError("frames: expected at least one frame, got an array with T = 0")
        self._frames = frames
        self.num_frames, self.height, self.width = frames.shape[:3]
        self.fps = _checked_fps(fps)

    def _frame(self, i: int) -> np.ndarray:
        return _to_uint8(self._frames[i])


class FrameList(FrameSource):
    """Frames from a list of PIL images and/or (H, W, 3) arrays (uint8 or float in [0, 1]), all
    of one size; each is converted to uint8 RGB when it is read."""

    def __init__(self, frames: Sequence, fps: float | None = None):
        if len(frames) == 0:
            raise VideoError("frames: expected at least one frame, got an empty list")
        self._frames = [_checked_frame(f, f"frames[{i}]") for i, f in enumerate(frames)]
        self.height, self.width = _frame_size(self._frames[0])
        for i, f in enumerate(self._frames):
            _check_size(f, (self.height, self.width), f"frames[{i}]")
        self.num_frames = len(self._frames)
        self.fps = _checked_fps(fps)

    def _frame(self, i: int) -> np.ndarray:
        return _rgb(self._frames[i])


class ImageFolder(FrameSource):
    """Frames from a folder of .jpg/.jpeg/.png files (any case), loaded lazily with PIL.

    Files are ordered by the number that ends their name: `00005.jpg` before `00010.jpg`, and
    `frame_9.png` before `frame_10.png`. Frame i is the i-th file in that order, whatever gaps
    the numbering has (as in the original predictor). A frame file whose name does not end in
    digits, or two files with the same number, raise VideoError. Hidden files and files with
    other extensions are ignored. `paths` lists the files in frame order.
    """

    def __init__(self, folder: str | os.PathLike, fps: float | None = None):
        folder = Path(folder)
        if not folder.is_dir():
            raise VideoError(f"folder: expected a folder of frames, got {str(folder)!r}, which "
                             + ("is not a folder" if folder.exists() else "does not exist"))
        files = [p for p in folder.iterdir()
                 if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]
        if not files:
            raise VideoError(f"folder: expected {'/'.join(IMAGE_SUFFIXES)} frames in {str(folder)!r}, "
                             "found none")
        numbered = {}
        for p in files:
            match = re.search(r"(\d+)$", p.stem)
            if match is None:
                raise VideoError(f"folder: frame files must be named by frame number (like 00005.jpg); "
                                 f"got {p.name!r} in {str(folder)!r}")
            number = int(match.group(1))
            if number in numbered:
                raise VideoError(f"folder: frame number {number} appears twice in {str(folder)!r}: "
                                 f"{numbered[number].name!r} and {p.name!r}")
            numbered[number] = p
        self.paths = [numbered[k] for k in sorted(numbered)]
        self.height, self.width = self._size(self.paths[0])
        for p in self.paths[1:]:
            if self._size(p) != (self.height, self.width):
                raise VideoError(f"folder: every frame must be {self.height}x{self.width} (H x W) like "
                                 f"{self.paths[0].name!r}; {p.name!r} is {'x'.join(map(str, self._size(p)))}")
        self.num_frames = len(self.paths)
        self.fps = _checked_fps(fps)

    @staticmethod
    def _size(path: Path) -> tuple[int, int]:
        """(H, W) from the image header, without decoding the pixels."""
        try:
            with Image.open(path) as image:
                return image.size[1], image.size[0]
        except (OSError, SyntaxError) as e:
            raise VideoError(f"folder: {str(path)!r} is not a readable image ({e})") from e

    def _frame(self, i: int) -> np.ndarray:
        try:
            with Image.open(self.paths[i]) as image:
                return np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError) as e:
            raise VideoError(f"folder: frame {i} ({str(self.paths[i])!r}) cannot be decoded ({e})") from e


class FrameStream(FrameSource):
    """Frames from a live iterator (PIL images or (H, W, 3) arrays), read once, in order.

    The first frame is read at construction to learn the size; every later frame must have
    it. `num_frames` is None, so there is no `len()` and no random access.
    """

    def __init__(self, frames: Iterable, fps: float | None = None):
        self._frames = iter(frames)
        try:
            first = next(self._frames)
        except StopIteration:
            raise VideoError("frames: expected a stream of frames, got an empty one") from None
        self._first = _checked_frame(first, "frames[0]")
        self.height, self.width = _frame_size(self._first)
        self.num_frames = None
        self.fps = _checked_fps(fps)
        self._started = False

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._started:
            raise VideoError("frames: a live stream can be read only once, and this one was already read")
        self._started = True
        yield _rgb(self._first)
        self._first = None
        for i, frame in enumerate(self._frames, start=1):
            frame = _checked_frame(frame, f"frames[{i}]")
            _check_size(frame, (self.height, self.width), f"frames[{i}]")
            yield _rgb(frame)


class VideoFile(FrameSource):
    """Frames of a video file (mp4, mov, webm, avi, mkv...), decoded lazily with PyAV.

    Opening reads the packet index once (no decoding) to count the frames and check the count
    against what the file declares (its frame count, or for one-stream files its duration):
    a file that holds fewer frames is truncated and raises VideoError, as does a read or
    decode failure later. Random access seeks to the keyframe at or before the frame and
    decodes forward; reading frames in increasing order never seeks back, and the last
    `cache_size` frames read are kept (so frames from `source[i]` are read-only). Iteration
    opens its own decoder.
    """

    def __init__(self, path: str | os.PathLike, cache_size: int = 4):
        if not isinstance(cache_size, numbers.Integral) or cache_size < 0:
            raise ValueError(f"cache_size: expected a non-negative int, got {cache_size!r}")
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"path: expected a video file, got {str(path)!r}, which "
                             + ("is a folder" if self.path.exists() else "does not exist"))
        if self.path.suffix.lower() in IMAGE_SUFFIXES:
            raise VideoError(f"path: expected a video file, got the image {str(path)!r}; "
                             "pass the folder that holds the frames instead")
        container, stream = self._open()
        try:
            self.height, self.width = stream.codec_context.height, stream.codec_context.width
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else None
            self._index(container, stream)
        finally:
            container.close()
        self._cache = collections.OrderedDict()  # frame index -> read-only (H, W, 3) uint8
        self._cache_size = cache_size
        self._container = self._decoder = None  # the random-access reader, opened on first use
        self._next = 0  # the frame index self._decoder yields next

    def _open(self):
        """(container, first video stream), or VideoError saying why not."""
        import av
        try:
            container = av.open(str(self.path))
        except (av.FFmpegError, EOFError) as e:
            raise VideoError(f"path: {str(self.path)!r} is not a readable video ({e})") from e
        if not container.streams.video:
            container.close()
            raise VideoError(f"path: {str(self.path)!r} holds no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        # A damaged frame is an error naming it, not a frame the decoder silently patches up (FFmpeg conceals
        # errors by default; codecs that cannot detect damage still decode as before).
        stream.codec_context.options = {"err_detect": "explode"}
        return container, stream

    def _index(self, container, stream) -> None:
        """Count frames from the packets and check the count; keep the pts of each frame."""
        import av
        pts, keyframe_pts, end = [], [], 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keyframe_pts.append(packet.pts)
                if packet.pts is not None:
                    end = max(end, packet.pts + (packet.duration or 0))
        except (av.FFmpegError, EOFError) as e:
            raise VideoError(f"path: {str(self.path)!r} is unreadable after {len(pts)} frames ({e})") from e
        self.num_frames = len(pts)
        if self.num_frames == 0:
            raise VideoError(f"path: {str(self.path)!r} holds no video frames")
        declared = stream.frames
        if declared and declared != self.num_frames:
            raise VideoError(f"path: {str(self.path)!r} declares {declared} frames but holds "
                             f"{self.num_frames}: the file is truncated or damaged")
        if not declared and len(container.streams) == 1 and container.duration and self.fps:
            # No frame count (mkv, webm): the frames must reach the declared duration.
            seconds = float((end - (stream.start_time or 0)) * stream.time_base)
            if seconds < container.duration / 1e6 - 2.0 / self.fps:
                raise VideoError(f"path: {str(self.path)!r} declares {container.duration / 1e6:.3f} s "
                                 f"but its {self.num_frames} frames end at {seconds:.3f} s: the file "
                                 "is truncated or damaged")
        if None in pts:  # no timestamps to seek by: random access decodes from the start
            self._frame_pts, self._pts_index, self._keyframes = None, None, []
            return
        self._frame_pts = sorted(pts)  # presentation order
        self._pts_index = {p: i for i, p in enumerate(self._frame_pts)}
        self._keyframes = sorted(self._pts_index[p] for p in keyframe_pts)

    def _decode(self, container, stream, start: int = 0) -> Iterator[tuple[int, av.VideoFrame]]:
        """(frame index, av frame) in order from `start`, once the container is positioned at or
        before it."""
        import av
        i = start - 1
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets, None)
                if packet is None:
                    return
                frames = packet.decode()
            except (av.FFmpegError, EOFError) as e:  # (threaded decoders report it a few packets late)
                raise VideoError(f"path: frame {i + 1} of {str(self.path)!r} cannot be decoded ({e}); the frames "
                                 f"before it can") from e
            for frame in frames:
                if self._pts_index is None:
                    i += 1
                elif frame.pts in self._pts_index:
                    i = self._pts_index[frame.pts]
                else:
                    continue
                if i >= start:
                    yield i, frame

    def _array(self, frame: av.VideoFrame, i: int) -> np.ndarray:
        array = frame.to_ndarray(format="rgb24")
        if array.shape[:2] != (self.height, self.width):
            raise VideoError(f"path: frame {i} of {str(self.path)!r} is {array.shape[0]}x{array.shape[1]}, "
                             f"not {self.height}x{self.width} like the stream")
        return array

    def __iter__(self) -> Iterator[np.ndarray]:
        container, stream = self._open()
        count = 0
        try:
            for i, frame in self._decode(container, stream):
                yield self._array(frame, i)
                count += 1
        finally:
            container.close()
        if count != self.num_frames:
            raise VideoError(f"path: {str(self.path)!r} holds {self.num_frames} frames but only "
                             f"{count} could be decoded: the file is damaged")

    def _frame(self, i: int) -> np.ndarray:
        """Frame i, read-only: from the cache, by decoding on, or after seeking to its keyframe."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        k = bisect.bisect_right(self._keyframes, i) - 1
        keyframe = self._keyframes[k] if k >= 0 else 0
        if self._decoder is None or not keyframe <= self._next <= i:
            self._seek(keyframe)
        try:
            for j, frame in self._decoder:
                self._next = j + 1
                if j == i:
                    array = self._array(frame, i)
                    array.flags.writeable = False
                    self._cache[i] = array
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
                    return array
                if j > i:
                    break
        finally:
            if self._next <= i:  # failed: start afresh next time
                self.close()
        raise VideoError(f"path: frame {i} of {str(self.path)!r} could not be decoded")

    def _seek(self, keyframe: int) -> None:
        """Point the random-access reader at frame index `keyframe` (a keyframe, or 0)."""
        if self._container is None or keyframe == 0:  # reopening restarts any container
            if self._container is not None:
                self._container.close()
            self._container, stream = self._open()
        else:
            stream = self._container.streams.video[0]
            self._container.seek(self._frame_pts[keyframe], backward=True, any_frame=False, stream=stream)
        self._decoder, self._next = self._decode(self._container, stream, keyframe), keyframe

    def close(self) -> None:
        """Close the random-access reader and empty the cache (reading again reopens them)."""
        if self._container is not None:
            self._container.close()
        self._container = self._decoder = None
        self._cache.clear()


def _checked_fps(fps) -> float | None:
    if fps is None:
        return None
    if not isinstance(fps, numbers.Real) or isinstance(fps, bool) or not fps > 0:
        raise ValueError(f"fps: expected a positive number or None, got {fps!r}")
    return float(fps)


def open_video(source, fps: float | None = None) -> FrameSource:
    """The frame source for `source`.

    source: a path to a video file or to a folder of frames, a (T, H, W, 3) numpy array, a
      list/tuple of frames (PIL images or (H, W, 3) arrays), an iterator of frames (a live
      stream), or a FrameSource (returned as is).
    fps: the rate of a source that has none of its own (folder, array, list, stream).
    """
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return ImageFolder(path, fps)
        if fps is not None:
            raise ValueError(f"fps: a video file carries its own rate; expected None, got {fps!r}")
        return VideoFile(path)
    if isinstance(source, np.ndarray):
        return FrameArray(source, fps)
    if isinstance(source, (list, tuple)):
        return FrameList(source, fps)
    if isinstance(source, Iterator):
        return FrameStream(source, fps)
    raise TypeError("source: expected a path to a video file or a folder of frames, a (T, H, W, 3) "
                    f"numpy array, a list of frames or an iterator of frames, got {_describe(source)}")


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def davis_palette() -> np.ndarray:
    """The DAVIS (PASCAL VOC) palette, (256, 3) uint8. Bits 0, 3, 6 of index i set bits 7, 6, 5 of
    its red; bits 1, 4, 7 those of its green; bits 2, 5 those of its blue."""
    index = np.arange(256)
    palette = np.zeros((256, 3), np.int64)
    for bit in range(3):
        for channel in range(3):
            palette[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


DAVIS_PALETTE = davis_palette()


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a bool (H, W) mask: run lengths over the column-major pixels, 0s first
    (the original amg's `mask_to_rle_pytorch`)."""
    flat = np.asarray(mask, bool).ravel(order="F")
    starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], starts, [flat.size]]))
    return ([0] if flat.size and flat[0] else []) + counts.tolist()


def rle_encode(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a bool (H, W) mask: {"size": [H, W], "counts": str}.

    Runs alternate 0s and 1s over the column-major pixels, starting with 0s; each count is
    stored minus the count two runs back (from the fourth on) as 5-bit groups, low bits first,
    the 0x20 bit marking a continuation, offset by 48 into printable ASCII (pycocotools'
    rleToString).
    """
    counts = rle_counts(mask)
    chars = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        while True:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr((c | 0x20 if more else c) + 48))
            if not more:
                break
    return {"size": list(mask.shape), "counts": "".join(chars)}


@dataclass(frozen=True)
class PromptMark:
    """A prompt to draw on the overlay at frame `frame_idx`, in pixel coordinates of the frame.

    points: (N, 2) x, y with labels (N,): 1 positive (green cross), 0 negative (red cross).
    box: x0, y0, x1, y1, drawn as a rectangle in the object's colour.
    """

    frame_idx: int
    obj_id: int
    points: Sequence[Sequence[float]] = ()
    labels: Sequence[int] = ()
    box: Sequence[float] | None = None

    def __post_init__(self):
        for name in ("frame_idx", "obj_id"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
        n = len(self.points)
        if n and np.shape(self.points) != (n, 2):
            raise ValueError(f"points: expected (N, 2) x, y pairs, got {self.points!r}")
        if len(self.labels) != n or any(label not in (0, 1) for label in self.labels):
            raise ValueError(f"labels: expected one label in {{0, 1}} per point ({n} points), "
                             f"got {list(self.labels)}")
        if self.box is not None and np.shape(self.box) != (4,):
            raise ValueError(f"box: expected (x0, y0, x1, y1), got {self.box!r}")


def _mask_stack(masks, obj_ids, size) -> tuple[list[int], np.ndarray]:
    """Validated (object ids, bool (N, H, W) masks) from a dict or an array plus ids.

    size: (H, W) to use when there are no masks at all, or None.
    """
    if isinstance(masks, Mapping):
        if obj_ids is not None:
            raise TypeError("obj_ids: expected None when masks is a dict (its keys are the ids), "
                            f"got {obj_ids!r}")
        obj_ids, arrays = list(masks), [np.asarray(m) for m in masks.values()]
        for i, m in zip(obj_ids, arrays):
            if m.ndim != 2 or m.dtype != bool:
                raise TypeError(f"masks[{i!r}]: expected a bool (H, W) mask, got {_describe(m)}")
            if m.shape != arrays[0].shape:
                raise VideoError(f"masks[{i!r}]: expected shape {arrays[0].shape} like the first mask, "
                                 f"got {m.shape}")
        if not arrays and size is None:
            raise VideoError("masks: an empty dict needs the frame size; pass frame or write a mask first")
        masks = np.stack(arrays) if arrays else np.zeros((0, *size), bool)
    else:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.dtype != bool:
            raise TypeError(f"masks: expected a dict of bool (H, W) masks or a bool (N, H, W) array, "
                            f"got {_describe(masks)}")
        if obj_ids is None or len(obj_ids) != len(masks):
            raise ValueError(f"obj_ids: expected {len(masks)} ids, one per mask, got {obj_ids!r}")
        obj_ids = list(obj_ids)
    for i in obj_ids:
        if not isinstance(i, numbers.Integral) or isinstance(i, bool) or i < 0:
            raise ValueError(f"obj_ids: expected non-negative ints, got {obj_ids!r}")
    if len(set(obj_ids)) != len(obj_ids):
        raise ValueError(f"obj_ids: expected distinct ids, got {obj_ids!r}")
    return [int(i) for i in obj_ids], masks


class MaskWriter:
    """Base of the writers: checks each frame's masks and keeps the output complete-or-absent.

    The output is built under a hidden temporary name beside `out` (`.NAME.*.partial`) and
    renamed to `out` only when `close()` succeeds. `abort()`, or an exception inside a `with`
    block, deletes it, so a file or folder under the name `out` is always a finished one. An
    existing `out` is an error unless `overwrite` (or, for a folder, it is empty); it is
    replaced on close. A place that cannot be written fails here, at open time.
    """

    is_folder = False

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False):
        self.out = Path(out)
        kind = "folder" if self.is_folder else "file"
        if self.out.exists() and self.out.is_dir() != self.is_folder:
            raise VideoError(f"out: expected a {kind} path, got {str(self.out)!r}, an existing "
                             + ("file" if self.is_folder else "folder"))
        if self.out.exists() and not overwrite and not (self.is_folder and self.out.is_dir()
                                                         and not any(self.out.iterdir())):
            raise VideoError(f"out: {str(self.out)!r} already exists; pass overwrite=True to replace it")
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            prefix, suffix = f".{self.out.name}.", f".partial{self.out.suffix}"
            if self.is_folder:
                self._tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=self.out.parent))
            else:
                fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=self.out.parent)
                os.close(fd)
                self._tmp = Path(tmp)
        except OSError as e:
            raise VideoError(f"out: cannot write to {str(self.out)!r} ({e})") from e
        self.size = None  # (H, W) of the masks, set by the first write
        self._frames = set()
        self._writing = True

    def write(self, frame_idx: int, masks, obj_ids: Sequence[int] | None = None,
              frame: np.ndarray | None = None) -> None:
        """Write the masks of frame `frame_idx`.

        masks: {obj_id: bool (H, W)}, or bool (N, H, W) with obj_ids (N,).
        frame: the (H, W, 3) uint8 video frame; the overlay writer needs it, others ignore it.
        """
        if not self._writing:
            raise VideoError(f"out: the writer for {str(self.out)!r} is already closed")
        if not isinstance(frame_idx, numbers.Integral) or isinstance(frame_idx, bool) or frame_idx < 0:
            raise ValueError(f"frame_idx: expected a non-negative int, got {frame_idx!r}")
        if frame_idx in self._frames:
            raise ValueError(f"frame_idx: frame {frame_idx} was already written")
        if frame is not None and not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8
                                      and frame.ndim == 3 and frame.shape[2] == 3):
            raise TypeError(f"frame: expected a uint8 (H, W, 3) array, got {_describe(frame)}")
        frame_size = None if frame is None else frame.shape[:2]
        obj_ids, masks = _mask_stack(masks, obj_ids, self.size or frame_size)
        size = masks.shape[1:]
        if self.size is not None and size != self.size:
            raise VideoError(f"masks: expected size (H, W) = {self.size} like the masks written before, "
                             f"got {size}")
        if frame_size is not None and frame_size != size:
            raise VideoError(f"frame: expected size (H, W) = {size} like the masks, got {frame.shape[:2]}")
        self.size = size
        self._write(int(frame_idx), obj_ids, masks, frame)
        self._frames.add(int(frame_idx))

    def _write(self, frame_idx: int, obj_ids: list[int], masks: np.ndarray, frame) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Complete the temporary output (called once by close)."""

    def close(self) -> None:
        """Finish the output and move it to `out`. Closing twice is harmless."""
        if not self._writing:
            return
        try:
            self._finish()
            old = None
            if self.is_folder and self.out.is_dir():  # moved aside first: a stop never leaves half of it
                old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial", dir=self.out.parent))
                os.replace(self.out, old / "old")
            os.replace(self._tmp, self.out)
        except BaseException:
            self.abort()
            raise
        self._writing = False
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Delete the temporary output; `out` is left as it was."""
        self._writing = False
        if self.is_folder:
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _save_palette_png(path: Path, labels: np.ndarray) -> None:
    """Save uint8 (H, W) labels as an indexed PNG with the DAVIS palette."""
    image = Image.fromarray(labels, mode="P")
    image.putpalette(DAVIS_PALETTE.tobytes())
    image.save(path)


class DavisWriter(MaskWriter):
    """DAVIS 2017 layout: `out/{frame_idx:05d}.png`, one indexed PNG per frame, pixel = object id
    (0 background), DAVIS palette. Ids must lie in 1..254 (255 is DAVIS's void). Where masks
    overlap the lower id wins, as in the original `tools/vos_inference.py`."""

    is_folder = True

    def _write(self, frame_idx, obj_ids, masks, frame):
        if any(not 1 <= i <= 254 for i in obj_ids):
            raise ValueError(f"obj_ids: DAVIS PNGs hold ids in 1..254, got {obj_ids}")
        labels = np.zeros(masks.shape[1:], np.uint8)
        for i in np.argsort(obj_ids)[::-1]:  # highest id first, so lower ids paint over it
            labels[masks[i]] = obj_ids[i]
        _save_palette_png(self._tmp / f"{frame_idx:05d}.png", labels)


class SavWriter(MaskWriter):
    """SA-V layout: `out/{obj_id:03d}/{frame_idx:05d}.png`, one PNG per object per frame, so
    masks may overlap. Each PNG is indexed (DAVIS palette) with 1 on the object and 0 elsewhere,
    as the original `vos_inference.py --per_obj_png_file` writes and `sav_evaluator.py` reads
    (value > 0, at most two values per file). The evaluator needs a file for every frame of
    every object, so on close each object gets an empty mask on the written frames that
    lacked it."""

    is_folder = True

    def __init__(self, out, *, overwrite: bool = False):
        super().__init__(out, overwrite=overwrite)
        self._objects = collections.defaultdict(set)  # obj_id -> frame indices written

    def _write(self, frame_idx, obj_ids, masks, frame):
        for obj_id, mask in zip(obj_ids, masks):
            folder = self._tmp / f"{obj_id:03d}"
            folder.mkdir(exist_ok=True)
            _save_palette_png(folder / f"{frame_idx:05d}.png", mask.astype(np.uint8))
            self._objects[obj_id].add(frame_idx)

    def _finish(self):
        empty = np.zeros(self.size or (1, 1), np.uint8)  # size is set once an object was written
        for obj_id, frames in self._objects.items():
            for frame_idx in self._frames - frames:
                _save_palette_png(self._tmp / f"{obj_id:03d}" / f"{frame_idx:05d}.png", empty)


class CocoRleWriter(MaskWriter):
    """One JSON file: a list of {"frame_idx", "obj_id", "segmentation": {"size": [H, W],
    "counts": str}} in COCO compressed RLE (column-major), one entry per mask written, in
    write order; `pycocotools.mask.decode(entry["segmentation"])` gives the mask back.
    Entries are streamed to disk as they come."""

    def __init__(self, out, *, overwrite: bool = False):
        super().__init__(out, overwrite=overwrite)
        self._file = open(self._tmp, "w")
        self._file.write("[")
        self._separator = "\n"

    def _write(self, frame_idx, obj_ids, masks, frame):
        for obj_id, mask in zip(obj_ids, masks):
            entry = {"frame_idx": frame_idx, "obj_id": obj_id, "segmentation": rle_encode(mask)}
            self._file.write(self._separator + json.dumps(entry))
            self._separator = ",\n"

    def _finish(self):
        self._file.write("\n]\n")
        self._file.close()

    def abort(self):
        self._file.close()
        super().abort()


class OverlayWriter(MaskWriter):
    """An H.264 (yuv420p, crf 18) mp4 of the frames with each mask blended in its DAVIS colour
    (outline opaque, inside `alpha`), its id written above it, and the `prompts` of each frame
    drawn on it (crosses for points, rectangles for boxes).

    Frames must come in increasing frame_idx order and are shown back to back at `fps`. An odd
    height or width gets one extra row or column, a copy of the last one (yuv420p needs even
    sizes). Where masks overlap the lower id is drawn on top.
    """

    def __init__(self, out, *, fps: float = 24.0, prompts: Iterable[PromptMark] = (),
                 alpha: float = 0.5, overwrite: bool = False):
        import av
        fps = _checked_fps(fps)
        if fps is None:
            raise ValueError("fps: expected a positive number, got None")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
        self._prompts = collections.defaultdict(list)
        for prompt in prompts:
            if not isinstance(prompt, PromptMark):
                raise TypeError(f"prompts: expected PromptMark items, got {type(prompt).__name__}")
            self._prompts[prompt.frame_idx].append(prompt)
        super().__init__(out, overwrite=overwrite)
        self._fps, self._alpha = fps, alpha
        self._container = av.open(str(self._tmp), mode="w", format="mp4")
        self._stream = None
        self._last = -1

    def _write(self, frame_idx, obj_ids, masks, frame):
        import av
        if frame is None:
            raise ValueError("frame: the overlay writer needs the (H, W, 3) uint8 video frame, got None")
        if frame_idx <= self._last:
            raise ValueError(f"frame_idx: overlay frames must come in increasing order; got {frame_idx} "
                             f"after {self._last}")
        self._last = frame_idx
        image = draw_overlay(frame, obj_ids, masks, self._prompts.get(frame_idx, ()), self._alpha)
        height, width = frame.shape[:2]
        image = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        if self._stream is None:
            rate = Fraction(self._fps).limit_denominator(1001)
            self._stream = self._container.add_stream("libx264", rate=rate, options={"crf": "18"})
            self._stream.height, self._stream.width = image.shape[:2]
            self._stream.pix_fmt = "yuv420p"
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            self._container.mux(packet)

    def _finish(self):
        if self._stream is None:
            raise VideoError(f"out: no frame was written to the overlay video {str(self.out)!r}")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def abort(self):
        self._container.close()
        super().abort()


def _object_colour(obj_id: int) -> np.ndarray:
    """(3,) uint8: the DAVIS palette colour of the id (white for ids that map to black)."""
    colour = DAVIS_PALETTE[obj_id % 256]
    return colour if colour.any() else np.full(3, 255, np.uint8)


def draw_overlay(frame: np.ndarray, obj_ids: Sequence[int], masks: np.ndarray,
                 prompts: Sequence[PromptMark] = (), alpha: float = 0.5) -> np.ndarray:
    """The frame (H, W, 3) uint8 with bool masks (N, H, W) blended in, ids and prompts drawn."""
    image = frame.astype(np.float32)
    for i in np.argsort(obj_ids)[::-1]:  # lower ids end on top
        mask, colour = masks[i], _object_colour(obj_ids[i]).astype(np.float32)
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        image[inner] = (1 - alpha) * image[inner] + alpha * colour
        image[mask & ~inner] = colour
    pil = Image.fromarray(np.round(image).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    size = max(12, frame.shape[0] // 25)
    font = ImageFont.load_default(size=size)
    for obj_id, mask in zip(obj_ids, masks):  # the id just above the mask's top row
        ys, xs = np.nonzero(mask)
        if len(xs):
            top = ys.min()
            draw.text((xs[ys == top].mean(), max(top - 2, size)), str(obj_id), fill="white", font=font,
                      anchor="mb", stroke_width=2, stroke_fill="black")
    r = max(3, frame.shape[0] // 80)
    for prompt in prompts:
        for (x, y), label in zip(prompt.points, prompt.labels):
            colour = (0, 255, 0) if label == 1 else (255, 0, 0)
            draw.line([(x - r, y), (x + r, y)], fill=colour, width=2)
            draw.line([(x, y - r), (x, y + r)], fill=colour, width=2)
        if prompt.box is not None:
            colour = tuple(_object_colour(prompt.obj_id).tolist())
            draw.rectangle([float(v) for v in prompt.box], outline=colour, width=2)
    return np.asarray(pil)


WRITERS = {"davis": DavisWriter, "sav": SavWriter, "coco": CocoRleWriter, "overlay": OverlayWriter}


def make_writer(format: str, out: str | os.PathLike, **options) -> MaskWriter:
    """The writer for `format` ("davis", "sav", "coco", "overlay") writing to `out`: the folder
    of PNGs for davis and sav, the .json file for coco, the .mp4 file for overlay. `options`
    go to the writer (overwrite; fps, prompts and alpha for overlay)."""
    if format not in WRITERS:
        raise ValueError(f"format: expected one of {sorted(WRITERS)}, got {format!r}")
    return WRITERS[format](out, **options)
