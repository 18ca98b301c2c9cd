"""Where a tracked frame's time goes: sam2-jax's step split into its parts, for 1 and N objects.

    python -m benchmarks.step_parts [--config sam2.1-hiera-tiny|edgetam] [--objects 1,4] [--repeat 3] [--cores N]
        [--parts "memory attention,whole step"] [--reference]

Each part is jitted alone on the inputs of a tracked frame with a full memory bank (one conditioning frame, six
recent frames, fifteen pointers): the image encoder (once per frame, whatever the object count), memory
attention (`conditioned_features`), mask decoding (`segment`, the prompt-free tracking path), memory encoding
(`encode_memory`), and the whole `track_step` for comparison. Times are the best of `--repeat` calls, float32 at
"highest" precision, random weights. The per-object cost of a part is its slope from the fewest to the most
objects. `--parts` times only the named parts. `--config edgetam` adds EdgeTAM's finer parts (RepViT, the FPN neck,
one memory-attention layer's self-attention, cross-attention and MLP, the perceiver). `--reference` builds
transformers' model of the config with random weights, loads the same weights into sam2-jax, and times
transformers' parts beside sam2-jax's where they can be called alone (float32, no grad; transformers runs
EdgeTAM's objects one at a time, so its memory attention and memory encoding run once per object). Memory attention runs this machine's formulation
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

from sam2_jax.config import EdgeTamVideoConfig
from sam2_jax.models.edgetam_memory_attention import EdgeTamMemoryAttention, EdgeTamMemoryAttentionMLP
from sam2_jax.models.hiera import VisionNeck
from sam2_jax.models.memory_attention import RoPEAttention, identity_rope, rope_tables
from sam2_jax.models.perceiver import PerceiverResampler
from sam2_jax.models.repvit import RepVit

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


def edgetam_parts(model: Sam2VideoModel, n: int) -> dict:
    """name -> (jitted function of the params and more, those arguments) of EdgeTAM's finer parts for n objects:
    the encoder's RepViT and neck, one memory-attention layer's three sublayers over a full bank, the perceiver."""
    cfg, size = model.config, model.config.image_size
    rng = np.random.default_rng(2)

    def sub(module, *path):
        def apply(params, *a):
            for key in path:
                params = params[key]
            return module.apply({"params": params}, *a)
        return jax.jit(apply)

    def rand(*shape):
        return jnp.asarray(rng.standard_normal(shape), model.dtype)

    pixels = rand(1, size, size, 3)
    backbone = sub(RepVit(cfg.vision_config.backbone_config["architecture"]), "vision_encoder", "backbone.timm_model")
    stages = backbone(model.params, pixels)
    side = size // 16
    tokens = side * side
    slot_len = cfg.perceiver_resampler_num_latents + cfg.perceiver_resampler_num_latents_2d
    pointer_tokens = cfg.max_object_pointers_in_encoder * cfg.memory_attention_hidden_size // cfg.memory_encoder_output_channels
    keys = cfg.num_maskmem * slot_len + pointer_tokens
    rope = rope_tables(cfg)
    slot = EdgeTamMemoryAttention(cfg).slot_rope(rope, slot_len)
    ptr = identity_rope(pointer_tokens, rope[0].shape[-1])
    rope_k = tuple(jnp.concatenate([jnp.tile(t, (cfg.num_maskmem, 1)), p]) for t, p in zip(slot, ptr))
    h, mem = rand(n, tokens, cfg.memory_attention_hidden_size), rand(n, keys, cfg.memory_encoder_output_channels)
    layer = ("memory_attention", "layers.0")
    return {
        "RepViT (per frame)": (backbone, (pixels,)),
        "FPN neck (per frame)": (sub(VisionNeck(cfg.vision_config), "vision_encoder", "neck"), (stages,)),
        "self-attention, 1 layer": (sub(RoPEAttention(cfg), *layer, "self_attn"), (h, h, h, rope, rope)),
        "cross-attention, 1 layer": (
            jax.jit(lambda params, *a: RoPEAttention(cfg).apply(
                {"params": params["memory_attention"]["layers.0"]["cross_attn_image"]}, *a,
                blocks=attention_choice.memory_attention_blocks())),
            (h, mem, mem, rope, rope_k, jnp.ones((n, keys), bool))),
        "MLP, 1 layer": (sub(EdgeTamMemoryAttentionMLP(cfg), *layer, "mlp"), (h,)),
        "perceiver": (sub(PerceiverResampler(cfg), "spatial_perceiver"),
                      (rand(n, side, side, cfg.memory_encoder_output_channels), rand(side, side, cfg.memory_encoder_output_channels))),
    }


def reference_parts(torch_model, config, n: int) -> dict:
    """name -> a no-argument function running transformers' part for n objects (EdgeTAM's per-object parts
    called once per object, as transformers runs them), on inputs of the shapes `parts` uses."""
    import torch

    size, side = config.image_size, config.image_size // 16
    tokens, g = side * side, torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    pixels = rand(1, 3, size, size)
    vision = torch_model.vision_encoder
    stages = [s.permute(0, 2, 3, 1) for s in vision.backbone(pixels).last_hidden_state]
    edgetam = isinstance(config, EdgeTamVideoConfig)
    slot_len = (config.perceiver_resampler_num_latents + config.perceiver_resampler_num_latents_2d if edgetam
                else tokens)
    pointer_tokens = config.max_object_pointers_in_encoder * config.memory_attention_hidden_size // config.memory_encoder_output_channels
    keys = config.num_maskmem * slot_len + pointer_tokens
    attention = torch_model.memory_attention
    layer = attention.layers[0]
    feats, pos = rand(tokens, 1, config.memory_attention_hidden_size), rand(tokens, 1, config.memory_attention_hidden_size)
    mem, mem_pos = rand(keys, 1, config.memory_encoder_output_channels), rand(keys, 1, config.memory_encoder_output_channels)
    h = rand(1, 1, tokens, config.memory_attention_hidden_size)
    rope = attention.rotary_emb(h, attention.position_ids)
    rope_k = attention.rotary_emb(h, attention.position_ids_k) if edgetam else rope
    pix_feat, masks = rand(1, config.memory_attention_hidden_size, side, side), rand(1, 1, size, size)
    k = mem.transpose(0, 1).unsqueeze(1)

    def per_object(fn):
        return lambda: [fn() for _ in range(n)]

    result = {
        "image encoder (per frame)": lambda: torch_model.get_image_features(pixels),
        "memory attention": per_object(lambda: attention(feats, mem, pos, mem_pos, pointer_tokens, config.num_maskmem)),
        "memory encoder": per_object(lambda: torch_model._encode_new_memory(
            feats, masks, torch.zeros(1, 1), False)),
    }
    if edgetam:
        memory = rand(1, config.memory_encoder_output_channels, side, side)
        result.update({
            "RepViT (per frame)": lambda: vision.backbone(pixels),
            "FPN neck (per frame)": lambda: vision.neck(stages),
            "self-attention, 1 layer": per_object(lambda: layer.self_attn(h, h, h, rope)),
            "cross-attention, 1 layer": per_object(lambda: layer.cross_attn_image(
                h, k, k, rope, rope_k, num_k_exclude_rope=pointer_tokens, rope_k_repeat=config.num_maskmem)),
            "MLP, 1 layer": per_object(lambda: layer.mlp(h)),
            "perceiver": per_object(lambda: torch_model.spatial_perceiver(memory, memory)),
        })
    return result


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
    parser.add_argument("--reference", action="store_true", help="also time transformers' parts (same weights)")
    args = parser.parse_args()
    use_cores(args.cores)
    before = machine()
    config = config_named(args.config)
    torch_model = None
    if args.reference:
        import tempfile

        import torch

        from . import reference
        with tempfile.TemporaryDirectory() as folder:
            torch_model = reference.randomised_model(config, folder)
            model = Sam2VideoModel.from_pretrained(folder)
    else:
        model = Sam2VideoModel.from_config(config)
    model.params = jax.device_put(model.params)
    counts = [int(n) for n in args.objects.split(",")]
    seconds, reference_seconds = {}, {}
    with jax.default_matmul_precision("highest"):
        for n in counts:
            named = parts(model, n)
            if isinstance(config, EdgeTamVideoConfig):
                named.update(edgetam_parts(model, n))
            for name, (function, call_args) in named.items():
                if args.parts and name not in args.parts.split(","):
                    continue
                seconds[name, n] = best_time(function, (model.params, *call_args), args.repeat)
                print(f"{n} object(s): {name} {seconds[name, n]:.3f} s", flush=True)
            if torch_model is not None:
                with torch.no_grad():
                    for name, function in reference_parts(torch_model, config, n).items():
                        if args.parts and name not in args.parts.split(","):
                            continue
                        reference_seconds[name, n] = best_time(function, (), args.repeat)
                        print(f"{n} object(s): transformers {name} {reference_seconds[name, n]:.3f} s", flush=True)
    names = list(dict.fromkeys(name for name, _ in seconds))
    lo, hi = min(counts), max(counts)

    def row(table, name):
        if (name, lo) not in table:
            return ["-"] * (len(counts) + 1)
        return [*(f"{table[name, n]:.3f}" for n in counts),
                f"{(table[name, hi] - table[name, lo]) / (hi - lo):.3f}" if hi > lo else "-"]

    rows = [[name, *row(seconds, name), *(row(reference_seconds, name) if torch_model is not None else [])]
            for name in names]
    header = ["part", *(f"{n} object(s) s" for n in counts), "s per extra object"]
    if torch_model is not None:
        header += [*(f"transformers {n} object(s) s" for n in counts), "transformers s per extra object"]
    print(f"\n{args.config}, float32 \"highest\"; {describe(before, machine())}")
    print(f"{attention_choice.describe()}\n")
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
