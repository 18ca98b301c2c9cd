"""Memory attention alone: sam2-jax `MemoryAttention` and transformers `Sam2VideoMemoryAttention`, side by side.

    python -m benchmarks.attention [--config sam2.1-hiera-tiny] [--objects 1] [--repeat 3] [--cores N]
        [--dtype float32] [--formulations auto] [--json PATH]

Same randomised weights, same inputs: the current frame's features, a full bank of 7 memory frames and 16
object pointers (64 pointer tokens). sam2-jax runs each of `--formulations` (names of
`attention_choice.CANDIDATES`, or "auto": this machine's choice), e.g. `--formulations full,auto` for before and
after the key-blocked attention. They all take turns, so that load from other processes hits them alike;
each time is the best of `--repeat` calls after a warm-up (sam2-jax: jitted, compiled in the warm-up).
GFLOP/s counts the FLOPs of the reference's arithmetic (matmuls only) for both, so the rates compare the
same work. sam2-jax float32 runs at "highest" matmul precision (its parity mode). Writes nothing unless
`--json` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from sam2_jax import weights
from sam2_jax.config import Sam2VideoConfig
from sam2_jax.models import attention_choice
from sam2_jax.models.memory_attention import MemoryAttention

from .common import config_named, describe, machine, use_cores

SLOTS, POINTER_TOKENS = 7, 64


def reference_flops(config: Sam2VideoConfig, objects: int) -> float:
    """Multiply-adds x 2 of transformers' memory attention on a full bank: projections, scores, weighted sums
    and the MLP, for every layer."""
    length = int(np.prod(config.memory_attention_rope_feat_sizes))
    keys = SLOTS * length + POINTER_TOKENS
    c, kv = config.memory_attention_hidden_size, 64
    inner = c // config.memory_attention_downsample_rate
    self_attn = 4 * length * c * inner + 2 * length * length * inner
    cross = 2 * length * c * inner + 2 * keys * kv * inner + 2 * length * keys * inner
    mlp = 2 * length * c * config.memory_attention_feed_forward_hidden_size
    return 2.0 * objects * config.memory_attention_num_layers * (self_attn + cross + mlp)


def inputs(config: Sam2VideoConfig, objects: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random features (B, L, 256) and a full bank: memory (B, 7, L, 64), pointer tokens (B, 64, 64)."""
    rng = np.random.default_rng(seed)
    length = int(np.prod(config.memory_attention_rope_feat_sizes))

    def randn(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    return dict(features=randn(objects, length, 256), pos=randn(objects, length, 256),
                memory=randn(objects, SLOTS, length, 64), memory_pos=randn(objects, SLOTS, length, 64),
                pointers=randn(objects, POINTER_TOKENS, 64), pointer_pos=randn(objects, POINTER_TOKENS, 64))


def torch_runner(config: Sam2VideoConfig, x: dict[str, np.ndarray], seed: int):
    """transformers `Sam2VideoMemoryAttention` (SDPA) on x in its (L, B, C) layout; returns (call, state dict)."""
    import torch
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoMemoryAttention

    from tests.reference import hf_config, randomize_, state_dict_numpy

    torch.manual_seed(seed)
    hf_cfg = hf_config(config)
    hf_cfg._attn_implementation = "sdpa"
    module = randomize_(Sam2VideoMemoryAttention(hf_cfg), seed=seed).eval()
    b = x["features"].shape[0]

    def seq_first(a):
        return torch.from_numpy(np.ascontiguousarray(a.reshape(b, -1, a.shape[-1]).transpose(1, 0, 2)))

    args = dict(current_vision_features=seq_first(x["features"]),
                current_vision_position_embeddings=seq_first(x["pos"]),
                memory=torch.cat([seq_first(x["memory"]), seq_first(x["pointers"])]),
                memory_posision_embeddings=torch.cat([seq_first(x["memory_pos"]), seq_first(x["pointer_pos"])]),
                num_object_pointer_tokens=POINTER_TOKENS)

    def call():
        with torch.no_grad():
            return module(**args)[0].numpy()  # (B, L, 256)

    return call, state_dict_numpy(module)


def jax_runner(config: Sam2VideoConfig, x: dict[str, np.ndarray], state_dict: dict, dtype: str,
               formulation: str = "auto"):
    """sam2-jax `MemoryAttention`, jitted, on the same weights and inputs, with memory attention's formulation
    `formulation` ($SAM2_JAX_ATTENTION while it is traced, in the first call)."""
    model = MemoryAttention(config)
    b = x["features"].shape[0]
    args = [jnp.asarray(x[k], dtype) for k in ("features", "pos", "memory", "memory_pos")]
    args.insert(4, jnp.ones((b, SLOTS), bool))
    args += [jnp.asarray(x[k], dtype) for k in ("pointers", "pointer_pos")] + [jnp.ones((b, POINTER_TOKENS), bool)]
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *args))["params"]
    params = weights.state_dict_to_params({f"m.{k}": v for k, v in state_dict.items()}, {"m": abstract})["m"]
    params = jax.tree.map(lambda p: jnp.asarray(p, dtype), params)
    with formulation_forced(formulation), jax.default_matmul_precision("highest"):
        apply = jax.jit(model.apply).lower({"params": params}, *args).compile()

    def call():
        return np.asarray(apply({"params": params}, *args).astype(jnp.float32))

    return call


