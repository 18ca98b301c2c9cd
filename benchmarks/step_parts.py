"""Where a tracked frame's time goes: sam2-jax's step split into its parts, for 1 and N objects.

    python -m benchmarks.step_parts [--config sam2.1-hiera-tiny] [--objects 1,4] [--repeat 3] [--cores N]
        [--parts "memory attention,whole step"]

Each part is jitted alone on the inputs of a tracked frame with a full memory bank (one conditioning frame, six
recent frames, fifteen pointers): the image encoder (once per frame, whatever the object count), memory
attention (`conditioned_features`), mask decoding (`segment`, the prompt-free tracking path), memory encoding
(`encode_memory`), and the whole `track_step` for comparison. Times are the best of `--repeat` calls, float32 at
"highest" precision, random weights. The per-object cost of a part is its slope from the fewest to the most
objects. `--parts` times only the named parts. Memory attention runs this machine's formulation
(`sam2_jax.models.attention_choice`, printed; $SAM2_JAX_ATTENTION=full forces the one of before 12-07). Prints a
table; writes nothing.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from sam2_jax.tracking import tracker
from sam2_jax.models.sam2_video import Sam2VideoModule
from sam2_jax import Sam2VideoModel
from sam2_jax.models import attention_choice

from .common import config_named, describe, machine, markdown_table, use_cores


def full_bank_inputs(model: Sam2VideoModel, n: int):
    """A state with every slot filled with random memories, and the StepInputs of a tracked frame that reads
    them all."""
    shape = tracker.BankShape.for_config(model.config, n, cond_capacity=1)
    rng = np.random.default_rng(0)
    state = tracker.TrackerState(*(jnp.asarray(rng.standard_normal(x.shape), x.dtype)
                                   for x in tracker.init_state(shape)))
    pointers = model.config.max_object_pointers_in_encoder
    full = lambda k, value=True: np.full((n, k), value)  # noqa: E731
    inputs = tracker.StepInputs(
        use_memory=np.ones(n, bool), is_mask_prompt=np.zeros(n, bool), multimask=np.zeros(n, bool),
        points=np.zeros((n, 1, 2), np.float32), labels=np.full((n, 1), -1, np.int32), point_mask=full(1, False),
        binarize=np.asarray(False), cond_index=np.zeros((n, 1), np.int32), cond_mask=full(1),
        recent_index=np.tile(np.arange(6, dtype=np.int32), (n, 1)), recent_mask=full(tracker.NUM_RECENT),
        pointer_cond_mask=full(1), pointer_cond_offset=full(1, 8).astype(np.int32),
        pointer_index=np.tile(np.arange(pointers - 1, dtype=np.int32), (n, 1)), pointer_mask=full(pointers - 1),
        max_pointers=np.asarray(pointers, np.int32), write_cond_slot=np.ones(n, np.int32),
        write_recent_slot=np.zeros(n, np.int32), objects=np.int32(n))
    return state, inputs


def parts(model: Sam2VideoModel, n: int) -> dict:
    """name -> (jitted function of the params and more, those arguments) of each part for n objects."""
    size = model.config.image_size
    pixels = jnp.asarray(np.random.default_rng(1).standard_normal((1, size, size, 3)), model.dtype)
    encode = jax.jit(functools.partial(tracker.encode_frames, model.module))
    features = encode(model.params, pixels)
    (s0, s1, level2), pos = features
    state, inputs = full_bank_inputs(model, n)

    def method(name):
        return jax.jit(lambda params, *a: model.module.apply({"params": params}, *a,
                                                             method=getattr(Sam2VideoModule, name)))

    attend, segment, encode_memory = map(method, ("conditioned_features", "segment", "encode_memory"))
    level2_n = jnp.broadcast_to(level2, (n, *level2.shape[1:]))
    memory_args = (level2_n, pos, *tracker.read_memory(state, inputs._asdict()), inputs.max_pointers,
                   inputs.use_memory)
    pix = attend(model.params, *memory_args)
    segment_args = ((s0, s1), pix, inputs.points, inputs.labels, inputs.point_mask, inputs.multimask, None,
                    inputs.is_mask_prompt)
    out = segment(model.params, *segment_args)
    return {
        "image encoder (per frame)": (encode, (pixels,)),
        "memory attention": (attend, memory_args),
        "mask decoder": (segment, segment_args),
        "memory encoder": (encode_memory, (level2_n, out["high_res_masks"], out["object_score_logits"],
                                           inputs.binarize)),
        "whole step": (jax.jit(functools.partial(tracker.track_step, model.module)), (state, features, inputs)),
    }


def best_time(function, args, repeat: int) -> float:
    jax.block_until_ready(function(*args))  # compiles
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(function(*args))
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sam2.1-hiera-tiny", help="small or a preset name")
    parser.add_argument("--objects", default="1,4", help="object counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cores", type=int, help="run on this many cores (default: all)")
    parser.add_argument("--parts", help="comma-separated part names to time (default: all)")
    args = parser.parse_args()
    use_cores(args.cores)
    before = machine()
    model = Sam2VideoModel.from_config(config_named(args.config))
    model.params = jax.device_put(model.params)
    counts = [int(n) for n in args.objects.split(",")]
    seconds = {}
    with jax.default_matmul_precision("highest"):
        for n in counts:
            for name, (function, call_args) in parts(model, n).items():
                if args.parts and name not in args.parts.split(","):
                    continue
                seconds[name, n] = best_time(function, (model.params, *call_args), args.repeat)
                print(f"{n} object(s): {name} {seconds[name, n]:.3f} s", flush=True)
    names = list(dict.fromkeys(name for name, _ in seconds))
    lo, hi = min(counts), max(counts)
    rows = [[name, *(f"{seconds[name, n]:.3f}" for n in counts),
             f"{(seconds[name, hi] - seconds[name, lo]) / (hi - lo):.3f}" if hi > lo else "-"] for name in names]
    print(f"\n{args.config}, float32 \"highest\"; {describe(before, machine())}")
    print(f"{attention_choice.describe()}\n")
    print(markdown_table(["part", *(f"{n} object(s) s" for n in counts), "s per extra object"], rows))


if __name__ == "__main__":
    main()
