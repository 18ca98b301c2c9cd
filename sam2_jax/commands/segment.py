"""`sam2-jax segment`: the masks of a still image, of every object (`--auto`, through
`Sam2AutomaticMaskGenerator`) or of the one object at clicks and/or a box (`Sam2Model` + `Sam2Processor`,
called as a user calls them).

Each mask is a record as the generator returns it (segmentation, area, bbox, predicted_iou, point_coords,
stability_score, crop_box). Outputs follow `track`'s conventions: each is built under a hidden temporary
name and renamed when complete, stale temporary outputs of a killed run are removed first, and an existing
output is an error unless --overwrite.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import numpy as np

from .. import runtime
from ..io.image_writers import IMAGE_WRITERS
from ..io.writers import PromptMark
from .options import add_generator_arguments, generator_options, model_config, model_name, output_formats
from .outputs import open_output
from .prompts import Prompt, PromptOption, checked_prompts, parse_numbers

FORMATS = ("png", "coco", "overlay")
STABILITY_SCORE_OFFSET = 1.0  # the generator's default: a prompted mask's stability compares logits > +-1

EPILOG = """\
modes:
  --auto                  every object: a grid of clicks through Sam2AutomaticMaskGenerator (the original
                          SAM2AutomaticMaskGenerator), with the generator options below
  --point X,Y[,LABEL] / --box X1,Y1,X2,Y2
                          one object, in pixels of the image; label 1 (positive, the default) or 0
                          (negative); clicks repeat, one box at most. One click and no box is ambiguous:
                          the decoder's three masks are made and the one of highest predicted IoU is kept
                          (the original SAM 2 rule, _use_multimask: multimask for 0 or 1 point, a box
                          counting as 2). Two or more clicks, or a box: a single mask
                          (multimask_output=False).
    sam2-jax segment photo.jpg --model sam2-jax-shapes --auto --points-per-side 16 --format png,overlay
    sam2-jax segment photo.jpg --model sam2-jax-shapes --point 410,230 --point 380,250,0

records (one per mask, best first for --auto):
  area (pixels), bbox [x, y, w, h], predicted_iou (the decoder's IoU score), point_coords (the grid point
  for --auto, the clicks otherwise: [] for a box alone), stability_score (the generator's: pixels of
  logits > 1 over pixels of logits > -1), crop_box [x, y, w, h] (the whole image when prompted).

outputs (under --out, NAME the image's file stem):
  png      png/NAME/0.png, 1.png...: one PNG per mask (255 on the mask), and metadata.csv, one row per
           mask (point_input: the first click; empty for a box alone): the original scripts/amg.py layout
  coco     coco/NAME.json: the records, segmentation a COCO compressed RLE {"size": [H, W], "counts"}
  overlay  overlay/NAME.png: the image with the masks in distinct colours, and the clicks and box
  Each output appears only once complete.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `sam2-jax segment`."""
    p.description = "Segment a still image: every object (--auto), or the one at clicks and/or a box."
    p.epilog, p.formatter_class = EPILOG, argparse.RawDescriptionHelpFormatter
    p.set_defaults(frame=0, obj=1)  # the one frame and object that PromptOption records
    p.add_argument("image", metavar="IMAGE", help="an image file (png, jpg, ...)")
    p.add_argument("--model", required=True, metavar="DIR", help="a SAM 2 or EdgeTAM checkpoint folder (image or "
                                                                 "video) or sam2-jax-shapes")
    p.add_argument("--compile-cache", metavar="DIR", default=str(runtime.DEFAULT_COMPILE_CACHE),
                   help="as for track (default: %(default)s)")
    g = p.add_argument_group("what to segment (see below)")
    g.add_argument("--auto", action="store_true", help="every object in the image")
    g.add_argument("--point", action=PromptOption, dest="prompts", metavar="X,Y[,LABEL]",
                   help="a click; label 1 (default) positive, 0 negative; repeatable")
    g.add_argument("--box", action=PromptOption, dest="prompts", metavar="X1,Y1,X2,Y2", help="a box")
    add_generator_arguments(p.add_argument_group("--auto: Sam2AutomaticMaskGenerator options"))
    g = p.add_argument_group("outputs")
    g.add_argument("--format", action="append", metavar="FORMAT",
                   help=f"{', '.join(FORMATS)}; repeat it or separate with commas (default: png)")
    g.add_argument("--out", default="sam2_jax_out", metavar="DIR", help="output folder (default: %(default)s)")
    g.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")


def run(args: argparse.Namespace) -> int:
    """Check everything, open the outputs, segment, write; returns the exit status."""
    from ..transformers_api.image import Sam2Model, Sam2Processor

    formats = output_formats(args.format, FORMATS)
    if args.auto == bool(args.prompts):
        raise ValueError("--auto, --point, --box: expected either --auto (every object) or --point and/or --box "
                         "(one object), got " + ("both" if args.auto else "neither"))
    image = read_image(Path(args.image))
    height, width = image.shape[:2]
    prompt = None if args.auto else image_prompt(args.prompts, height, width)
    config = model_config(args.model)
    runtime.enable_compile_cache(args.compile_cache)
    print(f"image: {args.image}: {width}x{height}")
    paths = output_paths(Path(args.out), Path(args.image).stem, formats)
    marks = [] if prompt is None else [PromptMark(0, 1, prompt.points, prompt.labels, prompt.box)]
    with contextlib.ExitStack() as outputs_open:
        writers = {f: outputs_open.enter_context(open_output(
            IMAGE_WRITERS[f], path, overwrite=args.overwrite, **({"prompts": marks} if f == "overlay" else {})))
            for f, path in paths.items()}
        began = time.perf_counter()
        model = Sam2Model.from_pretrained(args.model)
        print(f"model: {args.model}: {model_name(config)}, image size {config.image_size} "
              f"(loaded in {time.perf_counter() - began:.1f} s)")
        began = time.perf_counter()
        if prompt is None:
            records = segment_everything(model, image, args)
        else:
            records = [segment_prompted(model, Sam2Processor.from_pretrained(args.model), image, prompt)]
        seconds = time.perf_counter() - began
        for writer in writers.values():
            writer.save(image, records)
    print(f"segmented {len(records)} mask(s) in {seconds:.1f} s (compilation included)")
    for f, path in paths.items():
        print(f"wrote {f:<7} {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def read_image(path: Path) -> np.ndarray:
    """The image file as (H, W, 3) uint8 RGB, converted as the processor converts a PIL image (transparency
    blended on white); a ValueError naming IMAGE if it is missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    from ..processing import to_rgb

    if not path.is_file():
        raise ValueError(f"IMAGE: {str(path)!r} " + ("is not a file" if path.exists() else "does not exist"))
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"IMAGE: {str(path)!r} is not a readable image ({err})") from err


