"""Parity of EdgeTAM's video-only subnetworks with transformers, on randomised weights:
`sam2_jax.models.perceiver.PerceiverResampler` against `EdgeTamVideoPerceiverResampler`, and
`sam2_jax.models.edgetam_memory_attention.EdgeTamMemoryAttention` against `EdgeTamVideoMemoryAttention`, alone
and as `EdgeTamVideoModel._prepare_memory_conditioned_features` feeds it from perceiver memories."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from reference import assert_close, randomize_, state_dict_numpy, to_numpy
from transformers.models.edgetam_video import modeling_edgetam_video as hf

from sam2_jax import weights
from sam2_jax.config import EdgeTamVideoConfig, FrozenDict
from sam2_jax.models.edgetam_memory_attention import EdgeTamMemoryAttention
from sam2_jax.models.layers import sine_position_encoding
from sam2_jax.models.memory_attention import get_1d_sine_pe, object_pointer_tokens
from sam2_jax.models.perceiver import PerceiverResampler

MEM = 64  # memory channels (`memory_encoder_output_channels`, the cross-attention's hard-coded kv_in_dim)


def _configs(**overrides):
    """A small transformers EdgeTamVideoConfig (16 x 16 features, 8 + 16 latents, 4 x 4 key grid) and sam2-jax's
    EdgeTamVideoConfig with the same memory attention and perceiver fields. Seeds torch, whose default
    initialisation the modules built next draw from."""
    torch.manual_seed(0)
    kwargs = dict(memory_attention_rope_feat_sizes=[16, 16], memory_attention_rope_k_sizes=[4, 4],
                  memory_attention_mlp_hidden_size=512, perceiver_resampler_num_latents=8,
                  perceiver_resampler_num_latents_2d=16, perceiver_resampler_mlp_intermediate_size=128)
    hf_cfg = transformers.EdgeTamVideoConfig(**{**kwargs, **overrides})
    hf_cfg._attn_implementation = "sdpa"  # what EdgeTamVideoModel dispatches to by default
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in hf_cfg.to_dict().items()
              if k.startswith(("memory_attention_", "perceiver_resampler_"))}
    fields["rope_parameters"] = FrozenDict(hf_cfg.rope_parameters)
    return hf_cfg, EdgeTamVideoConfig(**fields)


def _params(prefix, module, hf_module, *example):
    """Our params from the transformers submodule's weights under their full-model keys `prefix.*`, strictly."""
    abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *example))["params"]
    state_dict = {f"{prefix}.{k}": v for k, v in state_dict_numpy(hf_module).items()}
    return weights.state_dict_to_params(state_dict, {prefix: abstract})[prefix]


def _randn(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen) * scale


def _run_perceiver(perceiver, memory, pos_map):
    """transformers' perceiver on (B, 64, h, w) memories one at a time: `_forward_2d` takes a batch of one only
    (its `expand(...).view(...)` of the 2-D latents fails for more), as `_encode_new_memory` runs it per object."""
    outs = [perceiver(m[None], pos_map[None]) for m in memory]
    return tuple(torch.cat(parts) for parts in zip(*outs))


def to_ours(tensor):
    return jnp.asarray(to_numpy(tensor))


def _bf16(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.bfloat16), tree)


# ---------------------------------------------------------------------------------------- perceiver
@pytest.mark.parametrize("height,width,latents_1d,latents_2d", [(16, 16, 8, 16), (16, 14, 8, 16), (16, 16, 0, 16),
                                                                (16, 16, 8, 0)])
