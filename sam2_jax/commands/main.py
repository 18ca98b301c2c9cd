"""The `sam2-jax` command: its parser and `main`; each subcommand is a module of this package with
`add_arguments(parser)` and `run(args)`.

Errors, usage errors included, print one line on stderr and exit with status 1; Ctrl-C (SIGINT) prints
one line and exits with status 130, SIGTERM (`kill`, a job scheduler) likewise with status 143 (`stopping`).
Outputs are written complete or not at all (`outputs`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .options import Parser, UsageError
from .stopping import sigterm_stops_cleanly, stopped

# (name, module of this package, help), in the order of `sam2-jax --help`.
COMMANDS = (
    ("track", "track", "segment and track objects through a video from clicks, boxes or masks"),
    ("demo", "demo", "track shapes through a generated clip and score the result; no files needed"),
    ("info", "info", "print the JAX devices and, with --model, a checkpoint's config"),
    ("eval", "eval", "J&F (DAVIS 2017 rules) of predicted masks against ground truth"),
    ("train", "train", "train or fine-tune on generated clips or a DAVIS / SA-V folder (optax AdamW)"),
    ("batch", "batch", "track the videos of a manifest (JSON lines) on every device, resumably"),
    ("segment", "segment", "segment a still image: every object (--auto) or the one at a click or box"),
    ("app", "app", "annotate videos in the browser: click, see the mask, propagate, correct, export"),
    ("convert", "convert", "convert a PyTorch checkpoint (see `sam2-jax convert -- --help`)"),
)


def build_parser() -> argparse.ArgumentParser:
    """The `sam2-jax` parser with every subcommand."""
    parser = Parser(prog="sam2-jax", description="SAM 2 / SAM 2.1 and EdgeTAM in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name, help in COMMANDS:
        module = importlib.import_module(f"{__package__}.{module_name}")
        command = sub.add_parser(name, help=help, add_help=name != "convert")  # convert's --help is the converter's
        module.add_arguments(command)
        command.set_defaults(func=module.run)
    return parser


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
