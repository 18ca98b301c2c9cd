"""Matrix products alone, XLA beside torch: the ceiling a float32 speed-up over transformers has on this machine.

    python -m benchmarks.matmul [--repeat 10] [--cores N] [--out benchmarks/results/]

Tracking a frame is mostly matrix products (memory attention's scores are 4096 x 28736 x 256 per layer and
object), so the rate at which XLA:CPU multiplies, against torch's (MKL/oneDNN), bounds what sam2-jax can gain
in parity mode. Rows: a square 2048^3 product (each library's peak) and memory attention's two products for one
block of 256 queries (scores against 7 x 4096 + 64 keys; the weighted sum over the 64-wide values), in float32
and bfloat16. Also reported: whether XLA computes a bfloat16 product in bfloat16 or converts it to float32
first (read from the compiled HLO). Times are the best of `--repeat` calls; writes
`<device>-matmul-<date>.{json,md}`.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from .common import best_seconds, describe, machine, markdown_table, save, use_cores

SHAPES = {  # name: (M, K, N)
    "square 2048": (2048, 2048, 2048),
    "memory attention scores, 256 queries": (256, 256, 7 * 4096 + 64),
    "memory attention weighted sum, 256 queries": (256, 7 * 4096 + 64, 64),
}


def xla_converts_to_float32(a, b) -> bool:
    """True when XLA's compiled product of two bfloat16 matrices converts them to float32 first."""
    text = jax.jit(jnp.matmul).lower(a, b).compile().as_text()
    return any("convert(" in line and "f32[" in line.split("=", 1)[1][:20] for line in text.splitlines()
               if "=" in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--cores", type=int, help="run on this many cores (default: all)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the result files")
    args = parser.parse_args()
    use_cores(args.cores)
    import torch

    before = machine()
    rng = np.random.default_rng(0)
    rows, results = [], {"shapes": {}, "xla_bfloat16_computed_in_float32": None}
    for name, (m, k, n) in SHAPES.items():
        a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        gflop = 2 * m * k * n / 1e9
        for dtype in ("float32", "bfloat16"):
            ja, jb = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
            ta, tb = (torch.from_numpy(x).to(getattr(torch, dtype)) for x in (a, b))
            product = jax.jit(jnp.matmul)
            with jax.default_matmul_precision("highest"):
                product(ja, jb).block_until_ready()  # compiles
                xla = best_seconds(lambda: product(ja, jb).block_until_ready(), args.repeat)
            with torch.no_grad():
                torch.matmul(ta, tb)
                ref = best_seconds(lambda: torch.matmul(ta, tb), args.repeat)
            rates = {"xla": gflop / xla, "torch": gflop / ref}
            results["shapes"].setdefault(name, {})[dtype] = {"gflop": gflop, "gflop_per_s": rates}
            rows.append([name, dtype, f"{rates['xla']:.0f}", f"{rates['torch']:.0f}",
                         f"{rates['xla'] / rates['torch']:.2f}"])
            if dtype == "bfloat16" and results["xla_bfloat16_computed_in_float32"] is None:
                results["xla_bfloat16_computed_in_float32"] = xla_converts_to_float32(ja, jb)
    results["machine"] = describe(before, machine())
    results["versions"] = {"jax": jax.__version__, "torch": torch.__version__}
    text = "\n\n".join([
        "# Matrix products, XLA beside torch",
        markdown_table(["product", "dtype", "XLA GFLOP/s", "torch GFLOP/s", "XLA / torch"], rows),
        f"XLA computes bfloat16 products in float32 (converts first): "
        f"{results['xla_bfloat16_computed_in_float32']}.",
        f"jax {jax.__version__}, torch {torch.__version__}; {results['machine']}.",
        "Command: `python -m benchmarks.matmul`.",
    ])
    print(text)
    print("\n".join(save(args.out, "matmul", results, text)))


if __name__ == "__main__":
    main()
