"""The `sam2-jax` command: `demo` (the whole pipeline on generated data), `info`, `convert`.

Errors print one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _demo_image(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """A noisy textured background with one filled ellipse: (image uint8 (H,W,3), truth bool (H,W), centre)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    background = 90 + 40 * np.sin(xx / 9.0)[..., None] * np.cos(yy / 13.0)[..., None]
    image = background + rng.normal(0, 12, (height, width, 3))
    cy, cx, ry, rx = height * 0.55, width * 0.4, height * 0.22, width * 0.18
    truth = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    image[truth] = np.array([220, 60, 40]) + rng.normal(0, 10, (truth.sum(), 3))
    return np.clip(image, 0, 255).astype(np.uint8), truth, (cx, cy)


def _overlay(image: np.ndarray, mask: np.ndarray, point: tuple[float, float]) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = 0.5 * out[mask] + 0.5 * np.array([30, 144, 255])
    x, y = int(round(point[0])), int(round(point[1]))
    out[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4] = (0, 255, 0)
    return out.astype(np.uint8)


def cmd_demo(args) -> int:
    from PIL import Image

    from .api import Sam2Model, Sam2Processor
    from .config import replace, small_config

    os.makedirs(args.out, exist_ok=True)
    config = replace(small_config(image_size=args.image_size), model_type="sam2")
    image, truth, centre = _demo_image(360, 480, args.seed)
    checkpoint = os.path.join(args.out, "checkpoint")
    print(f"1. generated a 480x360 image with one ellipse; click at ({centre[0]:.0f}, {centre[1]:.0f})")
    Sam2Model.from_config(config, seed=args.seed).save_pretrained(checkpoint)
    print(f"2. wrote a random-weight SAM 2 checkpoint (small config, {args.image_size} px) to {checkpoint}")
    start = time.perf_counter()
    model = Sam2Model.from_pretrained(checkpoint)
    processor = Sam2Processor(size=args.image_size)
    inputs = processor(images=image, input_points=[[[list(centre)]]], input_labels=[[[1]]])
    outputs = model(**inputs, multimask_output=True)
    masks = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])[0]
    best = int(np.argmax(np.asarray(outputs.iou_scores)[0, 0]))
    mask = np.asarray(masks[0, best])
    elapsed = time.perf_counter() - start
    scores = ", ".join(f"{s:.3f}" for s in np.asarray(outputs.iou_scores)[0, 0])
    print(f"3. loaded it, segmented the image in {elapsed:.1f} s (compilation included): 3 masks, "
          f"predicted IoU [{scores}]; best mask covers {mask.mean():.1%} of the image")
    Image.fromarray(image).save(os.path.join(args.out, "image.png"))
    Image.fromarray((mask * 255).astype(np.uint8)).save(os.path.join(args.out, "mask.png"))
    Image.fromarray(_overlay(image, mask, centre)).save(os.path.join(args.out, "overlay.png"))
    iou = (mask & truth).sum() / max((mask | truth).sum(), 1)
    print(f"4. wrote image.png, mask.png and overlay.png to {args.out} (IoU with the drawn ellipse: {iou:.3f}; "
          "random weights segment nothing in particular)")
    return 0


def cmd_info(args) -> int:
    import jax

    from . import __version__
    from .weights import read_config

    print(f"sam2-jax {__version__}, jax {jax.__version__}")
    for device in jax.devices():
        print(f"device: {device.platform} {device.device_kind} (id {device.id})")
    if args.model:
        config = read_config(args.model)
        backbone = config.vision_config.backbone_config
        print(f"model: {args.model}: model_type {config.model_type}, SAM {config.version}, image size "
              f"{config.image_size}, Hiera dims {list(backbone.embed_dim_per_stage)}, blocks "
              f"{list(backbone.blocks_per_stage)}")
    return 0


def cmd_convert(args) -> int:
    try:
        from convert.__main__ import main as convert_main
    except ImportError as err:
        raise ValueError(f"convert needs the torch extra (pip install 'sam2-jax[torch]'): {err}") from err
    return convert_main(args.convert_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam2-jax", description="SAM 2 / SAM 2.1 in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the whole pipeline on generated data, no files needed")
    demo.add_argument("--out", default="sam2_jax_demo", help="output folder (default: %(default)s)")
    demo.add_argument("--image-size", type=int, default=256, help="model input size (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)
    info = sub.add_parser("info", help="print the JAX devices and, with --model, a checkpoint's config")
    info.add_argument("--model", help="a checkpoint folder")
    info.set_defaults(func=cmd_info)
    convert = sub.add_parser("convert", help="convert a PyTorch checkpoint (see `sam2-jax convert -- --help`)",
                             add_help=False)
    convert.add_argument("convert_args", nargs=argparse.REMAINDER)
    convert.set_defaults(func=cmd_convert)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as err:
        print(f"sam2-jax {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
