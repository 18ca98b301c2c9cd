"""What the commands share: argparse value types, the mask and output options of track and batch, the
automatic mask generator's options, and the checks of --format and --model."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..io.writers import WRITERS

FORMATS = tuple(WRITERS)  # davis, sav, coco, overlay


class UsageError(ValueError):
    """A malformed command line (argparse's errors, reported like every other error)."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse, except that a usage error raises UsageError (one line, exit status 1)."""

    def error(self, message):
        raise UsageError(self.prog, message)


def int_type(check, expected: str):
    """An argparse `type`: int(text) where check() holds it, else a usage error saying `expected`."""
    def convert(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not check(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    convert.__doc__ = f"An argparse type: {expected}."
    return convert


frame_index = int_type(lambda v: v >= 0, "a frame index >= 0")
MAX_OBJ_ID = 254  # object ids a DAVIS PNG holds (255 marks void)
object_id = int_type(lambda v: 1 <= v <= MAX_OBJ_ID, f"an object id in 1..{MAX_OBJ_ID}")
positive = int_type(lambda v: v >= 1, "an int >= 1")


def area(text):
    """An argparse type: an area >= 0 in low-res mask pixels."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected an area >= 0 (low-res mask pixels), got {text!r}")
    return value


def fraction(text):
    """An argparse type: a number in [0, 1]."""
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
    g.add_argument("--points-per-side", type=positive, default=d["points_per_side"], metavar="N",
                   help="an N x N grid of point prompts (default: %(default)s)")
    g.add_argument("--points-per-batch", type=positive, default=d["points_per_batch"], metavar="N",
                   help="points per decoder call (default: %(default)s)")
    g.add_argument("--pred-iou-thresh", type=fraction, default=d["pred_iou_thresh"], metavar="T",
                   help="keep masks whose predicted IoU is at least T (default: %(default)s)")
    g.add_argument("--stability-score-thresh", type=fraction, default=d["stability_score_thresh"], metavar="T",
                   help="keep masks whose stability score is at least T (default: %(default)s)")
    g.add_argument("--box-nms-thresh", type=fraction, default=d["box_nms_thresh"], metavar="T",
                   help="of two masks whose boxes overlap more (IoU), drop the less confident (default: "
                        "%(default)s)")
    g.add_argument("--crop-n-layers", type=int_type(lambda v: v >= 0, "an int >= 0"), default=d["crop_n_layers"],
                   metavar="N", help="also run on N layers of overlapping crops, for small objects (default: "
                                     "%(default)s)")
    g.add_argument("--min-mask-region-area", type=area, default=d["min_mask_region_area"], metavar="AREA",
                   help="remove holes and islands up to AREA low-res mask pixels (default: %(default)s)")
    g.add_argument("--use-m2m", action="store_true", help="refine each mask once with itself as the prompt")


def generator_options(args) -> dict:
    """`Sam2AutomaticMaskGenerator` keyword arguments from the options of `add_generator_arguments`."""
    return {name: getattr(args, name) for name in GENERATOR_DEFAULTS}


def output_formats(values, known=FORMATS) -> list[str]:
    """--format values (repeated and/or comma-separated) -> distinct names of `known`; its first by default."""
    formats = []
    for value in values or known[:1]:
        for name in value.split(","):
            if name not in known:
                raise ValueError(f"--format: unknown format {name!r}; expected one of {', '.join(known)}")
            if name not in formats:
                formats.append(name)
    return formats


def model_config(model: str):
    """The config of --model: a checkpoint folder or the name of a packaged model (`weights.PACKAGED`)."""
    from ..weights import PACKAGED, read_config, resolve_pretrained

    folder = resolve_pretrained(model)
    if not Path(folder).is_dir():
        raise ValueError(f"--model: expected a checkpoint folder or a packaged model ({', '.join(PACKAGED)}), got "
                         f"{model!r}, which " + ("is not a folder" if Path(folder).exists() else "does not exist"))
    return read_config(folder)


def model_name(config) -> str:
    """How the commands name the model of a config: "EdgeTAM", or "SAM 2.1" / "SAM 2.0" ("SAM 2" for an image
    model's config, the same in both versions)."""
    return "EdgeTAM" if config.version == "edgetam" else f"SAM {config.version}"


def add_output_arguments(g, overwrite_help: str) -> None:
    """The mask clean-up and output options that track and batch share."""
    g.add_argument("--fill-holes", type=area, default=0.0, metavar="AREA",
                   help="fill holes of at most AREA low-res mask pixels (the mask is image-size/4 square)")
    g.add_argument("--remove-sprinkles", type=area, default=0.0, metavar="AREA",
                   help="remove specks of at most AREA low-res mask pixels")
    g.add_argument("--non-overlap", action="store_true",
                   help="each pixel goes to at most one object (the highest score)")
    g.add_argument("--format", action="append", metavar="FORMAT",
                   help=f"{', '.join(FORMATS)}; repeat it or separate with commas (default: davis)")
    g.add_argument("--out", default="sam2_jax_out", metavar="DIR", help="output folder (default: %(default)s)")
    g.add_argument("--overwrite", action="store_true", help=overwrite_help)