def image_prompt(options: list[tuple], height: int, width: int) -> Prompt:
    """The --point / --box options -> one Prompt, checked against the image as `track` checks a frame's."""
    boxes = [text for option, text, *_ in options if option == "--box"]
    if len(boxes) > 1:
        raise ValueError(f"--box: expected one box (one object), got {len(boxes)}: {', '.join(boxes)}")
    parts = [(option[2:], parse_numbers(text, (2, 3, 4), "numbers"), 0, 1, f"{option} {text}")
             for option, text, *_ in options]
    return checked_prompts(parts, 1, height, width)[0]


# ---------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------


def segment_everything(model, image: np.ndarray, args) -> list[dict]:
    """The generator's records ("binary_mask" segmentations) with the options of the command line."""
    from ..automatic.masks import Sam2AutomaticMaskGenerator

    generator = Sam2AutomaticMaskGenerator(model, **generator_options(args))
    return generator.generate(image)


def segment_prompted(model, processor, image: np.ndarray, prompt: Prompt) -> dict:
    """The record of the prompted object, as `Sam2AutomaticMaskGenerator` makes one (the crop box the whole
    image, point_coords the clicks). One click and no box: the best of three masks by predicted IoU; else one
    mask."""
    from ..automatic.masks import _xywh, mask_boxes

    multimask = len(prompt.points) == 1 and prompt.box is None
    inputs = processor(images=image,
                       input_points=[[prompt.points]] if prompt.points else None,
                       input_labels=[[prompt.labels]] if prompt.points else None,
                       input_boxes=[[prompt.box]] if prompt.box is not None else None)
    outputs = model(**inputs, multimask_output=multimask)
    logits = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"], binarize=False)[0][0]
    iou = np.asarray(outputs.iou_scores[0, 0], np.float32)
    best = int(np.argmax(iou))
    mask = logits[best] > 0
    height, width = mask.shape
    return {"segmentation": mask, "area": int(mask.sum()), "bbox": _xywh(np.asarray(mask_boxes(mask[None]))[0]),
            "predicted_iou": iou[best].item(), "point_coords": [[float(x), float(y)] for x, y in prompt.points],
            "stability_score": stability_score(logits[best]), "crop_box": [0.0, 0.0, float(width), float(height)]}


def stability_score(logits: np.ndarray, offset: float = STABILITY_SCORE_OFFSET) -> float:
    """The generator's stability score of mask logits (threshold 0): the pixels above +offset over those above
    -offset, float32 as in `automatic.masks.select_masks` (NaN if both are none)."""
    inner = np.sum(logits > np.float32(offset))
    outer = np.sum(logits > np.float32(-offset))
    with np.errstate(invalid="ignore"):
        return (np.float32(inner) / np.float32(outer)).item()


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


def output_paths(out: Path, name: str, formats) -> dict[str, Path]:
    """Where each format goes: png/NAME/ (scripts/amg.py's folder), coco/NAME.json, overlay/NAME.png."""
    places = {"png": out / "png" / name, "coco": out / "coco" / f"{name}.json",
              "overlay": out / "overlay" / f"{name}.png"}
    return {f: places[f] for f in formats}
