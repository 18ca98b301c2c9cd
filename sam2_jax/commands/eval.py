"""`sam2-jax eval`: J&F (DAVIS 2017 rules) of a folder of predicted masks against ground truth."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io.evaluation import evaluate_folder, format_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `sam2-jax eval`."""
    parser.add_argument("pred", help="folder of predicted masks, one subfolder per sequence")
    parser.add_argument("gt", help="ground truth: a DAVIS root (or its annotation folder), or an SA-V "
                                   "annotation folder")
    parser.add_argument("--format", choices=("davis", "sav"), default="davis",
                        help="mask layout: davis (one PNG of ids per frame) or sav (one folder per "
                             "object) (default: %(default)s)")
    parser.add_argument("--split", help="davis only: score the sequences of GT/ImageSets/2017/SPLIT.txt "
                                        "(default: every sequence of GT)")
    parser.add_argument("--json", metavar="OUT", help="also write the scores to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Score, print the table, write the JSON if asked; errors print one line and return 1."""
    try:
        result = evaluate_folder(args.pred, args.gt, args.format, args.split)
        print(format_table(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    except (ValueError, TypeError, OSError) as err:
        print(f"sam2-jax eval: error: {err}", file=sys.stderr)
        return 1
    return 0