def test_perceiver_resampler_matches_reference(height, width, latents_1d, latents_2d):
    """`PerceiverResampler` against `EdgeTamVideoPerceiverResampler` on a memory and its sine encoding (both
    latent kinds, each alone, and a narrower memory whose last window column is zero-padded); bfloat16 too."""
    hf_cfg, cfg = _configs(perceiver_resampler_num_latents=latents_1d, perceiver_resampler_num_latents_2d=latents_2d)
    module = randomize_(hf.EdgeTamVideoPerceiverResampler(hf_cfg), seed=1).eval()
    gen = torch.Generator().manual_seed(2)
    memory = _randn(gen, 2, MEM, height, width, scale=2.0)
    pos = torch.from_numpy(np.array(sine_position_encoding(height, width, MEM // 2))).permute(2, 0, 1)
    with torch.no_grad():
        ref_latents, ref_pos = _run_perceiver(module, memory, pos)

    model = PerceiverResampler(cfg)
    x = jnp.asarray(to_numpy(memory).transpose(0, 2, 3, 1))
    x_pos = jnp.asarray(to_numpy(pos).transpose(1, 2, 0))
    params = _params("spatial_perceiver", model, module, x, x_pos)
    apply = jax.jit(model.apply)
    with jax.default_matmul_precision("highest"):
        latents, latents_pos = apply({"params": params}, x, x_pos)
    assert latents.shape == (2, latents_1d + latents_2d, MEM)
    assert_close("perceiver latents", latents, ref_latents)
    assert_close("perceiver pos", latents_pos, to_numpy(ref_pos)[0], rel=1e-6)
    assert np.all(to_numpy(ref_pos) == to_numpy(ref_pos)[:1])

    latents16, _ = apply({"params": _bf16(params)}, _bf16(x), _bf16(x_pos))
    assert latents16.dtype == jnp.bfloat16
    assert_close("perceiver latents, bfloat16 vs float32 reference", latents16, ref_latents, rel=5e-2)


def test_perceiver_rejects_bad_shapes():
    _, cfg = _configs()
    model = PerceiverResampler(cfg)
    with pytest.raises(ValueError, match="memory: expected 64 channels"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 32)), jnp.zeros((16, 16, 32)))
    with pytest.raises(ValueError, match="windows"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 18, 16, MEM)), jnp.zeros((18, 16, MEM)))


# ------------------------------------------------------------------------------------ memory attention
def _attention_case(hf_cfg, batch, num_frames, num_ptr_tokens, seed):
    """Random transformers-layout inputs: features and pos (L, B, 256), memory and memory pos
    (F*N + P, B, 64), N the perceiver's latents per frame."""
    gen = torch.Generator().manual_seed(seed)
    seq = int(np.prod(hf_cfg.memory_attention_rope_feat_sizes))
    per_frame = hf_cfg.perceiver_resampler_num_latents + hf_cfg.perceiver_resampler_num_latents_2d
    mem_len = num_frames * per_frame + num_ptr_tokens
    return dict(
        current_vision_features=_randn(gen, seq, batch, 256),
        current_vision_position_embeddings=_randn(gen, seq, batch, 256),
        memory=_randn(gen, mem_len, batch, MEM),
        memory_posision_embeddings=_randn(gen, mem_len, batch, MEM),
        num_object_pointer_tokens=num_ptr_tokens,
        num_spatial_memory_tokens=num_frames,
    )


def _slot_inputs(case, per_frame, frame_slots, ptr_slots, seed):
    """The same memory in our fixed-slot layout: valid frames at `frame_slots` of S slots, valid pointer tokens
    at `ptr_slots` of P; every empty slot holds random garbage that the masks must hide."""
    num_frames, num_ptr = case["num_spatial_memory_tokens"], case["num_object_pointer_tokens"]
    mem = to_numpy(case["memory"]).transpose(1, 0, 2)  # (B, F*N + P, 64)
    mem_pos = to_numpy(case["memory_posision_embeddings"]).transpose(1, 0, 2)
    batch = mem.shape[0]
    rng = np.random.default_rng(seed)
    (frames_at, total_slots), (ptr_at, total_ptr) = frame_slots, ptr_slots
    memory = rng.normal(size=(batch, total_slots, per_frame, MEM)).astype(np.float32) * 5
    memory_pos = rng.normal(size=memory.shape).astype(np.float32) * 5
    pointers = rng.normal(size=(batch, total_ptr, MEM)).astype(np.float32) * 5
    pointer_pos = rng.normal(size=pointers.shape).astype(np.float32) * 5
    memory_mask, pointer_mask = np.zeros((batch, total_slots), bool), np.zeros((batch, total_ptr), bool)
    spatial = slice(0, num_frames * per_frame)
    memory[:, frames_at] = mem[:, spatial].reshape(batch, num_frames, per_frame, MEM)
    memory_pos[:, frames_at] = mem_pos[:, spatial].reshape(batch, num_frames, per_frame, MEM)
    memory_mask[:, frames_at] = True
    assert len(ptr_at) == num_ptr
    pointers[:, ptr_at] = mem[:, num_frames * per_frame:]
    pointer_pos[:, ptr_at] = mem_pos[:, num_frames * per_frame:]
    pointer_mask[:, ptr_at] = True
    return tuple(jnp.asarray(a) for a in (memory, memory_pos, memory_mask, pointers, pointer_pos, pointer_mask))


