"""`sam2-jax demo`: generate a clip, track it with the packaged model, write every format, score it."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import numpy as np

from .. import runtime
from ..io.writers import make_writer
from . import track
from .options import FORMATS, Parser, int_type, positive


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the mask pixel farthest from its edge: its centre, inside it even when it is not convex."""
    from scipy import ndimage

    y, x = np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape)
    return int(x), int(y)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `sam2-jax demo`."""
    p.add_argument("--out", default="sam2_jax_demo", metavar="DIR", help="output folder (default: %(default)s)")
    p.add_argument("--frames", type=int_type(lambda v: v >= 3, "an int >= 3"), default=12,
                   metavar="N", help="clip length (default: %(default)s)")
    p.add_argument("--image-size", type=positive, default=256, metavar="S",
                   help="input size of the --random-weights model (default: %(default)s)")
    p.add_argument("--random-weights", action="store_true",
                   help="a random-weight checkpoint instead of the trained sam2-jax-shapes model")
    p.add_argument("--seed", type=int_type(lambda v: v >= 0, "an int >= 0"), default=0, metavar="N",
                   help="the clip, and the random weights (default: %(default)s)")
    p.add_argument("--compile-cache", metavar="DIR", default=str(runtime.DEFAULT_COMPILE_CACHE),
                   help="as for track (default: %(default)s)")


def run(args) -> int:
    """Generate a clip, track it with the packaged model, write every format, score it; the exit status."""
    from ..config import small_config
    from ..io.clips import generate_clip, write_clip_davis
    from ..io.datasets import DavisDataset
    from ..io.evaluation import evaluate_sequence

    out = Path(args.out)
    runtime.enable_compile_cache(args.compile_cache)
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
        from ..transformers_api.video_model import Sam2VideoModel

        model = str(out / "checkpoint")
        Sam2VideoModel.from_config(small_config(image_size=args.image_size), seed=args.seed).save_pretrained(model)
        print(f"2. wrote a random-weight SAM 2.1 checkpoint (small config, {args.image_size} px) to {model} "
              "(random weights track nothing in particular)")

    argv = ["track", str(video), "--model", model, "--out", str(out), "--format", ",".join(FORMATS),
            "--overwrite", "--compile-cache", args.compile_cache]
    for obj_id, mask in zip(clip.obj_ids, clip.masks[0]):
        argv += ["--obj", str(obj_id), "--point", "{},{}".format(*interior_point(mask))]
    print(f"3. one click at the centre of each object on frame 0; tracking with:\n   sam2-jax {shlex.join(argv)}")
    parser = Parser(prog="sam2-jax track")
    track.add_arguments(parser)
    track.run(parser.parse_args(argv[1:]))

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
