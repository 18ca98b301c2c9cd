"""Automatic mask generation speed: sam2-jax's `Sam2AutomaticMaskGenerator` and the original sam2
`SAM2AutomaticMaskGenerator`, side by side in one process.

    python -m benchmarks.automatic [--points-per-side 32] [--height 768] [--width 1024] [--repeats 2]
        [--seed 0] [--out benchmarks/results]

Both get the same SAM 2.1 tiny (built by the sam2 package from its config, 1024 px input, every parameter randomised as
in the parity tests, converted with `convert/`), the same generated image (`common.moving_shapes`) and the generators'
defaults besides points_per_side. sam2-jax runs float32 at "highest" matmul precision (its parity mode) and generates
once beforehand, so compilation stays out of its timings (that first call is reported apart). Then the two take
turns, `--repeats` images each, with their default threads. Images per second: one over the median seconds per image;
the speed-up is sam2-jax's over the original's. Random weights rarely pass the default filters (predicted IoU 0.8,
stability 0.95), so few masks come out and the per-mask work (RLE, records) hardly counts here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import jax
import torch
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.build_sam import build_sam2

from convert.__main__ import main as convert
from sam2_jax import Sam2AutomaticMaskGenerator, Sam2Model
from tests.reference import randomize_

from .common import describe, machine, markdown_table, moving_shapes, save

CONFIG_FILE = "configs/sam2.1/sam2.1_hiera_t.yaml"  # the sam2 package's config of sam2.1-hiera-tiny


def build_models(folder: str, seed: int):
    """The original model with random weights, and sam2-jax's `Sam2Model` of its converted checkpoint."""
    torch.manual_seed(seed)
    original = randomize_(build_sam2(CONFIG_FILE, None, device="cpu"), seed=seed)
    torch.save({"model": original.state_dict()}, os.path.join(folder, "original.pt"))
    if convert([os.path.join(folder, "original.pt"), os.path.join(folder, "converted")]) != 0:
        raise RuntimeError("the conversion failed")
    return original, Sam2Model.from_pretrained(os.path.join(folder, "converted"))


def timed(generate, image) -> tuple[list[dict], float]:
    start = time.perf_counter()
    records = generate(image)
    return records, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2, help="timed images per implementation")
    parser.add_argument("--seed", type=int, default=0, help="of the random weights")
    parser.add_argument("--out", default="benchmarks/results", help="folder for <device>-automatic-<date>.json/.md")
    args = parser.parse_args(argv)
    command = " ".join(["python -m benchmarks.automatic", *(sys.argv[1:] if argv is None else argv)])
    before = machine()
    with tempfile.TemporaryDirectory() as folder:
        original, model = build_models(folder, args.seed)
    image, _ = moving_shapes(0, args.height, args.width, objects=4)
    reference = SAM2AutomaticMaskGenerator(original, points_per_side=args.points_per_side)
    with jax.default_matmul_precision("highest"):
        ours = Sam2AutomaticMaskGenerator(model, points_per_side=args.points_per_side)
        _, first_s = timed(ours.generate, image)
        print(f"sam2-jax first image (compiles): {first_s:.1f} s", file=sys.stderr, flush=True)
        seconds = {"original": [], "sam2-jax": []}
        for _ in range(args.repeats):
            expected, s = timed(reference.generate, image)
            seconds["original"].append(s)
            got, s = timed(ours.generate, image)
            seconds["sam2-jax"].append(s)
            print({k: round(v[-1], 1) for k, v in seconds.items()}, file=sys.stderr, flush=True)
    per_second = {name: 1 / statistics.median(s) for name, s in seconds.items()}
    speedup = per_second["sam2-jax"] / per_second["original"]
    after = machine()
    results = {"command": command, "machine_before": before, "machine_after": after,
               "torch_threads": torch.get_num_threads(), "image": [args.height, args.width],
               "points_per_side": args.points_per_side, "seconds_per_image": seconds,
               "sam2_jax_first_image_s": first_s, "images_per_second": per_second, "speedup": speedup,
               "masks": {"original": len(expected), "sam2-jax": len(got)}}
    rows = [[name, f"{statistics.median(seconds[name]):.1f}", f"{per_second[name]:.4f}",
             " ".join(f"{s:.1f}" for s in seconds[name]), results["masks"][name]] for name in seconds]
    text = "\n".join([
        f"Automatic mask generation, sam2.1-hiera-tiny (random weights, 1024 px input), one {args.height}x{args.width} "
        f"image, {args.points_per_side}x{args.points_per_side} points, default settings otherwise; sam2-jax float32 "
        f"at \"highest\" matmul precision; default threads (torch: {results['torch_threads']}). sam2-jax's first image "
        f"(compilation included) took {first_s:.1f} s.", "", f"`{command}`", "",
        f"Machine: {describe(before, after)}.", "",
        markdown_table(["implementation", "s / image (median)", "images / s", "each image (s)", "masks"], rows), "",
        f"Speed-up of sam2-jax over the original: **{speedup:.2f}x**."])
    print(text)
    for path in save(args.out, "automatic-sam2.1-hiera-tiny", results, text):
        print("wrote", path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