@pytest.mark.parametrize("num_frames,num_ptr_tokens,heads,latents_1d", [(3, 8, 1, 8), (1, 0, 1, 8), (2, 4, 2, 8),
                                                                        (2, 4, 1, 0)])
def test_memory_attention_matches_reference(num_frames, num_ptr_tokens, heads, latents_1d):
    """`EdgeTamMemoryAttention` against `EdgeTamVideoMemoryAttention` on the variable-length bank of
    `_prepare_memory_conditioned_features` (F frames of N latents, then pointer tokens); then the same memories
    in a larger fixed-slot bank with garbage in the masked slots. Two heads test the per-head value path; no
    1-D latents, the case where every latent of a frame is rotated."""
    hf_cfg, cfg = _configs(memory_attention_num_attention_heads=heads, perceiver_resampler_num_latents=latents_1d)
    module = randomize_(hf.EdgeTamVideoMemoryAttention(hf_cfg), seed=3).eval()
    batch, seq = 2, int(np.prod(hf_cfg.memory_attention_rope_feat_sizes))
    per_frame = latents_1d + hf_cfg.perceiver_resampler_num_latents_2d
    case = _attention_case(hf_cfg, batch, num_frames, num_ptr_tokens, seed=4)
    with torch.no_grad():
        ref = to_numpy(module(**case))  # (L, B, 256)... as (1, B, L, 256) after transformers' transposes
    assert ref.shape == (1, batch, seq, 256)
    ref = ref[0]

    model = EdgeTamMemoryAttention(cfg)
    features = jnp.asarray(to_numpy(case["current_vision_features"]).transpose(1, 0, 2))
    pos = jnp.asarray(to_numpy(case["current_vision_position_embeddings"]).transpose(1, 0, 2))
    compact = _slot_inputs(case, per_frame, (list(range(num_frames)), num_frames),
                           (list(range(num_ptr_tokens)), num_ptr_tokens), seed=5)
    frame_slots = [1, 3, 6][:num_frames]  # of 7 slots, the valid ones not first
    ptr_slots = [j for p in (2, 9) for j in range(4 * p, 4 * p + 4)][:num_ptr_tokens]  # of 16 pointers x 4
    padded = _slot_inputs(case, per_frame, (frame_slots, 7), (ptr_slots, 64), seed=6)
    params = _params("memory_attention", model, module, features, pos, *compact)
    apply = jax.jit(model.apply)
    with jax.default_matmul_precision("highest"):
        ours = apply({"params": params}, features, pos, *compact)
        ours_padded = apply({"params": params}, features, pos, *padded)
    assert_close("edgetam memory attention", ours, ref)
    assert_close("edgetam memory attention, padded slots", ours_padded, ref)
    assert_close("padded vs compact slots", ours_padded, ours, rel=1e-6)
    if num_frames == 3:
        ours16 = apply({"params": _bf16(params)}, *_bf16((features, pos, *padded[:2])), padded[2],
                       *_bf16(padded[3:5]), padded[5])
        assert ours16.dtype == jnp.bfloat16
        assert_close("edgetam memory attention, bfloat16 vs float32 reference", ours16, ref, rel=5e-2)


def test_memory_attention_rejects_short_slots():
    _, cfg = _configs()
    model = EdgeTamMemoryAttention(cfg)
    args = (jnp.zeros((1, 256, 256)), jnp.zeros((1, 256, 256)), jnp.zeros((1, 2, 8, MEM)), jnp.zeros((1, 2, 8, MEM)),
            jnp.ones((1, 2), bool), jnp.zeros((1, 0, MEM)), jnp.zeros((1, 0, MEM)), jnp.zeros((1, 0), bool))
    with pytest.raises(ValueError, match="memory: expected at least 16 tokens per slot"):
        model.init(jax.random.PRNGKey(0), *args)