@contextlib.contextmanager
def formulation_forced(name: str):
    """$SAM2_JAX_ATTENTION = name while sam2-jax traces memory attention ("auto": this machine's choice)."""
    before = os.environ.get(attention_choice.ENVIRONMENT)
    os.environ[attention_choice.ENVIRONMENT] = name
    try:
        yield
    finally:
        os.environ.pop(attention_choice.ENVIRONMENT)
        if before is not None:
            os.environ[attention_choice.ENVIRONMENT] = before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sam2.1-hiera-tiny", help="small or a preset name")
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dtype", default="float32", help="sam2-jax dtype (transformers: float32)")
    parser.add_argument("--formulations", default="auto", help="sam2-jax memory attention formulations, "
                        "comma-separated: auto (this machine's choice) or names of attention_choice.CANDIDATES")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cores", type=int, help="run on this many cores (default: all); 1 on a loaded machine")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args()
    use_cores(args.cores)
    before = machine()
    config = config_named(args.config)
    x = inputs(config, args.objects, args.seed)
    torch_call, state_dict = torch_runner(config, x, args.seed)
    runners = {"transformers": torch_call}
    for formulation in args.formulations.split(","):
        runners[f"sam2-jax {formulation}"] = jax_runner(config, x, state_dict, args.dtype, formulation)
    outputs = {name: call() for name, call in runners.items()}  # warm-up (compiles sam2-jax)
    times = {name: [] for name in runners}
    for _ in range(args.repeat):
        for name, call in runners.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    flops = reference_flops(config, args.objects)
    ref = outputs["transformers"]
    results = {"config": args.config, "objects": args.objects, "dtype": args.dtype, "gflop": flops / 1e9,
               "auto": attention_choice.describe(),
               "max_abs_diff": {name: float(np.max(np.abs(out - ref))) for name, out in outputs.items()},
               "max_abs_ref": float(np.max(np.abs(ref))),
               "seconds": {name: min(t) for name, t in times.items()}, "machine": describe(before, machine())}
    for name, seconds in results["seconds"].items():
        print(f"{name:20s} {seconds:8.3f} s  {flops / seconds / 1e9:7.1f} GFLOP/s  "
              f"{results['seconds']['transformers'] / seconds:5.2f}x transformers  "
              f"max |diff| {results['max_abs_diff'][name]:.3g}")
    print(f"{results['gflop']:.0f} GFLOP per call (transformers' arithmetic); max |ref| {results['max_abs_ref']:.3g}; "
          f"{results['machine']}\n{results['auto']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
