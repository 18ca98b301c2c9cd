"""Parity of `sam2_jax.models.mask_decoder.MaskDecoder` with transformers `Sam2VideoMaskDecoder` (and
`Sam2MaskDecoder`), randomised weights and random inputs: multimask on, off with the stability fallback
taken and not taken, several prompts per image, ragged prompts padded with -10, and our `sparse_mask`."""

import functools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.sam2.modeling_sam2 import Sam2MaskDecoder
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoMaskDecoder, Sam2VideoPromptEncoder

from sam2_jax import weights
from sam2_jax.config import MaskDecoderConfig, replace, small_config
from sam2_jax.models.mask_decoder import MaskDecoder
from sam2_jax.models.prompt_encoder import PromptEncoder
from reference import assert_close, hf_config, randomize_, state_dict_numpy

CFG = small_config()  # 16 x 16 image embeddings, masks at 64 x 64
SIZE = CFG.prompt_encoder_config.image_embedding_size
B, P, N = 2, 3, 4
# A narrower decoder with 3 layers (the token MLP then has a hidden `layers.0`) and 2 multimask outputs.
ODD = MaskDecoderConfig(hidden_size=64, mlp_dim=96, num_hidden_layers=3, num_attention_heads=4,
                        num_multimask_outputs=2, iou_head_depth=4, iou_head_hidden_dim=48)


def _init_all(module, image, image_pe, sparse, dense, high_res):
    """Touch every param (they are created lazily per method)."""
    return module.project_high_res_features(image, image), module(image, image_pe, sparse, dense, True, high_res)


def _build(dec_cfg=CFG.mask_decoder_config, model_type="sam2_video", seed=0, scale_single_mask=1.0):
    """The torch reference and our module with the same random weights.

    `scale_single_mask` multiplies the hypernetwork output layer of mask token 0, to make its logits small
    (unstable) or large (stable).
    """
    hf_cfg = hf_config(replace(CFG, mask_decoder_config=dec_cfg, model_type=model_type)).mask_decoder_config
    hf_cfg._attn_implementation = "sdpa"  # as in the full model
    cls = Sam2VideoMaskDecoder if model_type == "sam2_video" else Sam2MaskDecoder
    torch.manual_seed(seed)  # the weights transformers initialises at random
    reference = randomize_(cls(hf_cfg), seed=seed).eval()
    with torch.no_grad():
        for param in reference.output_hypernetworks_mlps[0].proj_out.parameters():
            param.mul_(scale_single_mask)

    module = MaskDecoder(dec_cfg)
    c = dec_cfg.hidden_size
    grid = jnp.zeros((1, SIZE, SIZE, c))
    high_res = (jnp.zeros((1, 4 * SIZE, 4 * SIZE, c // 8)), jnp.zeros((1, 2 * SIZE, 2 * SIZE, c // 4)))
    abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), grid, grid, jnp.zeros((1, 1, 1, c)),
                                                  grid, high_res, method=_init_all))["params"]
    variables = {"params": weights.state_dict_to_params(state_dict_numpy(reference), abstract)}
    return SimpleNamespace(reference=reference, module=module, variables=variables, config=dec_cfg)


@pytest.fixture(scope="module")
def decoder():
    return _build()


