"""Masks out: mask writers, COCO RLE and the overlay drawing.

Writers take the masks of one frame at a time, as a dict {obj_id: bool (H, W)} or as a bool
(N, H, W) array with its `obj_ids`: `DavisWriter` (indexed-palette PNG per frame), `SavWriter`
(one binary PNG per object per frame), `CocoRleWriter` (COCO compressed RLE in JSON) and
`OverlayWriter` (H.264 mp4 of the frames with masks, ids and prompts drawn; PyAV is imported only
there). `make_writer` picks one by name. Each output appears only once complete: it is built under a
temporary name and renamed when finished.
"""

from __future__ import annotations

import collections
import json
import numbers
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .checks import checked_fps, describe
from .frames import VideoError


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
                raise TypeError(f"masks[{i!r}]: expected a bool (H, W) mask, got {describe(m)}")
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
                            f"got {describe(masks)}")
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
            raise TypeError(f"frame: expected a uint8 (H, W, 3) array, got {describe(frame)}")
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
        fps = checked_fps(fps)
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
