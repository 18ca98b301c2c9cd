"""Parity of `sam2_jax.models.memory_encoder` and `sam2_jax.models.memory_attention` with transformers
`Sam2VideoMemoryEncoder` (as `Sam2VideoModel._encode_new_memory` calls it), `Sam2VideoMemoryAttention` (as
`_prepare_memory_conditioned_features` calls it) and `_process_object_pointers`, on randomised weights."""

import dataclasses
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from reference import assert_close, hf_config, randomize_, state_dict_numpy, to_numpy
from transformers.models.sam2_video import modeling_sam2_video as hf

from sam2_jax import weights
from sam2_jax.config import small_config
from sam2_jax.models.memory_attention import MemoryAttention, get_1d_sine_pe, object_pointer_tokens
from sam2_jax.models.memory_encoder import MemoryEncoder, memory_mask_input

def _params(prefix, module, hf_module, *example):
    """Our params from the transformers submodule's weights under their full-model keys `prefix.*`,
    strictly (every key, every shape)."""
    abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *example))["params"]
    state_dict = {f"{prefix}.{k}": v for k, v in state_dict_numpy(hf_module).items()}
    return weights.state_dict_to_params(state_dict, {prefix: abstract})[prefix]


def _randn(gen, *shape):
    return torch.randn(*shape, generator=gen)