# ------------------------------------------------- as _prepare_memory_conditioned_features feeds it
_MODEL_METHODS = ("_prepare_memory_conditioned_features", "_gather_memory_frame_outputs", "_select_closest_cond_frames",
                  "_build_memory_attention_inputs", "_get_object_pointers", "_process_object_pointers")


def test_memory_bank_of_perceiver_latents_matches_prepare_memory_conditioned_features():
    """transformers `_prepare_memory_conditioned_features` (EdgeTamVideoModel's own code on a stub) over memories
    that its perceiver made, against our perceiver's latents and position encodings laid out as the
    `edgetam_memory_attention` docstring says: conditioning slots first (one of them in the future), then
    t-6..t-1 with a missing frame masked; pointers with temporal offsets, one missing, split in 4 tokens."""
    hf_cfg, cfg = _configs()
    batch, frame, num_frames, mem_slots = 1, 10, 20, 7  # transformers runs one object at a time here
    h, w = hf_cfg.memory_attention_rope_feat_sizes
    perceiver = randomize_(hf.EdgeTamVideoPerceiverResampler(hf_cfg), seed=1).eval()
    attention = randomize_(hf.EdgeTamVideoMemoryAttention(hf_cfg), seed=3).eval()
    projection = randomize_(torch.nn.Linear(256, MEM), seed=7).eval()
    gen = torch.Generator().manual_seed(8)
    temporal = _randn(gen, hf_cfg.num_maskmem, 1, 1, MEM)
    pos_map = torch.from_numpy(np.array(sine_position_encoding(h, w, MEM // 2))).permute(2, 0, 1)

    cond, non_cond = (0, 3, 15), (1, 2, 4, 5, 6, 8, 9)  # frame 7 is missing
    raw = {t: _randn(gen, batch, MEM, h, w, scale=2.0) for t in cond + non_cond}
    pointers = {t: _randn(gen, batch, 256) for t in cond + non_cond}
    with torch.no_grad():
        outputs = {}
        for t in cond + non_cond:
            latents, latents_pos = _run_perceiver(perceiver, raw[t], pos_map)
            outputs[t] = dict(maskmem_features=latents, maskmem_pos_enc=latents_pos, object_pointer=pointers[t])
        session = SimpleNamespace(output_dict_per_obj={0: {
            "cond_frame_outputs": {t: outputs[t] for t in cond},
            "non_cond_frame_outputs": {t: outputs[t] for t in non_cond}}})
        stub = type("EdgeTamVideoModelStub", (), {m: getattr(hf.EdgeTamVideoModel, m) for m in _MODEL_METHODS})()
        stub.__dict__.update(config=hf_cfg, training=False, hidden_dim=256, mem_dim=MEM, num_maskmem=mem_slots,
                             backbone_feature_sizes=[[4 * h, 4 * w], [2 * h, 2 * w], [h, w]],
                             memory_attention=attention, memory_temporal_positional_encoding=temporal,
                             temporal_positional_encoding_projection_layer=projection)
        features, features_pos = _randn(gen, h * w, batch, 256), _randn(gen, h * w, batch, 256)
        ref = stub._prepare_memory_conditioned_features(session, frame, 0, False, features, features_pos,
                                                        num_frames)  # (B, 256, h, w)
    ref = to_numpy(ref).transpose(0, 2, 3, 1).reshape(batch, h * w, 256)

    # Ours: each frame through our perceiver, then the bank: 3 conditioning slots (temporal index -1), then
    # t-6..t-1 (index offset - 1); pointers of the conditioning frames up to t, then t-1..t-15, offsets over 15.
    resampler = PerceiverResampler(cfg)
    pos_ours = jnp.asarray(to_numpy(pos_map).transpose(1, 2, 0))
    p_params = _params("spatial_perceiver", resampler, perceiver, to_ours(raw[0]).transpose(0, 2, 3, 1), pos_ours)
    frames = cond + non_cond
    with jax.default_matmul_precision("highest"):  # all frames as one batch
        latents, latents_pos = jax.jit(resampler.apply)(
            {"params": p_params}, jnp.concatenate([to_ours(raw[t]) for t in frames]).transpose(0, 2, 3, 1), pos_ours)
    ours_memory = {t: (latents[i * batch:(i + 1) * batch], latents_pos) for i, t in enumerate(frames)}
    slots = [(t, -1) for t in cond] + [(frame - off, off - 1) for off in range(mem_slots - 1, 0, -1)]
    tpos = to_numpy(temporal)[:, 0, 0]
    memory = jnp.stack([ours_memory.get(t, ours_memory[0])[0] for t, _ in slots], axis=1)  # missing: any content
    memory_pos = jnp.stack([ours_memory.get(t, ours_memory[0])[1] + tpos[i] for t, i in slots])[None]
    memory_mask = jnp.asarray([[t in ours_memory for t, _ in slots]])
    max_ptrs = min(num_frames, hf_cfg.max_object_pointers_in_encoder)
    ptr_frames = ([(t, frame - t, True) for t in cond if t <= frame]  # (frame, offset, valid)
                  + [(frame - d, d, frame - d in non_cond) for d in range(1, max_ptrs)])
    ptr = jnp.stack([to_ours(pointers.get(t, pointers[0])) for t, _, _ in ptr_frames], axis=1)  # (B, P, 256)
    ptr_mask = jnp.asarray([[valid for _, _, valid in ptr_frames]])
    offsets = jnp.asarray([d for _, d, _ in ptr_frames], jnp.float32) / (max_ptrs - 1)
    proj = {k: to_ours(v) for k, v in projection.state_dict().items()}
    ptr_pos = (get_1d_sine_pe(offsets, 256) @ proj["weight"].T + proj["bias"])[None]
    tokens, tokens_pos, tokens_mask = object_pointer_tokens(ptr, ptr_pos, ptr_mask, MEM)

    model = EdgeTamMemoryAttention(cfg)
    args = (to_ours(features).transpose(1, 0, 2), to_ours(features_pos).transpose(1, 0, 2), memory, memory_pos,
            memory_mask, tokens, tokens_pos, tokens_mask)
    params = _params("memory_attention", model, attention, *args)
    with jax.default_matmul_precision("highest"):
        ours = jax.jit(model.apply)({"params": params}, *args)
    assert int(memory_mask.sum()) == 8 and int(ptr_mask.sum()) == 9
    assert_close("memory-conditioned features from perceiver memories", ours, ref)


# ------------------------------------------------------------------------------------------ weights
def test_param_names_are_the_checkpoint_keys():
    """The params of both modules are exactly the `spatial_perceiver.*` and `memory_attention.*` tensors of a
    transformers `EdgeTamVideoModel` checkpoint under `weights`' fixed rules (no special rule), both ways."""
    hf_cfg, cfg = _configs()
    state_dict = {k: v for k, v in state_dict_numpy(randomize_(transformers.EdgeTamVideoModel(hf_cfg))).items()
                  if k.startswith(("spatial_perceiver.", "memory_attention."))}
    memory, seq = jnp.zeros((1, 16, 16, MEM)), jnp.zeros((1, 256, 256))
    bank = (jnp.zeros((1, 2, 24, MEM)), jnp.zeros((1, 2, 24, MEM)), jnp.ones((1, 2), bool), jnp.zeros((1, 4, MEM)),
            jnp.zeros((1, 4, MEM)), jnp.ones((1, 4), bool))
    abstract = {
        "spatial_perceiver": jax.eval_shape(PerceiverResampler(cfg).init, jax.random.PRNGKey(0), memory,
                                            memory[0, ..., :MEM])["params"],
        "memory_attention": jax.eval_shape(EdgeTamMemoryAttention(cfg).init, jax.random.PRNGKey(0), seq, seq,
                                           *bank)["params"],
    }
    back = weights.params_to_state_dict(weights.state_dict_to_params(state_dict, abstract))
    assert sorted(back) == sorted(state_dict)
    for key, value in state_dict.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
