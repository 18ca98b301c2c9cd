"""The outputs of a command, complete or absent: one path per format, temporary outputs locked while they
are written and removed when a killed run left them, and the masks at the video's size.

Outputs are written complete or not at all: the writers of `sam2_jax.io.writers` build each one under a
temporary name and rename it only when it is finished; a run killed outright (SIGKILL) leaves hidden
temporary outputs, which the next run writing those outputs removes (`open_output`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
from pathlib import Path

import numpy as np

from ..io.writers import make_writer

try:
    import fcntl
except ImportError:  # Windows: no flock, so a killed run's temporary outputs are not told apart and stay
    fcntl = None


def video_name(video: str) -> str:
    """The name of a video's outputs: its folder's name, or its file's without the suffix."""
    path = Path(video)
    return path.resolve().name if path.is_dir() else path.stem


def output_paths(out: Path, name: str, formats) -> dict[str, Path]:
    """Where each format goes: davis/NAME/ and sav/NAME/ (the layouts `sam2-jax eval` reads), coco/NAME.json,
    overlay/NAME.mp4."""
    places = {"davis": out / "davis" / name, "sav": out / "sav" / name, "coco": out / "coco" / f"{name}.json",
              "overlay": out / "overlay" / f"{name}.mp4"}
    return {f: places[f] for f in formats}


def lock_partial(path: Path) -> int | None:
    """Take an exclusive lock on the temporary output `path` (file or folder) without waiting: the open
    descriptor that holds it (close it to release it), or None if another process holds it (or there is
    no flock)."""
    if fcntl is None:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale_partials(path: Path) -> None:
    """Delete the temporary outputs of `path` that a killed run left beside it (`.NAME.*.partial[.ext]`,
    as `sam2_jax.io.writers.MaskWriter` names them). A run locks each of its temporary outputs for as long as
    it writes it (`open_output`) and the kernel drops the lock when the run dies, however it dies: the
    ones whose lock can be taken are stale; a live run's are left alone."""
    if not path.parent.is_dir():
        return
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.partial{glob.escape(path.suffix)}"):
        try:
            fd = lock_partial(tmp)
        except OSError:  # gone already
            continue
        if fd is None:
            continue
        try:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def open_output(format, path: Path, **options):
    """`make_writer(format, path, **options)` for a command (`format` a name of `WRITERS` or a `MaskWriter`
    class): stale temporary outputs of `path` are removed first, and the writer's own is locked until it is
    finished or deleted (see `remove_stale_partials`; between its creation and the lock another run writing
    the same output could take it for stale, and that run would then fail with an error, never write an
    incomplete output)."""
    remove_stale_partials(path)
    fd = None
    try:
        with (make_writer(format, path, **options) if isinstance(format, str) else format(path, **options)) as writer:
            fd = lock_partial(writer._tmp)
            yield writer
    finally:
        if fd is not None:
            os.close(fd)


def frame_masks(processor, pred_masks, size: tuple[int, int], args) -> np.ndarray:
    """Low-res logits (N, 1, h, w) -> bool (N, H, W) at the video's size, with the asked-for clean-up."""
    if not len(pred_masks):  # a frame before --auto found any object
        return np.zeros((0, *size), bool)
    return processor.post_process_masks(
        [pred_masks], [size], binarize=True, max_hole_area=args.fill_holes, max_sprinkle_area=args.remove_sprinkles,
        apply_non_overlapping_constraints=args.non_overlap)[0][:, 0]
