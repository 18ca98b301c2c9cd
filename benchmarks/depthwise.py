"""RepViT-M1's depthwise 3x3 convolutions on XLA:CPU: `lax.conv` with one group per channel against a sum of taps.

    python -m benchmarks.depthwise [--repeat 20] [--cores N] [--out benchmarks/results/]

EdgeTAM's image encoder (timm `repvit_m1`) is made of depthwise 3x3 convolutions (the token mixers and the
stride-2 spatial downsamples). XLA:CPU ran the memory fuser's 7x7 depthwise as a slow grouped loop (66 ms
against 2 ms as taps), so each shape RepViT runs at 1024 px is timed both ways, float32, batch 1:
`lax.conv_general_dilated(feature_group_count=C)` and `models.layers.depthwise_conv` (the sum of the 9 taps).
Times are the best of `--repeat` calls; also the total over the encoder (each shape times its count in
RepViT-M1). Writes `<device>-depthwise-<date>.{json,md}`.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from sam2_jax.models.layers import depthwise_conv

from .common import best_seconds, describe, machine, markdown_table, save, use_cores

# (side, channels, stride): count in RepViT-M1 at 1024 px (stem to 256 x 256 x 48; depths 2, 2, 14, 2; every
# stage after the first starts with a pre-block at the input width and a stride-2 spatial downsample).
SHAPES = {
    (256, 48, 1): 3,   # stage 0's two blocks, stage 1's pre-block
    (256, 48, 2): 1,   # stage 1's downsample
    (128, 96, 1): 3,   # stage 1's two blocks, stage 2's pre-block
    (128, 96, 2): 1,
    (64, 192, 1): 15,  # stage 2's fourteen blocks, stage 3's pre-block
    (64, 192, 2): 1,
    (32, 384, 1): 2,   # stage 3's two blocks
}


def lax_depthwise(x, kernel, stride: int):
    """A depthwise 3x3 convolution (padding 1) as XLA's grouped convolution."""
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1])


def taps_depthwise(x, kernel, stride: int):
    """The same convolution as the sum of its taps (`models.layers.depthwise_conv`)."""
    return depthwise_conv(x, kernel, (stride, stride), ((1, 1), (1, 1)), feature_group_count=x.shape[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--cores", type=int, help="run on this many cores (default: all)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the result files")
    args = parser.parse_args()
    use_cores(args.cores)

    before = machine()
    rng = np.random.default_rng(0)
    rows, results, totals = [], {"shapes": []}, {"lax": 0.0, "taps": 0.0}
    for (side, channels, stride), count in SHAPES.items():
        x = jnp.asarray(rng.standard_normal((1, side, side, channels)), jnp.float32)
        kernel = jnp.asarray(rng.standard_normal((3, 3, 1, channels)), jnp.float32)
        times = {}
        for name, fn in (("lax", lax_depthwise), ("taps", taps_depthwise)):
            jitted = jax.jit(fn, static_argnums=2)
            jitted(x, kernel, stride).block_until_ready()  # compiles
            times[name] = best_seconds(lambda: jitted(x, kernel, stride).block_until_ready(), args.repeat)
            totals[name] += count * times[name]
        diff = float(jnp.max(jnp.abs(lax_depthwise(x, kernel, stride) - taps_depthwise(x, kernel, stride))))
        results["shapes"].append({"side": side, "channels": channels, "stride": stride, "count": count,
                                  "seconds": times, "max_abs_diff": diff})
        rows.append([f"{side}x{side}x{channels}", stride, count, f"{times['lax'] * 1e3:.2f}",
                     f"{times['taps'] * 1e3:.2f}", f"{times['lax'] / times['taps']:.1f}", f"{diff:.1e}"])
    rows.append(["all of RepViT-M1", "", sum(SHAPES.values()), f"{totals['lax'] * 1e3:.1f}",
                 f"{totals['taps'] * 1e3:.1f}", f"{totals['lax'] / totals['taps']:.1f}", ""])
    results["total_seconds"] = totals
    results["machine"] = describe(before, machine())
    results["versions"] = {"jax": jax.__version__}
    text = "\n\n".join([
        "# RepViT-M1's depthwise 3x3 convolutions at 1024 px, float32, batch 1",
        markdown_table(["input", "stride", "count", "lax.conv ms", "taps ms", "lax / taps", "max |diff|"], rows),
        "The machine is shared (Intel Xeon with AVX-512, 2 cores): other work may have run beside this.",
        f"jax {jax.__version__}; {results['machine']}.",
        "Command: `python -m benchmarks.depthwise`.",
    ])
    print(text)
    print("\n".join(save(args.out, "depthwise", results, text)))


if __name__ == "__main__":
    main()
