"""Annotated videos on disk: `DavisDataset` and `SavDataset` read them as `VideoSequence`s (name,
frames, masks, obj_ids), one at a time and each mask file only when it is looked up."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from .frames import FrameSource, ImageFolder


class VideoSequence(NamedTuple):
    """One annotated video.

    name: the sequence's folder name.
    frames: its frames, or None where the dataset has no images (a folder of predictions).
    masks: {frame index: (N, H, W) bool} for the annotated frames, in frame order; each mask file
      is read when its frame is looked up.
    obj_ids: the ids of the masks' N axis, increasing.
    """

    name: str
    frames: FrameSource | None
    masks: Mapping[int, np.ndarray]
    obj_ids: tuple[int, ...]


class _LazyMasks(Mapping):
    """{frame index: (N, H, W) bool}, read on lookup by `read(files[frame])`."""

    def __init__(self, files: dict, read: Callable[..., np.ndarray]):
        self._files, self._read = dict(sorted(files.items())), read

    def __getitem__(self, frame: int) -> np.ndarray:
        return self._read(self._files[frame])

    def __contains__(self, frame) -> bool:
        return frame in self._files

    def __iter__(self) -> Iterator[int]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def _frame_number(path: Path) -> int:
    return int(re.search(r"(\d+)$", path.stem).group(1))


def _numbered_pngs(folder: Path) -> tuple[dict[int, Path], tuple[int, int]]:
    """({frame number: path}, (H, W)) of the PNG mask files of a folder, numbered and checked
    as ImageFolder does."""
    files = ImageFolder(folder)
    for p in files.paths:
        if p.suffix.lower() != ".png":
            raise ValueError(f"masks: expected PNG mask files in {str(folder)!r}, found {p.name!r}")
    return {_frame_number(p): p for p in files.paths}, (files.height, files.width)


def _read_png(path: Path, name: str) -> np.ndarray:
    """(H, W) uint8 values of an indexed ("P") or greyscale ("L", "1") PNG."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L", "1"):
            raise ValueError(f"{name}: expected an indexed or greyscale PNG of object ids, got mode "
                             f"{image.mode} in {str(path)!r}")
        return np.asarray(image, np.uint8)


def _first_folder(*candidates: Path) -> Path | None:
    return next((p for p in candidates if p.is_dir()), None)


class _Dataset:
    """Sequences under `annotations` (one folder each), images under `images` (or None)."""

    def __init__(self, root, annotations: tuple[str, ...], images: tuple[str, ...]):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root: expected a dataset folder, got {str(root)!r}, which "
                             + ("is not a folder" if self.root.exists() else "does not exist"))
        self.annotations = _first_folder(*(self.root / a for a in annotations)) or self.root
        self.images = _first_folder(*(self.root / i for i in images))
        self.names = sorted(p.name for p in self.annotations.iterdir()
                            if p.is_dir() and not p.name.startswith("."))

    def _check_names(self) -> None:
        if not self.names:
            raise ValueError(f"root: expected one folder of masks per sequence in "
                             f"{str(self.annotations)!r}, found none")

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[VideoSequence]:
        for name in self.names:
            yield self[name]

    def __getitem__(self, name: str) -> VideoSequence:
        if name not in self.names:
            raise ValueError(f"name: expected a sequence of {str(self.root)!r}, got {name!r}")
        return self._sequence(name)

    def _sequence(self, name: str) -> VideoSequence:
        raise NotImplementedError

    def _frames(self, name: str, size: tuple[int, int]) -> FrameSource | None:
        """The sequence's ImageFolder, checked against the mask size (H, W), or None."""
        if self.images is None or not (self.images / name).is_dir():
            return None
        frames = ImageFolder(self.images / name)
        if (frames.height, frames.width) != size:
            raise ValueError(f"root: the frames of {name!r} are {frames.height}x{frames.width} but its "
                             f"masks are {size[0]}x{size[1]}")
        return frames