def _inputs(rng, c, b=B, p=P, n=N):
    """Random decoder inputs in our layout (channels-last); the image PE is shared by the batch."""
    def normal(size):
        return rng.normal(size=size).astype(np.float32)

    return {
        "image": normal(size=(b, SIZE, SIZE, c)),
        "image_pe": normal(size=(1, SIZE, SIZE, c)),
        "sparse": normal(size=(b, p, n, c)),
        "dense": normal(size=(b, SIZE, SIZE, c)),
        "high_res": (normal(size=(b, 4 * SIZE, 4 * SIZE, c // 8)),
                     normal(size=(b, 2 * SIZE, 2 * SIZE, c // 4))),
    }


def _reference(reference, x, multimask):
    """transformers' outputs for our inputs (converted to channels-first)."""
    def nchw(a):
        return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)

    batch = x["image"].shape[0]
    with torch.no_grad():
        return reference(image_embeddings=nchw(x["image"]),
                         image_positional_embeddings=nchw(np.repeat(x["image_pe"], batch, axis=0)),
                         sparse_prompt_embeddings=torch.from_numpy(x["sparse"]),
                         dense_prompt_embeddings=nchw(x["dense"]), multimask_output=multimask,
                         high_resolution_features=[nchw(f) for f in x["high_res"]])


@functools.partial(jax.jit, static_argnames=("module", "multimask"))
def _jitted(module, variables, x, multimask, sparse_mask):
    with jax.default_matmul_precision("highest"):
        return module.apply(variables, x["image"], x["image_pe"], x["sparse"], x["dense"], multimask,
                            x["high_res"], sparse_mask)


def _decode(dec, x, multimask, sparse_mask=None):
    """Our outputs, jitted; decoders of one config share the compiled function."""
    return _jitted(dec.module, dec.variables, x, multimask, sparse_mask)


def _assert_outputs_close(what, ours, expected):
    """(masks, iou_pred, sam_tokens_out, object_score_logits) within 1e-4 x max(1, max |ref|), IoU within 1e-5."""
    for name, got, ref in zip(("masks", "iou", "sam_tokens", "obj_score"), ours, expected):
        assert_close(f"{what} {name}", got, ref, atol=1e-5 if name == "iou" else None)


@pytest.mark.parametrize("model_type", ["sam2_video", "sam2"])
def test_multimask(model_type):
    dec = _build(model_type=model_type, seed=1)
    x = _inputs(np.random.default_rng(0), dec.config.hidden_size)
    ours = _decode(dec, x, multimask=True)
    assert ours[0].shape == (B, P, 3, 4 * SIZE, 4 * SIZE)
    _assert_outputs_close(f"multimask {model_type}", ours, _reference(dec.reference, x, True))


def _single_mask_stable(dec, x):
    """transformers' stability decision for mask token 0, per (image, prompt)."""
    dec.reference.dynamic_multimask_via_stability = False
    try:
        single = _reference(dec.reference, x, False)[0]
    finally:
        dec.reference.dynamic_multimask_via_stability = True
    return (dec.reference._get_stability_scores(single[:, :, 0]) >= dec.config.dynamic_multimask_stability_thresh
            ).numpy()


def test_single_mask_dynamic_stability():
    """Mask-0 logits scaled up until some prompts are stable (mask 0 kept) and others not (the best multimask
    output is taken)."""
    dec = _build(seed=2, scale_single_mask=8.0)
    x = _inputs(np.random.default_rng(1), dec.config.hidden_size)
    stable = _single_mask_stable(dec, x)
    assert stable.any() and not stable.all(), stable
    ours = _decode(dec, x, multimask=False)
    assert ours[0].shape == (B, P, 1, 4 * SIZE, 4 * SIZE)
    _assert_outputs_close("dynamic stability", ours, _reference(dec.reference, x, False))


def test_single_mask_without_dynamic_stability():
    dec = _build(replace(CFG.mask_decoder_config, dynamic_multimask_via_stability=False), seed=3)
    x = _inputs(np.random.default_rng(2), dec.config.hidden_size)
    _assert_outputs_close("single mask", _decode(dec, x, multimask=False), _reference(dec.reference, x, False))


def test_other_config():
    """3 layers (an MLP with a hidden layer, as transformers builds it), 2 multimask outputs, hidden 64."""
    dec = _build(ODD, seed=4)
    x = _inputs(np.random.default_rng(3), ODD.hidden_size, p=2, n=3)
    ours = _decode(dec, x, multimask=True)
    assert ours[0].shape == (B, 2, 2, 4 * SIZE, 4 * SIZE)
    _assert_outputs_close("other config", ours, _reference(dec.reference, x, True))


def test_ragged_points_with_prompt_encoder(decoder):
    """Three prompts per image with 1 to 3 clicks, padded with transformers' -10 points (zero tokens that take
    part in attention): prompt encoder and decoder together, as the model calls them."""
    rng = np.random.default_rng(4)
    torch.manual_seed(5)
    torch_encoder = randomize_(Sam2VideoPromptEncoder(hf_config(CFG).prompt_encoder_config), seed=5).eval()
    encoder = PromptEncoder(CFG.prompt_encoder_config)
    points = rng.uniform(0, CFG.image_size, (B, P, N - 1, 2)).astype(np.float32)
    labels = np.array([[[1, 0, 1], [1, -10, -10], [0, 1, -10]], [[1, 1, 0], [0, -10, -10], [1, 0, 0]]], np.int32)
    with torch.no_grad():
        sparse_ref, _ = torch_encoder(torch.from_numpy(points), torch.from_numpy(labels).long(), None, None)
    abstract = jax.eval_shape(lambda: encoder.init(jax.random.PRNGKey(0), points, labels))["params"]
    params = weights.state_dict_to_params(state_dict_numpy(torch_encoder), abstract, ignore=[r"mask_embed\."])
    enc_vars = {"params": params}
    with jax.default_matmul_precision("highest"):
        sparse, _ = encoder.apply(enc_vars, points, labels)
    x = _inputs(rng, CFG.mask_decoder_config.hidden_size)
    x["sparse"] = np.asarray(sparse)
    expected = _reference(decoder.reference, {**x, "sparse": sparse_ref.numpy()}, False)
    _assert_outputs_close("ragged -10 points", _decode(decoder, x, multimask=False), expected)


def test_sparse_mask_excludes_padding(decoder):
    """Prompts padded with masked junk tokens (anywhere in the sequence) give the unpadded prompts' outputs."""
    rng = np.random.default_rng(5)
    x = _inputs(rng, CFG.mask_decoder_config.hidden_size)
    expected = _reference(decoder.reference, x, True)
    pad = 3
    junk = 5 * rng.normal(size=(B, P, N + pad, x["sparse"].shape[-1])).astype(np.float32)
    is_real = np.zeros((B, P, N + pad), bool)
    for b in range(B):
        for p in range(P):
            is_real[b, p, np.sort(rng.choice(N + pad, N, replace=False))] = True
    junk[is_real] = x["sparse"].reshape(-1, x["sparse"].shape[-1])
    padded = {**x, "sparse": junk}

    ours = _decode(decoder, padded, multimask=True, sparse_mask=jnp.asarray(is_real))
    _assert_outputs_close("sparse_mask padded", ours, expected)
    unpadded = _decode(decoder, x, multimask=True)
    for name, got, ref in zip(("masks", "iou", "sam_tokens", "obj_score"), ours, unpadded):
        assert_close(f"sparse_mask padded vs unpadded {name}", got, ref, atol=1e-5)
    unmasked = _decode(decoder, padded, multimask=True, sparse_mask=jnp.ones_like(is_real))
    assert np.abs(np.asarray(unmasked[0]) - expected[0].numpy()).max() > 1e-2  # the junk matters unmasked


def test_project_high_res_features(decoder):
    rng = np.random.default_rng(6)
    c = CFG.mask_decoder_config.hidden_size
    level0 = rng.normal(size=(B, 4 * SIZE, 4 * SIZE, c)).astype(np.float32)
    level1 = rng.normal(size=(B, 2 * SIZE, 2 * SIZE, c)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        feat_s0, feat_s1 = decoder.module.apply(decoder.variables, level0, level1,
                                                method=MaskDecoder.project_high_res_features)
    with torch.no_grad():
        for name, ours, conv, level in (("feat_s0", feat_s0, decoder.reference.conv_s0, level0),
                                        ("feat_s1", feat_s1, decoder.reference.conv_s1, level1)):
            ref = conv(torch.from_numpy(level).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            assert_close(name, ours, ref)
