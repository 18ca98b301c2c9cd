"""`python -m convert SRC DST [--to transformers|original] [--verify] [--overwrite]` (also `sam2-jax convert`)."""

from __future__ import annotations

import argparse
import sys

from .checkpoint import FORMATS, convert
from .verify import verify_folder, verify_original


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m convert",
        description="Convert a SAM 2 / SAM 2.1 / EdgeTAM PyTorch checkpoint: an original facebookresearch/sam2 or "
                    "facebookresearch/EdgeTAM .pt, or a transformers folder (config.json + model.safetensors, which is "
                    "also sam2-jax's format). Every tensor is checked against the model; nothing is written if one "
                    "is wrong.")
    parser.add_argument("src", metavar="SRC", help="an original .pt file or a transformers / sam2-jax folder")
    parser.add_argument("dst", metavar="DST", help="the folder (--to transformers) or .pt file (--to original) "
                                                   "to write")
    parser.add_argument("--to", choices=FORMATS, default="transformers",
                        help="format to write (default: %(default)s, which sam2-jax loads)")
    parser.add_argument("--verify", action="store_true",
                        help="check the result: for a folder, run transformers' and sam2-jax's image models on a "
                             "generated frame and one click and compare the mask logits; for a .pt, read it back "
                             "and compare every tensor")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check = None
    if args.verify:
        check = verify_folder if args.to == "transformers" else (lambda path: verify_original(args.src, path))
    try:
        summary = convert(args.src, args.dst, to=args.to, overwrite=args.overwrite, check=check)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    verified = ""
    if summary.check_report:
        print(f"verify: {summary.check_report}")
        verified = f", verified in {summary.check_seconds:.1f} s"
    print(f"{summary.variant}: {summary.tensors} tensors, {summary.parameters:,} parameters, "
          f"{summary.source_format} -> {summary.target_format} in {summary.seconds:.1f} s{verified}: {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
