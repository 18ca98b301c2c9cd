"""The `sam2-jax` command: `track` (masks from a video and prompts), `demo` (the whole pipeline on a
generated clip, no files needed), `info`, `eval`, `convert`.

Errors, usage errors included, print one line on stderr and exit with status 1; Ctrl-C (SIGINT) prints
one line and exits with status 130, SIGTERM (`kill`, a job scheduler) likewise with status 143. Outputs
are written complete or not at all: the writers of `sam2_jax.video` build each one under a temporary name
and rename it only when it is finished; a run killed outright (SIGKILL) leaves hidden temporary outputs,
which the next run writing those outputs removes (`open_output`).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import glob
import json
import math
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .video import WRITERS, PromptMark, make_writer, open_video

try:
    import fcntl
except ImportError:  # Windows: no flock, so a killed run's temporary outputs are not told apart and stay
    fcntl = None

FORMATS = tuple(WRITERS)  # davis, sav, coco, overlay
DEFAULT_COMPILE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sam2-jax" / "jax"


class UsageError(ValueError):
    """A malformed command line (argparse's errors, reported like every other error)."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error raises UsageError (one line, exit status 1)."""

    def error(self, message):
        raise UsageError(self.prog, message)


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Prompt:
    """Everything given for one object on one frame, in pixels of the video: points (K, 2) with labels
    (1 positive, 0 negative) and/or a box (x1, y1, x2, y2), or else a bool (H, W) mask. `where` names
    the options or JSON entries it came from, for error messages."""

    frame: int
    obj_id: int
    points: list = dataclasses.field(default_factory=list)
    labels: list = dataclasses.field(default_factory=list)
    box: list | None = None
    mask: np.ndarray | None = None
    where: list = dataclasses.field(default_factory=list)


def _numbers(text: str, count: tuple[int, ...], what: str) -> list[float]:
    """'10,20' -> [10.0, 20.0]; `count` the accepted lengths."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in count or not all(math.isfinite(v) for v in values):
        raise ValueError(f"expected {what}, got {text!r}")
    return values


class _PromptOption(argparse.Action):
    """--point / --box / --mask: record (option, text, frame, obj) with the --frame and --obj in force."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            if option_string == "--point":
                label = _numbers(values, (2, 3), "x,y or x,y,label")[2:]
                if label and label[0] not in (0.0, 1.0):
                    raise ValueError(f"the label must be 1 (positive) or 0 (negative), got {values!r}")
            elif option_string == "--box":
                _numbers(values, (4,), "x1,y1,x2,y2")
        except ValueError as err:
            raise argparse.ArgumentError(self, str(err)) from None
        items = list(getattr(namespace, self.dest) or [])
        items.append((option_string, values, namespace.frame, namespace.obj))
        setattr(namespace, self.dest, items)


def _int_type(check, expected: str):
    """An argparse `type`: int(text) where check() holds it, else a usage error saying `expected`."""
    def convert(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not check(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return convert


_frame_index = _int_type(lambda v: v >= 0, "a frame index >= 0")
MAX_OBJ_ID = 254  # object ids a DAVIS PNG holds (255 marks void)
_obj_id = _int_type(lambda v: 1 <= v <= MAX_OBJ_ID, f"an object id in 1..{MAX_OBJ_ID}")
_positive = _int_type(lambda v: v >= 1, "an int >= 1")


def _area(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected an area >= 0 (low-res mask pixels), got {text!r}")
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


GENERATOR_DEFAULTS = {"points_per_side": 32, "points_per_batch": 64, "pred_iou_thresh": 0.8,
                      "stability_score_thresh": 0.95, "box_nms_thresh": 0.7, "crop_n_layers": 0,
                      "min_mask_region_area": 0.0, "use_m2m": False}  # Sam2AutomaticMaskGenerator's (tested)


def add_generator_arguments(g) -> None:
    """The automatic mask generator's main settings, flags of `track --auto` and `segment --auto`, with
    `Sam2AutomaticMaskGenerator`'s defaults (`GENERATOR_DEFAULTS`)."""
    d = GENERATOR_DEFAULTS
    g.add_argument("--points-per-side", type=_positive, default=d["points_per_side"], metavar="N",
                   help="an N x N grid of point prompts (default: %(default)s)")
    g.add_argument("--points-per-batch", type=_positive, default=d["points_per_batch"], metavar="N",
                   help="points per decoder call (default: %(default)s)")
    g.add_argument("--pred-iou-thresh", type=_fraction, default=d["pred_iou_thresh"], metavar="T",
                   help="keep masks whose predicted IoU is at least T (default: %(default)s)")
    g.add_argument("--stability-score-thresh", type=_fraction, default=d["stability_score_thresh"], metavar="T",
                   help="keep masks whose stability score is at least T (default: %(default)s)")
    g.add_argument("--box-nms-thresh", type=_fraction, default=d["box_nms_thresh"], metavar="T",
                   help="of two masks whose boxes overlap more (IoU), drop the less confident (default: "
                        "%(default)s)")
    g.add_argument("--crop-n-layers", type=_int_type(lambda v: v >= 0, "an int >= 0"), default=d["crop_n_layers"],
                   metavar="N", help="also run on N layers of overlapping crops, for small objects (default: "
                                     "%(default)s)")
    g.add_argument("--min-mask-region-area", type=_area, default=d["min_mask_region_area"], metavar="AREA",
                   help="remove holes and islands up to AREA low-res mask pixels (default: %(default)s)")
    g.add_argument("--use-m2m", action="store_true", help="refine each mask once with itself as the prompt")


def generator_options(args) -> dict:
    """`Sam2AutomaticMaskGenerator` keyword arguments from the options of `add_generator_arguments`."""
    return {name: getattr(args, name) for name in GENERATOR_DEFAULTS}


def _read_mask(path: Path, where: str) -> np.ndarray:
    """A mask PNG -> bool (H, W): palette index > 0 for an indexed PNG, any non-black pixel otherwise."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ValueError(f"{where}: the mask {str(path)!r} does not exist")
    try:
        with Image.open(path) as image:
            return np.asarray(image) > 0 if image.mode == "P" else np.asarray(image.convert("L")) > 0
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"{where}: {str(path)!r} is not a readable image ({err})") from err


def _json_prompts(path: Path) -> list[tuple]:
    """The entries of a --prompts file -> (kind, value, frame, obj_id, where) parts."""
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--prompts: {str(path)!r} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"--prompts: {str(path)!r} is not valid JSON ({err})") from err
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"--prompts: expected a non-empty JSON list of prompts in {str(path)!r}, got "
                         f"{type(entries).__name__}")
    return prompt_parts(entries, path.name, path.parent)


def prompt_parts(entries: list, name: str, folder: Path) -> list[tuple]:
    """Parsed --prompts entries -> (kind, value, frame, obj_id, where) parts, `where` naming `name[i]`;
    mask paths are relative to `folder`. Shared by `track --prompts` and the lines of a `batch` manifest."""
    keys = {"frame", "obj_id", "points", "labels", "box", "mask"}
    parts = []
    for i, entry in enumerate(entries):
        where = f"{name}[{i}]"

        def is_int(value, low, high=None):
            return isinstance(value, int) and not isinstance(value, bool) and low <= value <= (high or value)

        def coords(value, n):
            return (isinstance(value, list) and len(value) == n and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))

        if not isinstance(entry, dict) or "obj_id" not in entry or not keys.issuperset(entry):
            raise ValueError(f"{where}: expected an object with obj_id and some of frame, points, labels, box, "
                             f"mask, got {json.dumps(entry)[:80]}")
        frame, obj_id = entry.get("frame", 0), entry["obj_id"]
        if not is_int(frame, 0):
            raise ValueError(f"{where}: frame: expected a frame index >= 0, got {frame!r}")
        if not is_int(obj_id, 1, 254):
            raise ValueError(f"{where}: obj_id: expected an int in 1..254, got {obj_id!r}")
        points, labels = entry.get("points"), entry.get("labels")
        if points is not None and (not isinstance(points, list) or not points
                                   or not all(coords(p, 2) for p in points)):
            raise ValueError(f"{where}: points: expected a list of [x, y], got {json.dumps(points)[:80]}")
        if labels is not None and (points is None or not isinstance(labels, list) or len(labels) != len(points)
                                   or any(label not in (0, 1) or isinstance(label, bool) for label in labels)):
            raise ValueError(f"{where}: labels: expected one label, 1 or 0, per point, got {labels!r}")
        if "box" in entry and not coords(entry["box"], 4):
            raise ValueError(f"{where}: box: expected [x1, y1, x2, y2], got {entry['box']!r}")
        if "mask" in entry and not isinstance(entry["mask"], str):
            raise ValueError(f"{where}: mask: expected the path of a PNG, got {entry['mask']!r}")
        if points is None and "box" not in entry and "mask" not in entry:
            raise ValueError(f"{where}: expected points, a box or a mask")
        for k, point in enumerate(points or []):
            parts.append(("point", [*point, labels[k] if labels else 1], frame, obj_id, where))
        if "box" in entry:
            parts.append(("box", entry["box"], frame, obj_id, where))
        if "mask" in entry:
            parts.append(("mask", folder / entry["mask"], frame, obj_id, where))
    return parts


def collect_prompts(args, num_frames: int, height: int, width: int) -> list[Prompt]:
    """The prompt options and the --prompts file -> one Prompt per (frame, object), checked against the
    video: frames inside it, points and boxes inside the frame, masks of its size, and no object given
    two boxes, two masks, or a mask beside points or a box on one frame."""
    parts = []
    for option, text, frame, obj_id in args.prompt_options or []:
        kind = option[2:]
        where = f"{option} {text} (frame {frame}, object {obj_id})"
        value = Path(text) if kind == "mask" else _numbers(text, (2, 3, 4), "numbers")
        parts.append((kind, value, frame, obj_id, where))
    if args.prompts:
        parts += _json_prompts(Path(args.prompts))
    if not parts:
        raise ValueError("no prompts: give --point, --box or --mask (after --frame F --obj ID), or --prompts "
                         "FILE.json")
    return checked_prompts(parts, num_frames, height, width)


def checked_prompts(parts: list[tuple], num_frames: int, height: int, width: int) -> list[Prompt]:
    """(kind, value, frame, obj_id, where) parts -> one Prompt per (frame, object), in frame order, checked
    against the video as `collect_prompts` says."""
    prompts: dict[tuple[int, int], Prompt] = {}
    for kind, value, frame, obj_id, where in parts:
        if frame >= num_frames:
            raise ValueError(f"{where}: frame {frame} is past the end of the video ({num_frames} frames: 0 to "
                             f"{num_frames - 1})")
        prompt = prompts.setdefault((frame, obj_id), Prompt(frame, obj_id))
        clash = {"point": prompt.mask is not None, "box": prompt.box is not None or prompt.mask is not None,
                 "mask": prompt.mask is not None or prompt.box is not None or bool(prompt.points)}[kind]
        if clash:
            raise ValueError(f"object {obj_id} is given twice inconsistently on frame {frame}: {where} and "
                             f"{prompt.where[0]} (one box or one mask per object and frame; a mask goes alone)")
        prompt.where.append(where)
        if kind == "mask":
            prompt.mask = _read_mask(value, where)
            if prompt.mask.shape != (height, width):
                raise ValueError(f"{where}: the mask is {prompt.mask.shape[1]}x{prompt.mask.shape[0]}, the video "
                                 f"{width}x{height} (W x H)")
            if not prompt.mask.any():
                raise ValueError(f"{where}: the mask is empty")
            continue
        coords = value if kind == "box" else value[:2]
        xs, ys = coords[0::2], coords[1::2]
        if not all(0 <= x <= width for x in xs) or not all(0 <= y <= height for y in ys):
            raise ValueError(f"{where}: expected x in [0, {width}] and y in [0, {height}] (inside the frame)")
        if kind == "box":
            if value[2] < value[0] or value[3] < value[1]:
                raise ValueError(f"{where}: expected x1 <= x2 and y1 <= y2")
            prompt.box = value
        else:
            prompt.points.append(value[:2])
            prompt.labels.append(int(value[2]) if len(value) == 3 else 1)
    return sorted(prompts.values(), key=lambda p: p.frame)


def apply_prompts(model, processor, session, prompts: list[Prompt]) -> None:
    """Add the prompts to the session and segment each prompted frame, as transformers is used: add inputs,
    then `model(inference_session, frame_idx)`. Objects prompted alike on one frame (same kind, same number
    of points) share one call: the same masks as one call each, with one compilation."""
    groups: dict[tuple, list[Prompt]] = {}
    for p in prompts:  # sorted by frame, so the groups are too
        groups.setdefault((p.frame, p.mask is not None, len(p.points), p.box is not None), []).append(p)
    for (frame, is_mask, num_points, has_box), group in groups.items():
        ids = [p.obj_id for p in group]
        if is_mask:
            processor.add_inputs_to_inference_session(session, frame, ids, input_masks=[p.mask for p in group])
        else:
            processor.add_inputs_to_inference_session(
                session, frame, ids,
                input_points=[[p.points for p in group]] if num_points else None,
                input_labels=[[p.labels for p in group]] if num_points else None,
                input_boxes=[[p.box for p in group]] if has_box else None)
        model(inference_session=session, frame_idx=frame)


# ---------------------------------------------------------------------------------------------
# track
# ---------------------------------------------------------------------------------------------


class _LineProgress:
    """A progress line on stderr (`\\r`-rewritten) for when tqdm is not installed."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def update(self, n: int = 1):
        self.done += n
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        print(f"\rtracking: {self.done}/{self.total} frames, {rate:.2f} frames/s", end="", file=sys.stderr,
              flush=True)

    def close(self):
        print(file=sys.stderr, flush=True)


def progress_bar(total: int):
    """A progress bar on stderr with frames per second: tqdm's if installed, else a simple line."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _LineProgress(total)
    return tqdm(total=total, desc="tracking", unit="frame", file=sys.stderr, dynamic_ncols=True)


def enable_compile_cache(folder: str) -> None:
    """Keep compiled programs in `folder` across runs ("off": do not); JAX's own setting wins if made."""
    import jax

    if folder != "off" and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(folder))


def _pass_frames(start: int, num_frames: int, max_frames: int | None, reverse: bool) -> range:
    """The frames one propagation pass visits (`--max-frames N`: at most N, the start frame included)."""
    n = num_frames if max_frames is None else max_frames
    if reverse:
        return range(start, max(start - n, -1), -1) if start > 0 else range(0)
    return range(start, min(start + n, num_frames))


def _video_name(video: str) -> str:
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
    as `sam2_jax.video.MaskWriter` names them). A run locks each of its temporary outputs for as long as
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


def _formats(values, known=FORMATS) -> list[str]:
    """--format values (repeated and/or comma-separated) -> distinct names of `known`; its first by default."""
    formats = []
    for value in values or known[:1]:
        for name in value.split(","):
            if name not in known:
                raise ValueError(f"--format: unknown format {name!r}; expected one of {', '.join(known)}")
            if name not in formats:
                formats.append(name)
    return formats


def _model_config(model: str):
    """The config of --model: a checkpoint folder or the name of a packaged model (`weights.PACKAGED`)."""
    from .weights import PACKAGED, read_config, resolve_pretrained

    folder = resolve_pretrained(model)
    if not Path(folder).is_dir():
        raise ValueError(f"--model: expected a checkpoint folder or a packaged model ({', '.join(PACKAGED)}), got "
                         f"{model!r}, which " + ("is not a folder" if Path(folder).exists() else "does not exist"))
    return read_config(folder)


class _Sink:
    """Hands each frame's masks to the writers once, in increasing frame order: at once while frames come
    in that order (a forward pass), otherwise kept as packed bits (1 bit a pixel) until `flush`."""

    def __init__(self, writers: dict, source, in_order: bool):
        self.writers, self.source, self.in_order = writers, source, in_order
        self.kept, self.seen = {}, set()

    def add(self, frame_idx: int, obj_ids: list, masks: np.ndarray) -> None:
        if frame_idx in self.seen:  # the start frame of a second pass
            return
        self.seen.add(frame_idx)
        if self.in_order:
            self._write(frame_idx, obj_ids, masks)
        else:
            self.kept[frame_idx] = (obj_ids, masks.shape, np.packbits(masks))

    def flush(self) -> None:
        for frame_idx in sorted(self.kept):
            obj_ids, shape, bits = self.kept.pop(frame_idx)
            self._write(frame_idx, obj_ids, np.unpackbits(bits, count=math.prod(shape)).reshape(shape).astype(bool))

    def _write(self, frame_idx, obj_ids, masks):
        frame = self.source[frame_idx]
        for writer in self.writers.values():
            writer.write(frame_idx, masks, obj_ids, frame=frame)


def _masks(processor, pred_masks, size: tuple[int, int], args) -> np.ndarray:
    """Low-res logits (N, 1, h, w) -> bool (N, H, W) at the video's size, with the asked-for clean-up."""
    if not len(pred_masks):  # a frame before --auto found any object
        return np.zeros((0, *size), bool)
    return processor.post_process_masks(
        [pred_masks], [size], binarize=True, max_hole_area=args.fill_holes, max_sprinkle_area=args.remove_sprinkles,
        apply_non_overlapping_constraints=args.non_overlap)[0][:, 0]


def cmd_track(args) -> int:
    """`sam2-jax track`: masks of the prompted objects (or, with --auto, of every object found) through one
    video, in the chosen formats."""
    import jax.numpy as jnp

    from .video_api import Sam2VideoModel, Sam2VideoProcessor

    formats = _formats(args.format)
    config = _model_config(args.model)
    if args.image_size is not None and args.image_size != config.image_size:
        raise ValueError(f"--image-size {args.image_size} does not match the model's image size "
                         f"{config.image_size} (in the config of {args.model})")
    _check_auto_arguments(args)
    enable_compile_cache(args.compile_cache)
    with contextlib.closing(open_video(args.video)) as source, contextlib.ExitStack() as writers_open:
        num_frames, height, width = source.num_frames, source.height, source.width
        prompts = [] if args.auto else collect_prompts(args, num_frames, height, width)
        start = args.start_frame if args.start_frame is not None else min((p.frame for p in prompts), default=0)
        if start >= num_frames:
            raise ValueError(f"--start-frame {start} is past the end of the video ({num_frames} frames: 0 to "
                             f"{num_frames - 1})")
        passes = [args.reverse, not args.reverse] if args.both_directions else [args.reverse]
        visits = [_pass_frames(start, num_frames, args.max_frames, reverse) for reverse in passes]
        if not any(visits):
            raise ValueError("--reverse: tracking backward from frame 0 visits no frame; start later "
                             "(--start-frame) or add --both-directions")
        fps = source.fps or 24.0
        print(f"video: {args.video}: {num_frames} frames of {width}x{height}"
              + (f" at {source.fps:.3g} fps" if source.fps else ""))
        if args.auto:
            print(f"prompts: none; objects are found on frame {start}"
                  + (f" and every {args.auto_every} frames after it" if args.auto_every else ""))
        else:
            print(f"prompts: object ids {sorted({p.obj_id for p in prompts})} on frames "
                  f"{sorted({p.frame for p in prompts})}")

        paths = output_paths(Path(args.out), _video_name(args.video), formats)
        marks = [PromptMark(p.frame, p.obj_id, p.points, p.labels, p.box) for p in prompts if p.mask is None]
        writers = {f: writers_open.enter_context(open_output(
            f, path, overwrite=args.overwrite, **({"fps": fps, "prompts": marks} if f == "overlay" else {})))
            for f, path in paths.items()}

        began = time.perf_counter()
        dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
        model = Sam2VideoModel.from_pretrained(args.model, dtype=dtype)
        print(f"model: {args.model}: SAM {config.version}, image size {config.image_size}, {args.dtype} "
              f"(loaded in {time.perf_counter() - began:.1f} s)")
        processor = Sam2VideoProcessor(size=config.image_size)
        session = processor.init_video_session(video=source, dtype=dtype, keep_memory_archive=len(passes) > 1)
        began = time.perf_counter()
        if args.auto:
            tracker = _auto_tracker(model, processor, args)
            outputs = [tracker.propagate(session, start_frame_idx=start, max_frame_num_to_track=None
                                         if args.max_frames is None else args.max_frames - 1)]
        else:
            apply_prompts(model, processor, session, prompts)
            outputs = (model.propagate_in_video_iterator(
                session, start_frame_idx=start, reverse=reverse,
                max_frame_num_to_track=None if args.max_frames is None else args.max_frames - 1) for reverse in passes)
        sink = _Sink(writers, source, in_order=passes == [False])
        with contextlib.closing(progress_bar(sum(len(v) for v in visits))) as bar:
            for one_pass in outputs:
                for out in one_pass:
                    sink.add(out.frame_idx, out.object_ids, _masks(processor, out.pred_masks, (height, width), args))
                    bar.update(1)
        sink.flush()
    seconds = time.perf_counter() - began
    frames = sorted(sink.seen)
    print(f"tracked {len(frames)} frames ({frames[0]} to {frames[-1]}) x {len(session.obj_ids)} object(s) in "
          f"{seconds:.1f} s: {len(frames) / seconds:.2f} frames/s (compilation included)")
    if args.auto:
        found = collections.defaultdict(list)
        for seed in tracker.seeds:
            found[seed.frame_idx].append(seed.obj_id)
        print("found " + ("; ".join(f"object(s) {ids} on frame {f}" for f, ids in found.items()) or "no object"))
    for f, path in paths.items():
        print(f"wrote {f:<7} {path}")
    return 0


def _check_auto_arguments(args) -> None:
    """--auto finds the objects itself and tracks forward; the prompt and direction options do not apply."""
    if not args.auto:
        for name in ("auto_every", "max_objects", "new_object_iou"):
            if getattr(args, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')}: only applies with --auto")
        return
    if args.prompt_options or args.prompts:
        raise ValueError("--auto: finds the objects itself; drop --point, --box, --mask and --prompts, or --auto")
    for flag, given in (("--reverse", args.reverse), ("--both-directions", args.both_directions)):
        if given:
            raise ValueError(f"{flag}: --auto tracks forward only")


def _auto_tracker(model, processor, args):
    """The prompt-free tracker of `track --auto`, its generator on the video model's weights."""
    from .automatic import Sam2AutomaticMaskGenerator
    from .automatic_video import Sam2AutomaticVideoTracker, image_model

    generator = Sam2AutomaticMaskGenerator(image_model(model), **generator_options(args))
    return Sam2AutomaticVideoTracker(
        model, generator, auto_every=args.auto_every, max_objects=args.max_objects or MAX_OBJ_ID,
        new_object_iou=0.5 if args.new_object_iou is None else args.new_object_iou, processor=processor)


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


def _interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask pixel farthest from its edge: its centre, inside it even when it is not convex."""
    from scipy import ndimage

    y, x = np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape)
    return int(x), int(y)


def cmd_demo(args) -> int:
    """`sam2-jax demo`: generate a clip, track it with the packaged model, write every format, score it."""
    from .config import small_config
    from .data import DavisDataset, generate_clip, write_clip_davis
    from .evaluation import evaluate_sequence

    out = Path(args.out)
    enable_compile_cache(args.compile_cache)
    clip = generate_clip(args.seed, args.frames, 240, 320, max_objects=3)
    video = out / "clip.mp4"
    with make_writer("overlay", video, fps=12.0, overwrite=True) as writer:  # no masks: the frames as they are
        for t, frame in enumerate(clip.frames):
            writer.write(t, {}, frame=frame)
    write_clip_davis(clip, out / "ground_truth", "clip", overwrite=True)
    print(f"1. generated a clip of {args.frames} frames (320x240) with {len(clip.obj_ids)} moving shapes: wrote "
          f"{video} and its ground truth masks to {out / 'ground_truth'}")

    if not args.random_weights:
        model = "sam2-jax-shapes"
        print(f"2. using the packaged model {model} (SAM 2.1, 3.1 M parameters, trained on generated clips of "
              "moving shapes)")
    else:
        from .video_api import Sam2VideoModel

        model = str(out / "checkpoint")
        Sam2VideoModel.from_config(small_config(image_size=args.image_size), seed=args.seed).save_pretrained(model)
        print(f"2. wrote a random-weight SAM 2.1 checkpoint (small config, {args.image_size} px) to {model} "
              "(random weights track nothing in particular)")

    argv = ["track", str(video), "--model", model, "--out", str(out), "--format", ",".join(FORMATS),
            "--overwrite", "--compile-cache", args.compile_cache]
    for obj_id, mask in zip(clip.obj_ids, clip.masks[0]):
        argv += ["--obj", str(obj_id), "--point", "{},{}".format(*_interior_point(mask))]
    print(f"3. one click at the centre of each object on frame 0; tracking with:\n   sam2-jax {shlex.join(argv)}")
    cmd_track(build_parser().parse_args(argv))

    predicted = DavisDataset(out / "davis")["clip"]
    pred = np.zeros_like(clip.masks)
    for t in range(len(clip.frames)):
        for n, obj_id in enumerate(predicted.obj_ids):
            if obj_id in clip.obj_ids:
                pred[t, clip.obj_ids.index(obj_id)] = predicted.masks[t][n]
    ours = evaluate_sequence(pred, clip.masks)
    baseline = evaluate_sequence(np.broadcast_to(clip.masks[:1], clip.masks.shape), clip.masks)
    print(f"4. J&F against the ground truth (DAVIS rules, first and last frames not scored): tracked "
          f"{ours['J&F']:.3f} (J {ours['J']:.3f}, F {ours['F']:.3f}); copying the first mask "
          f"{baseline['J&F']:.3f} (J {baseline['J']:.3f}, F {baseline['F']:.3f})")
    print(f"   score it again: sam2-jax eval {out / 'davis'} {out / 'ground_truth'}")
    return 0


# ---------------------------------------------------------------------------------------------
# info, convert, the parser
# ---------------------------------------------------------------------------------------------


def cmd_info(args) -> int:
    """`sam2-jax info`: JAX's devices, and a checkpoint's config."""
    import jax

    from . import __version__

    print(f"sam2-jax {__version__}, jax {jax.__version__}")
    for device in jax.devices():
        print(f"device: {device.platform} {device.device_kind} (id {device.id})")
    if args.model:
        config = _model_config(args.model)
        backbone = config.vision_config.backbone_config
        print(f"model: {args.model}: model_type {config.model_type}, SAM {config.version}, image size "
              f"{config.image_size}, Hiera dims {list(backbone.embed_dim_per_stage)}, blocks "
              f"{list(backbone.blocks_per_stage)}")
    return 0


def cmd_convert(args) -> int:
    """`sam2-jax convert`: the converter of `convert/` (needs torch)."""
    try:
        from convert.__main__ import main as convert_main
    except ImportError as err:
        raise ValueError(f"convert needs the torch extra (pip install 'sam2-jax[torch]'): {err}") from err
    return convert_main(args.convert_args)


TRACK_EPILOG = """\
prompts:
  --frame F and --obj ID set the frame and the object of the --point, --box and --mask options that
  follow them (defaults: frame 0, object 1); all of one object's points on one frame form one prompt.
    sam2-jax track video.mp4 --model ckpt --obj 1 --point 410,230 --point 380,250,0 \\
        --obj 2 --box 90,40,200,180 --frame 30 --obj 3 --mask person.png
  Coordinates are pixels of the video frame; a point's label is 1 (positive, the default) or 0
  (negative); a mask PNG is the object where it is not black (an indexed PNG: where its index is not 0),
  at the video's size. One object takes points and/or one box, or one mask, per frame.

  --prompts FILE.json takes a list of entries, one object on one frame each:
    [{"frame": 0, "obj_id": 1, "points": [[410, 230], [380, 250]], "labels": [1, 0]},
     {"frame": 0, "obj_id": 2, "box": [90, 40, 200, 180]},
     {"frame": 30, "obj_id": 3, "mask": "person.png"}]
  obj_id (1..254) is required; frame defaults to 0, labels to all 1; a mask path is relative to the
  JSON file's folder.

prompt-free:
  --auto instead of prompts: the objects the automatic mask generator finds on the start frame (default 0)
  are tracked forward; --auto-every K runs it again every K frames, adding the masks that match no tracked
  object (IoU below --new-object-iou). The generator options have the original's defaults; the packaged
  model needs lower thresholds:
    sam2-jax track video.mp4 --model sam2-jax-shapes --auto --auto-every 8 \\
        --pred-iou-thresh 0.5 --stability-score-thresh 0.8

tracking:
  Tracking starts at the first prompted frame (or --start-frame) and runs forward to the end (--reverse:
  backward to frame 0; --both-directions: forward, then backward from the same frame), at most
  --max-frames frames each way. Frames outside that range are not written.

outputs (under --out, NAME the video's file or folder name):
  davis    davis/NAME/00000.png...: one indexed PNG per frame, pixel value = object id (DAVIS palette)
  sav      sav/NAME/001/00000.png...: one PNG per object per frame (the SA-V layout)
  coco     coco/NAME.json: [{"frame_idx", "obj_id", "segmentation": COCO compressed RLE}, ...]
  overlay  overlay/NAME.mp4: the video with masks, object ids and prompts drawn (H.264)
  davis/ and sav/ are what `sam2-jax eval` reads. Each output appears only once complete.
"""


def _add_track_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", metavar="VIDEO", help="a video file (mp4, mov, webm, mkv, avi...) or a folder of "
                                                  "frames numbered by their file names (00000.jpg, ...)")
    p.add_argument("--model", required=True, metavar="DIR", help="a video checkpoint folder (config.json and "
                                                                 "model.safetensors) or sam2-jax-shapes")
    g = p.add_argument_group("prompts (see below)")
    g.add_argument("--frame", type=_frame_index, default=0, metavar="F",
                   help="the frame of the prompt options that follow (default: 0)")
    g.add_argument("--obj", type=_obj_id, default=1, metavar="ID",
                   help="the object id (1..254) of the prompt options that follow (default: 1)")
    g.add_argument("--point", action=_PromptOption, dest="prompt_options", metavar="X,Y[,LABEL]",
                   help="a click; label 1 (default) positive, 0 negative; repeatable")
    g.add_argument("--box", action=_PromptOption, dest="prompt_options", metavar="X1,Y1,X2,Y2",
                   help="a box; repeatable, one per object and frame")
    g.add_argument("--mask", action=_PromptOption, dest="prompt_options", metavar="PNG",
                   help="a mask; repeatable, one per object and frame, alone")
    g.add_argument("--prompts", metavar="FILE.json", help="many prompts from a JSON file (schema below)")
    g = p.add_argument_group("tracking")
    g.add_argument("--start-frame", type=_frame_index, metavar="F",
                   help="start here (default: the first prompted frame)")
    g.add_argument("--max-frames", type=_positive, metavar="N",
                   help="track at most N frames in each direction, the start frame included (default: all)")
    g.add_argument("--reverse", action="store_true", help="track backward, toward frame 0")
    g.add_argument("--both-directions", action="store_true",
                   help="track forward, then backward from the start frame (backward first with --reverse)")
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute precision (default: %(default)s)")
    g.add_argument("--image-size", type=_positive, metavar="S",
                   help="the model's input size; must match the checkpoint's config (default: the config's)")
    g.add_argument("--compile-cache", metavar="DIR", default=str(DEFAULT_COMPILE_CACHE),
                   help="keep compiled programs here to skip compilation next time; 'off' to not "
                        "(default: %(default)s)")
    g = p.add_argument_group("prompt-free (--auto)")
    g.add_argument("--auto", action="store_true",
                   help="no prompts: track every object the automatic mask generator finds on the start frame")
    g.add_argument("--auto-every", type=_positive, metavar="K",
                   help="run the generator again every K frames; a mask that matches no tracked object becomes "
                        "a new one (default: the start frame only)")
    g.add_argument("--max-objects", type=_int_type(lambda v: 1 <= v <= MAX_OBJ_ID, f"an int in 1..{MAX_OBJ_ID}"),
                   metavar="M", help=f"track at most M objects (default and largest: {MAX_OBJ_ID}, the ids a DAVIS "
                                     "PNG holds)")
    g.add_argument("--new-object-iou", type=_fraction, metavar="T",
                   help="a found mask is a new object when its IoU with every tracked one is below T (default: "
                        "0.5)")
    add_generator_arguments(g)
    add_output_arguments(p.add_argument_group("masks and outputs"), "replace outputs that already exist")


def add_output_arguments(g, overwrite_help: str) -> None:
    """The mask clean-up and output options that track and batch share."""
    g.add_argument("--fill-holes", type=_area, default=0.0, metavar="AREA",
                   help="fill holes of at most AREA low-res mask pixels (the mask is image-size/4 square)")
    g.add_argument("--remove-sprinkles", type=_area, default=0.0, metavar="AREA",
                   help="remove specks of at most AREA low-res mask pixels")
    g.add_argument("--non-overlap", action="store_true",
                   help="each pixel goes to at most one object (the highest score)")
    g.add_argument("--format", action="append", metavar="FORMAT",
                   help=f"{', '.join(FORMATS)}; repeat it or separate with commas (default: davis)")
    g.add_argument("--out", default="sam2_jax_out", metavar="DIR", help="output folder (default: %(default)s)")
    g.add_argument("--overwrite", action="store_true", help=overwrite_help)


# Subcommands that live in their own module as `add_arguments(parser)` and `run(args)`: (name, module, help).
MODULE_COMMANDS = (
    ("eval", "evaluation", "J&F (DAVIS 2017 rules) of predicted masks against ground truth"),
    ("train", "train.loop", "train or fine-tune on generated clips or a DAVIS / SA-V folder (optax AdamW)"),
    ("batch", "batch", "track the videos of a manifest (JSON lines) on every device, resumably"),
    ("segment", "segment", "segment a still image: every object (--auto) or the one at a click or box"),
    ("app", "app", "annotate videos in the browser: click, see the mask, propagate, correct, export"),
)


def build_parser() -> argparse.ArgumentParser:
    """The `sam2-jax` parser with every subcommand."""
    import importlib

    parser = _Parser(prog="sam2-jax", description="SAM 2 / SAM 2.1 in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    track = sub.add_parser("track", help="segment and track objects through a video from clicks, boxes or masks",
                           description="Segment and track objects through a video from prompts on some of its\n"
                                       "frames; write the masks of every tracked frame.",
                           epilog=TRACK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_track_arguments(track)
    track.set_defaults(func=cmd_track)
    demo = sub.add_parser("demo", help="track shapes through a generated clip and score the result; no files "
                                       "needed")
    demo.add_argument("--out", default="sam2_jax_demo", metavar="DIR", help="output folder (default: %(default)s)")
    demo.add_argument("--frames", type=_int_type(lambda v: v >= 3, "an int >= 3"), default=12,
                      metavar="N", help="clip length (default: %(default)s)")
    demo.add_argument("--image-size", type=_positive, default=256, metavar="S",
                      help="input size of the --random-weights model (default: %(default)s)")
    demo.add_argument("--random-weights", action="store_true",
                      help="a random-weight checkpoint instead of the trained sam2-jax-shapes model")
    demo.add_argument("--seed", type=_int_type(lambda v: v >= 0, "an int >= 0"), default=0, metavar="N",
                      help="the clip, and the random weights (default: %(default)s)")
    demo.add_argument("--compile-cache", metavar="DIR", default=str(DEFAULT_COMPILE_CACHE),
                      help="as for track (default: %(default)s)")
    demo.set_defaults(func=cmd_demo)
    info = sub.add_parser("info", help="print the JAX devices and, with --model, a checkpoint's config")
    info.add_argument("--model", help="a checkpoint folder or sam2-jax-shapes")
    info.set_defaults(func=cmd_info)
    for name, module_name, help in MODULE_COMMANDS:
        module = importlib.import_module(f"{__package__}.{module_name}")
        command = sub.add_parser(name, help=help)
        module.add_arguments(command)
        command.set_defaults(func=module.run)
    convert = sub.add_parser("convert", help="convert a PyTorch checkpoint (see `sam2-jax convert -- --help`)",
                             add_help=False)
    convert.add_argument("convert_args", nargs=argparse.REMAINDER)
    convert.set_defaults(func=cmd_convert)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, as Ctrl-C raises KeyboardInterrupt: the writers delete their
    unfinished outputs on the way out."""


def _raise_terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def sigterm_stops_cleanly():
    """SIGTERM raises `Terminated` meanwhile (in the main thread only, where Python runs signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def main(argv=None) -> int:
    """The `sam2-jax` command: run the subcommand of `argv`; errors are one line on stderr and status 1."""
    args = None
    try:
        with sigterm_stops_cleanly():
            args = build_parser().parse_args(argv)
            return args.func(args)
    except UsageError as err:
        print(f"{err.prog}: error: {err} (see {err.prog} --help)", file=sys.stderr)
    except (ValueError, TypeError, OSError) as err:
        print(f"sam2-jax{' ' + args.command if args else ''}: error: {err}", file=sys.stderr)
    except KeyboardInterrupt as err:  # SIGINT or SIGTERM: the writers have deleted their unfinished outputs
        line, status = stopped(args.command if args else None, err)
        print(line, file=sys.stderr)
        return status
    return 1


def stopped(command: str | None, err: KeyboardInterrupt) -> tuple[str, int]:
    """The one line and the exit status of a command stopped by Ctrl-C (130) or SIGTERM (`Terminated`, 143)."""
    terminated = isinstance(err, Terminated)
    return (f"sam2-jax{' ' + command if command else ''}: {'terminated' if terminated else 'interrupted'}; "
            "nothing unfinished was kept", 128 + (signal.SIGTERM if terminated else signal.SIGINT))


if __name__ == "__main__":
    from sam2_jax import cli  # `python -m`: run the module that the others import, whose exception classes they raise

    sys.exit(cli.main())
