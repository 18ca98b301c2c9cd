"""Video in: frame sources.

Sources hand out frames as uint8 RGB arrays of shape (H, W, 3), decoded lazily, one at a time,
at the video's own size: memory stays flat whatever the length. Every source has `num_frames`
(None for a live stream), `height`, `width`, `fps` (None where unknown), iteration in order and,
where the frame count is known, `len()` and random access `source[i]`.

- `VideoFile`: mp4, mov, webm, avi, mkv... through PyAV (imported only by `VideoFile`, so frames in
  memory work without it).
- `ImageFolder`: a folder of JPEG/PNG frames sorted by the number that ends each file name.
- `FrameArray`: a (T, H, W, 3) array, uint8 or float in [0, 1].
- `FrameList`: a list of PIL images or (H, W, 3) arrays.
- `FrameStream`: a live iterator of frames (webcam, network); read once, in order.
`open_video(source)` picks the right one.

Bad input raises `VideoError` (a ValueError) or TypeError naming the argument, what was
expected and what came.
"""

from __future__ import annotations

import bisect
import collections
import numbers
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .checks import checked_fps, describe

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class VideoError(ValueError):
    """A video, folder, frame or mask that cannot be read or written as promised."""


class FrameIndexError(IndexError, ValueError):
    """A frame index outside the video (an IndexError for Python, a ValueError for the project)."""


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------


def _check_array(array: np.ndarray, name: str, rank: int) -> None:
    """Raise unless `array` is uint8, or float with every value in [0, 1], of shape (..., 3)."""
    if array.ndim != rank or array.shape[-1] != 3:
        dims = "(T, H, W, 3)" if rank == 4 else "(H, W, 3)"
        raise VideoError(f"{name}: expected an RGB array of shape {dims}, got {describe(array)}")
    if array.dtype == np.uint8:
        return
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name}: expected dtype uint8, or float in [0, 1], got {describe(array)}")
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
        raise TypeError(f"{name}: expected a PIL image or an (H, W, 3) numpy array, got {describe(frame)}")
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
            raise TypeError(f"frames: expected a numpy array (T, H, W, 3), got {describe(frames)}")
        _check_array(frames, "frames", rank=4)
        if frames.shape[0] == 0:
            raise VideoError("frames: expected at least one frame, got an array with T = 0")
        self._frames = frames
        self.num_frames, self.height, self.width = frames.shape[:3]
        self.fps = checked_fps(fps)

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
        self.fps = checked_fps(fps)

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
        self.fps = checked_fps(fps)

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
        self.fps = checked_fps(fps)
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
                    f"numpy array, a list of frames or an iterator of frames, got {describe(source)}")


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------