# ------------------------------------------------------------------------------------------ encoder
@pytest.mark.parametrize("binarize", [False, True])
def test_memory_encoder_matches_encode_new_memory(binarize):
    """`memory_mask_input` + `MemoryEncoder` against transformers `_encode_new_memory` (its memory encoder's
    input mask and float32 outputs, captured before the bfloat16 cast)."""
    cfg = small_config()
    hf_cfg = hf_config(cfg)
    encoder = randomize_(hf.Sam2VideoMemoryEncoder(hf_cfg), seed=1).eval()
    captured = {}
    encoder.register_forward_hook(lambda module, args, out: captured.update(mask=args[1], out=out))
    batch, (h, w) = 2, cfg.vision_config.backbone_feature_sizes[-1]
    size = cfg.prompt_encoder_config.mask_input_size * 4
    gen = torch.Generator().manual_seed(2)
    features = _randn(gen, h * w, batch, 256)  # (HW, B, C) as transformers keeps them
    logits = _randn(gen, batch, 1, size, size) * 4
    model_stub = SimpleNamespace(  # the attributes `_encode_new_memory` reads
        hidden_dim=256, backbone_feature_sizes=hf_cfg.vision_config.backbone_feature_sizes,
        prompt_encoder=SimpleNamespace(mask_input_size=(size // 4, size // 4)), training=False, config=hf_cfg,
        memory_encoder=encoder, occlusion_spatial_embedding_parameter=None)
    with torch.no_grad():
        hf.Sam2VideoModel._encode_new_memory(model_stub, features, logits, torch.zeros(batch, 1), binarize)
    ref_features, ref_pos = (to_numpy(t).transpose(0, 2, 3, 1) for t in captured["out"])

    model = MemoryEncoder(cfg)
    x = jnp.asarray(to_numpy(features).reshape(h, w, batch, 256).transpose(2, 0, 1, 3))
    masks = memory_mask_input(jnp.asarray(to_numpy(logits).transpose(0, 2, 3, 1)), binarize, cfg)
    params = _params("memory_encoder", model, encoder, x, masks)
    with jax.default_matmul_precision("highest"):
        ours, pos = jax.jit(model.apply)({"params": params}, x, masks)
    assert_close("memory mask input", masks, to_numpy(captured["mask"]).transpose(0, 2, 3, 1))
    assert_close("maskmem_features", ours, ref_features)
    assert np.all(ref_pos == ref_pos[:1])
    assert_close("maskmem_pos_enc", pos, ref_pos[0])


def test_memory_mask_input_per_object():
    """A (B,) `binarize` picks binarized or sigmoid masks per object."""
    cfg = small_config()
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
    both = memory_mask_input(logits, jnp.array([True, False]), cfg)
    np.testing.assert_array_equal(both[0], memory_mask_input(logits, True, cfg)[0])
    np.testing.assert_array_equal(both[1], memory_mask_input(logits, False, cfg)[1])


# ---------------------------------------------------------------------------------------- attention
def _attention_case(cfg, batch, num_frames, num_ptr_tokens, seed):
    """Random transformers-layout inputs: features and pos (L, B, 256), memory and memory pos
    (F*L + P, B, 64), memory rounded through bfloat16 as stored."""
    gen = torch.Generator().manual_seed(seed)
    seq = int(np.prod(cfg.memory_attention_rope_feat_sizes))
    mem_len = num_frames * seq + num_ptr_tokens
    return dict(
        current_vision_features=_randn(gen, seq, batch, 256),
        current_vision_position_embeddings=_randn(gen, seq, batch, 256),
        memory=_randn(gen, mem_len, batch, 64).to(torch.bfloat16).float(),
        memory_posision_embeddings=_randn(gen, mem_len, batch, 64),
        num_object_pointer_tokens=num_ptr_tokens,
    )


def _slot_inputs(case, seq, num_frames, frame_slots, ptr_slots, seed):
    """The same memory in our fixed-slot layout: valid frames at `frame_slots` of S slots, valid pointer
    tokens at `ptr_slots` of P; every empty slot holds random garbage that the masks must hide."""
    num_ptr = case["num_object_pointer_tokens"]
    mem = to_numpy(case["memory"]).transpose(1, 0, 2)  # (B, F*L + P, 64)
    mem_pos = to_numpy(case["memory_posision_embeddings"]).transpose(1, 0, 2)
    batch = mem.shape[0]
    rng = np.random.default_rng(seed)
    total_slots, total_ptr = frame_slots[1], ptr_slots[1]
    memory = rng.normal(size=(batch, total_slots, seq, 64)).astype(np.float32) * 5
    memory_pos = rng.normal(size=memory.shape).astype(np.float32) * 5
    pointers = rng.normal(size=(batch, total_ptr, 64)).astype(np.float32) * 5
    pointer_pos = rng.normal(size=pointers.shape).astype(np.float32) * 5
    memory_mask = np.zeros((batch, total_slots), bool)
    pointer_mask = np.zeros((batch, total_ptr), bool)
    spatial = slice(0, num_frames * seq)
    memory[:, frame_slots[0]] = mem[:, spatial].reshape(batch, num_frames, seq, 64)
    memory_pos[:, frame_slots[0]] = mem_pos[:, spatial].reshape(batch, num_frames, seq, 64)
    memory_mask[:, frame_slots[0]] = True
    pointers[:, ptr_slots[0]] = mem[:, num_frames * seq:]
    pointer_pos[:, ptr_slots[0]] = mem_pos[:, num_frames * seq:]
    pointer_mask[:, ptr_slots[0]] = True
    assert len(ptr_slots[0]) == num_ptr
    return tuple(jnp.asarray(a) for a in (memory, memory_pos, memory_mask, pointers, pointer_pos, pointer_mask))


@pytest.mark.parametrize("version,num_frames,num_ptr_tokens,heads", [("2.1", 3, 8, 1), ("2.0", 1, 0, 1),
                                                                     ("2.1", 2, 4, 2)])
def test_memory_attention_matches_reference(version, num_frames, num_ptr_tokens, heads):
    """`MemoryAttention` against transformers `Sam2VideoMemoryAttention` on the variable-length bank that
    `_prepare_memory_conditioned_features` builds; then the same memories in a larger fixed-slot bank with
    garbage in the masked slots give the same numbers. SAM 2 has one head; two test the per-head value path."""
    cfg = dataclasses.replace(small_config(version), memory_attention_num_attention_heads=heads)
    hf_cfg = hf_config(cfg)
    hf_cfg._attn_implementation = "sdpa"  # what Sam2VideoModel dispatches to by default
    module = randomize_(hf.Sam2VideoMemoryAttention(hf_cfg), seed=3).eval()
    batch, seq = 2, int(np.prod(cfg.memory_attention_rope_feat_sizes))
    case = _attention_case(cfg, batch, num_frames, num_ptr_tokens, seed=4)
    with torch.no_grad():
        ref = to_numpy(module(**case))  # (1, B, L, 256)
    assert ref.shape == (1, batch, seq, 256)
    ref = ref[0]

    model = MemoryAttention(cfg)
    features = jnp.asarray(to_numpy(case["current_vision_features"]).transpose(1, 0, 2))
    pos = jnp.asarray(to_numpy(case["current_vision_position_embeddings"]).transpose(1, 0, 2))
    compact = _slot_inputs(case, seq, num_frames, (list(range(num_frames)), num_frames),
                           (list(range(num_ptr_tokens)), num_ptr_tokens), seed=5)
    # 7 spatial slots (the valid ones not first) and 16 pointers x 4 tokens.
    frame_slots = [1, 3, 6][:num_frames]
    ptr_slots = [j for p in (2, 9) for j in range(4 * p, 4 * p + 4)][:num_ptr_tokens]
    padded = _slot_inputs(case, seq, num_frames, (frame_slots, 7), (ptr_slots, 64), seed=6)
    params = _params("memory_attention", model, module, features, pos, *compact)
    apply = jax.jit(model.apply)
    with jax.default_matmul_precision("highest"):
        ours = apply({"params": params}, features, pos, *compact)
        ours_padded = apply({"params": params}, features, pos, *padded)
    assert_close("memory attention", ours, ref)
    assert_close("memory attention, padded slots", ours_padded, ref)
    assert_close("padded vs compact slots", ours_padded, ours, rel=1e-6)


# ----------------------------------------------------------------------------------------- pointers
@pytest.mark.parametrize("version,streaming", [("2.1", False), ("2.1", True), ("2.0", False)])
def test_object_pointer_tokens_match_process_object_pointers(version, streaming):
    """Temporal encoding (`get_1d_sine_pe` + projection) and the 4-way split of `object_pointer_tokens`
    against transformers `_process_object_pointers`."""
    cfg = small_config(version)
    hf_cfg = hf_config(cfg)
    batch, num_frames = 2, 9
    max_ptrs = cfg.max_object_pointers_in_encoder if streaming else min(num_frames, cfg.max_object_pointers_in_encoder)
    offsets = [0, 3, 1, 2, 5, 8]  # a cond frame, then tracked frames at distances 1.. (some missing)
    gen = torch.Generator().manual_seed(7)
    pointers = [_randn(gen, batch, 256) for _ in offsets]
    projection = torch.nn.Linear(256, 64)
    randomize_(projection, seed=8)
    model_stub = SimpleNamespace(  # the attributes `_process_object_pointers` reads
        config=hf_cfg, mem_dim=64,
        temporal_positional_encoding_projection_layer=projection if cfg.enable_temporal_pos_encoding_for_object_pointers
        else torch.nn.Identity())
    with torch.no_grad():
        ref_tokens, ref_pos = hf.Sam2VideoModel._process_object_pointers(
            model_stub, offsets, pointers, max_ptrs, batch, 256, "cpu")

    stacked = jnp.asarray(np.stack([to_numpy(p) for p in pointers], axis=1))  # (B, N, 256)
    if cfg.enable_temporal_pos_encoding_for_object_pointers:
        t = jnp.asarray(offsets, jnp.float32) / float(max_ptrs - 1)
        weight, bias = (jnp.asarray(to_numpy(a)) for a in (projection.weight, projection.bias))
        with jax.default_matmul_precision("highest"):
            pe = get_1d_sine_pe(t, 256) @ weight.T + bias
    else:
        pe = jnp.zeros((len(offsets), 64))
    mask = jnp.ones((1, len(offsets)), bool)
    tokens, pos, token_mask = object_pointer_tokens(stacked, pe[None], mask, mem_dim=64)
    assert tokens.shape == (batch, 4 * len(offsets), 64) and token_mask.shape == (1, 4 * len(offsets))
    np.testing.assert_array_equal(tokens, to_numpy(ref_tokens).transpose(1, 0, 2))
    ref_pos = to_numpy(ref_pos).transpose(1, 0, 2)
    assert np.all(ref_pos == ref_pos[:1])
    assert_close("pointer temporal encoding", pos[0], ref_pos[0])


def test_get_1d_sine_pe_matches_reference():
    t = torch.linspace(0, 1, 16)
    ours = get_1d_sine_pe(jnp.asarray(t.numpy()), 256)
    ref = to_numpy(hf.get_1d_sine_pe(t, 256))
    assert_close("get_1d_sine_pe", ours, ref, rel=1e-6)
