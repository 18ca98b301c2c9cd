"""`sam2-jax convert`: the converter of `convert/` (needs torch), its arguments passed on as they are."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Everything after `convert` goes to the converter (`sam2-jax convert -- --help`)."""
    p.add_argument("convert_args", nargs=argparse.REMAINDER)


def run(args) -> int:
    """`sam2-jax convert`: the converter of `convert/` (needs torch)."""
    try:
        from convert.__main__ import main as convert_main
    except ImportError as err:
        raise ValueError(f"convert needs the torch extra (pip install 'sam2-jax[torch]'): {err}") from err
    return convert_main(args.convert_args)
