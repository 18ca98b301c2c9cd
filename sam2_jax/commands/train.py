"""`sam2-jax train` (and `python -m sam2_jax.train`): train or fine-tune on generated clips or a DAVIS / SA-V
folder (`sam2_jax.train`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..train.loop import PARTS, evaluate_checkpoint, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `sam2-jax train`."""
    parser.add_argument("--config", default="tiny-generated",
                        help="'tiny-generated' (the 3.1 M-parameter config meant for sam2-jax-shapes), a preset "
                             "such as sam2.1-hiera-tiny, or a config.json (default: %(default)s)")
    parser.add_argument("--init", help="start from the weights of this checkpoint folder (a new optimizer)")
    parser.add_argument("--data", default="generated",
                        help="'generated' (a seeded stream of generated clips) or a DAVIS / SA-V folder")
    parser.add_argument("--format", choices=("davis", "sav"), default="davis",
                        help="layout of a --data folder (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps (default: %(default)s)")
    parser.add_argument("--batch-clips", type=int, default=4, help="clips per step (default: %(default)s)")
    parser.add_argument("--objects-per-step", type=int,
                        help="object slots per step; objects past them are left out (default: 2 x batch-clips)")
    parser.add_argument("--frames", type=int, default=8,
                        help="frames per clip; 1 trains on single images (default: %(default)s)")
    parser.add_argument("--image-size", type=int, help="model input size (default: the config's)")
    parser.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=100, help="linear warm-up steps (default: %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default: %(default)s)")
    parser.add_argument("--freeze", nargs="*", default=[], metavar="PART",
                        help=f"parts left as they are: {', '.join(('image_encoder',) + PARTS[1:])}")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="compute dtype; params and optimizer stay float32 (default: %(default)s)")
    parser.add_argument("--corrections", type=int, default=7,
                        help="correction clicks per corrected frame (default: %(default)s)")
    parser.add_argument("--later-corrections", type=float, default=0.5, metavar="P",
                        help="chance that a clicked or boxed object prompted on one frame also gets corrections "
                             "on one later frame (default: %(default)s)")
    parser.add_argument("--prompt-frames", type=int, choices=(1, 2), default=2,
                        help="prompt frame 0 and up to N-1 random others, the count drawn per step; corrected "
                             "frames become conditioning frames too (default: %(default)s)")
    parser.add_argument("--prompt-mix", metavar="CLICK,BOX,MASK",
                        help="prompt probabilities per object (default: 0.5,0.5,0 for --frames 1, else "
                             "0.25,0.25,0.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, clips and prompts (default: %(default)s)")
    parser.add_argument("--out", default="sam2_jax_train", help="checkpoint folder (default: %(default)s)")
    parser.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="every N steps, J&F on held-out generated clips from click, box and mask prompts, "
                             "beside the copy-the-first-mask baseline (default: never)")
    parser.add_argument("--eval-clips", type=int, default=48, help="held-out clips (default: %(default)s)")
    parser.add_argument("--eval-only", action="store_true",
                        help="train nothing: print the held-out J&F of the --init checkpoint and exit")


def run(args: argparse.Namespace) -> int:
    """Train (or, with --eval-only, score a checkpoint); errors print one line and return 1."""
    try:
        for name in ("steps", "batch_clips", "frames"):
            if getattr(args, name) < 1:
                raise ValueError(f"{name.replace('_', '-')}: expected a positive number, got {getattr(args, name)}")
        if args.data != "generated" and not Path(args.data).is_dir():
            raise ValueError(f"data: expected 'generated' or a dataset folder, got {args.data!r}")
        if args.eval_only:
            evaluate_checkpoint(args)
        else:
            train(args)
    except (ValueError, TypeError, OSError) as err:
        print(f"sam2-jax train: error: {err}", file=sys.stderr)
        return 1
    return 0
