"""How long a model takes to be ready for the first click with an empty compilation cache: build it (random
weights) and compile the whole program set of a session (`model.warm_up`), in a fresh process.

    python -m benchmarks.warm_up [--config sam2.1-hiera-tiny] [--max-objects 16]

Prints the build and warm-up seconds and each program's compile seconds; writes nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from .common import config_named, describe, in_fresh_process, machine


def ready(config_name: str, max_objects: int) -> dict:
    """Runs in a fresh process with an empty persistent cache: seconds to build, to warm up, per program."""
    import os

    os.environ["SAM2_JAX_COMPILE_CACHE"] = tempfile.mkdtemp()
    from sam2_jax import Sam2VideoModel

    began = time.perf_counter()
    model = Sam2VideoModel(config_named(config_name))
    built = time.perf_counter()
    model.warm_up(max_objects=max_objects, background=False)
    return {"build": built - began, "warm-up": time.perf_counter() - built,
            "programs": dict(model.programs.compile_seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sam2.1-hiera-tiny", help="small, a SAM 2 preset name, or edgetam")
    parser.add_argument("--max-objects", type=int, default=16)
    args = parser.parse_args()
    before = machine()
    result = in_fresh_process("benchmarks.warm_up", "ready", config_name=args.config, max_objects=args.max_objects)
    print(f"{args.config}, warm-up for {args.max_objects} objects, empty cache; {describe(before, machine())}")
    print(f"build {result['build']:.1f} s, warm-up {result['warm-up']:.1f} s "
          f"({len(result['programs'])} programs: "
          + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in result["programs"].items()) + ")")


if __name__ == "__main__":
    main()