class DavisDataset(_Dataset):
    """The DAVIS 2017 layout: `Annotations/480p/<seq>/<frame>.png` (or `Annotations/<seq>/`), one
    indexed PNG per annotated frame whose pixel values are object ids (0 background, 255 void,
    which is read as background as the semi-supervised toolkit does), and frames in
    `JPEGImages/480p/<seq>/` (or `JPEGImages/<seq>/`). A root without `Annotations` is itself the
    folder of sequences, as a folder of predictions is.

    split: None for every sequence folder, or a name whose list of sequences is read from
      `ImageSets/2017/<split>.txt` (or `ImageSets/<split>.txt`).
    A sequence's obj_ids are the ids found in any of its mask files.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None):
        super().__init__(root, ("Annotations/480p", "Annotations"), ("JPEGImages/480p", "JPEGImages"))
        if split is not None:
            lists = [self.root / "ImageSets" / "2017" / f"{split}.txt",
                     self.root / "ImageSets" / f"{split}.txt"]
            found = next((p for p in lists if p.is_file()), None)
            if found is None:
                raise ValueError(f"split: expected a list of sequences at {str(lists[0])!r} or "
                                 f"{str(lists[1])!r}, found neither")
            self.names = [line.strip() for line in found.read_text().splitlines() if line.strip()]
            missing = [n for n in self.names if not (self.annotations / n).is_dir()]
            if missing:
                raise ValueError(f"split: {str(found)!r} lists sequences with no folder in "
                                 f"{str(self.annotations)!r}: {missing}")
        self._check_names()

    def _sequence(self, name: str) -> VideoSequence:
        files, size = _numbered_pngs(self.annotations / name)
        ids = set()
        for path in files.values():
            ids.update(np.unique(_read_png(path, "masks")).tolist())
        obj_ids = tuple(sorted(ids - {0, 255}))
        ids_array = np.array(obj_ids, np.uint8)[:, None, None]
        masks = _LazyMasks(files, lambda path: _read_png(path, "masks")[None] == ids_array)
        return VideoSequence(name, self._frames(name, size), masks, obj_ids)


class SavDataset(_Dataset):
    """The SA-V layout: `Annotations_6fps/<video>/<obj_id:03d>/<frame:05d>.png` (or
    `Annotations/...`), one PNG per object per annotated frame, the object where the value is
    above 0 (at most two values per file, as sav_evaluator checks), so objects may overlap; frames
    in `JPEGImages_24fps/<video>/` (or `JPEGImages/<video>/`). A root without those folders is
    itself the folder of videos, as `writers.SavWriter` writes predictions. Every object of a video
    must have a file for the same frames (SavWriter fills the gaps with empty masks).
    """

    def __init__(self, root: str | os.PathLike):
        super().__init__(root, ("Annotations_6fps", "Annotations"), ("JPEGImages_24fps", "JPEGImages"))
        self._check_names()

    def _sequence(self, name: str) -> VideoSequence:
        folder = self.annotations / name
        objects = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        if not objects or any(not (p.is_dir() and p.name.isdigit()) for p in objects):
            raise ValueError(f"root: expected only per-object folders named by id (like 001) in "
                             f"{str(folder)!r}, found {[p.name for p in objects]}")
        obj_ids = tuple(int(p.name) for p in objects)
        files, sizes = zip(*(_numbered_pngs(p) for p in objects))
        for p, f, size in zip(objects, files, sizes):
            if f.keys() != files[0].keys() or size != sizes[0]:
                raise ValueError(f"root: object folders {str(objects[0])!r} and {str(p)!r} annotate "
                                 f"different frames or sizes: {sorted(files[0])} at {sizes[0]} and "
                                 f"{sorted(f)} at {size}")
        masks = _LazyMasks({k: [f[k] for f in files] for k in files[0]},
                           lambda paths: np.stack([_read_binary(p) for p in paths]))
        return VideoSequence(name, self._frames(name, sizes[0]), masks, obj_ids)


def _read_binary(path: Path) -> np.ndarray:
    """(H, W) bool: a one-object PNG, the object where the value is above 0."""
    values = _read_png(path, "masks")
    if len(np.unique(values)) > 2:
        raise ValueError(f"masks: expected one object per SA-V PNG (at most two values), got "
                         f"{np.unique(values).tolist()} in {str(path)!r}")
    return values > 0
