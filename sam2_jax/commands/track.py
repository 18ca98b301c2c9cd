"""`sam2-jax track`: masks of the prompted objects (or, with --auto, of every object found) through one
video, in the chosen formats."""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import time
from pathlib import Path

import numpy as np

from .. import runtime
from ..io.frames import open_video
from ..io.writers import PromptMark
from .options import (MAX_OBJ_ID, add_generator_arguments, add_output_arguments, fraction, frame_index,
                      generator_options, int_type, model_config, model_name, object_id, output_formats, positive)
from .outputs import frame_masks, open_output, output_paths, video_name
from .progress import progress_bar
from .prompts import PromptOption, apply_prompts, collect_prompts


def _pass_frames(start: int, num_frames: int, max_frames: int | None, reverse: bool) -> range:
    """The frames one propagation pass visits (`--max-frames N`: at most N, the start frame included)."""
    n = num_frames if max_frames is None else max_frames
    if reverse:
        return range(start, max(start - n, -1), -1) if start > 0 else range(0)
    return range(start, min(start + n, num_frames))


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


def run(args) -> int:
    """Track the prompted objects (or, with --auto, every object found) and write their masks; the
    exit status."""
    import jax.numpy as jnp

    from ..transformers_api.video_model import Sam2VideoModel
    from ..transformers_api.video_processor import Sam2VideoProcessor

    formats = output_formats(args.format)
    config = model_config(args.model)
    if args.image_size is not None and args.image_size != config.image_size:
        raise ValueError(f"--image-size {args.image_size} does not match the model's image size "
                         f"{config.image_size} (in the config of {args.model})")
    _check_auto_arguments(args)
    runtime.enable_compile_cache(args.compile_cache)
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

        paths = output_paths(Path(args.out), video_name(args.video), formats)
        marks = [PromptMark(p.frame, p.obj_id, p.points, p.labels, p.box) for p in prompts if p.mask is None]
        writers = {f: writers_open.enter_context(open_output(
            f, path, overwrite=args.overwrite, **({"fps": fps, "prompts": marks} if f == "overlay" else {})))
            for f, path in paths.items()}

        began = time.perf_counter()
        dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
        model = Sam2VideoModel.from_pretrained(args.model, dtype=dtype)
        print(f"model: {args.model}: {model_name(config)}, image size {config.image_size}, {args.dtype} "
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
                    sink.add(out.frame_idx, out.object_ids, frame_masks(processor, out.pred_masks, (height, width), args))
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
    from ..automatic.masks import Sam2AutomaticMaskGenerator
    from ..automatic.video import Sam2AutomaticVideoTracker, image_model

    generator = Sam2AutomaticMaskGenerator(image_model(model), **generator_options(args))
    return Sam2AutomaticVideoTracker(
        model, generator, auto_every=args.auto_every, max_objects=args.max_objects or MAX_OBJ_ID,
        new_object_iou=0.5 if args.new_object_iou is None else args.new_object_iou, processor=processor)


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `sam2-jax track`."""
    p.description = ("Segment and track objects through a video from prompts on some of its\n"
                     "frames; write the masks of every tracked frame.")
    p.epilog, p.formatter_class = TRACK_EPILOG, argparse.RawDescriptionHelpFormatter
    p.add_argument("video", metavar="VIDEO", help="a video file (mp4, mov, webm, mkv, avi...) or a folder of "
                                                  "frames numbered by their file names (00000.jpg, ...)")
    p.add_argument("--model", required=True, metavar="DIR", help="a video checkpoint folder (config.json and "
                                                                 "model.safetensors) or sam2-jax-shapes")
    g = p.add_argument_group("prompts (see below)")
    g.add_argument("--frame", type=frame_index, default=0, metavar="F",
                   help="the frame of the prompt options that follow (default: 0)")
    g.add_argument("--obj", type=object_id, default=1, metavar="ID",
                   help="the object id (1..254) of the prompt options that follow (default: 1)")
    g.add_argument("--point", action=PromptOption, dest="prompt_options", metavar="X,Y[,LABEL]",
                   help="a click; label 1 (default) positive, 0 negative; repeatable")
    g.add_argument("--box", action=PromptOption, dest="prompt_options", metavar="X1,Y1,X2,Y2",
                   help="a box; repeatable, one per object and frame")
    g.add_argument("--mask", action=PromptOption, dest="prompt_options", metavar="PNG",
                   help="a mask; repeatable, one per object and frame, alone")
    g.add_argument("--prompts", metavar="FILE.json", help="many prompts from a JSON file (schema below)")
    g = p.add_argument_group("tracking")
    g.add_argument("--start-frame", type=frame_index, metavar="F",
                   help="start here (default: the first prompted frame)")
    g.add_argument("--max-frames", type=positive, metavar="N",
                   help="track at most N frames in each direction, the start frame included (default: all)")
    g.add_argument("--reverse", action="store_true", help="track backward, toward frame 0")
    g.add_argument("--both-directions", action="store_true",
                   help="track forward, then backward from the start frame (backward first with --reverse)")
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute precision (default: %(default)s)")
    g.add_argument("--image-size", type=positive, metavar="S",
                   help="the model's input size; must match the checkpoint's config (default: the config's)")
    g.add_argument("--compile-cache", metavar="DIR", default=str(runtime.DEFAULT_COMPILE_CACHE),
                   help="keep compiled programs here to skip compilation next time; 'off' to not "
                        "(default: %(default)s)")
    g = p.add_argument_group("prompt-free (--auto)")
    g.add_argument("--auto", action="store_true",
                   help="no prompts: track every object the automatic mask generator finds on the start frame")
    g.add_argument("--auto-every", type=positive, metavar="K",
                   help="run the generator again every K frames; a mask that matches no tracked object becomes "
                        "a new one (default: the start frame only)")
    g.add_argument("--max-objects", type=int_type(lambda v: 1 <= v <= MAX_OBJ_ID, f"an int in 1..{MAX_OBJ_ID}"),
                   metavar="M", help=f"track at most M objects (default and largest: {MAX_OBJ_ID}, the ids a DAVIS "
                                     "PNG holds)")
    g.add_argument("--new-object-iou", type=fraction, metavar="T",
                   help="a found mask is a new object when its IoU with every tracked one is below T (default: "
                        "0.5)")
    add_generator_arguments(g)
    add_output_arguments(p.add_argument_group("masks and outputs"), "replace outputs that already exist")
