"""Parity of `sam2_jax.models.prompt_encoder.PromptEncoder` with transformers `Sam2VideoPromptEncoder` and
`Sam2PromptEncoder` (`_embed_points`, `_embed_boxes`, `forward`), randomised weights and random prompts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.sam2.modeling_sam2 import Sam2PromptEncoder
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoPromptEncoder

from sam2_jax import weights
from sam2_jax.config import replace, small_config
from sam2_jax.models.prompt_encoder import PromptEncoder
from reference import assert_close, hf_config, randomize_, state_dict_numpy

CFG = small_config()  # image 256: embeddings 16 x 16, mask prompts 64 x 64
PE_CFG = CFG.prompt_encoder_config
MASK_SIZE = PE_CFG.mask_input_size
B, P, N = 2, 3, 4


def _init_all(module, points, labels, masks):
    """Touch every param (they are created lazily per method)."""
    return module(points, labels, None, masks), module.no_mask_dense(1)


@pytest.fixture(scope="module", params=["sam2_video", "sam2"])
def encoders(request):
    """(torch reference, our module, our variables) with the same random weights."""
    cls = Sam2VideoPromptEncoder if request.param == "sam2_video" else Sam2PromptEncoder
    torch.manual_seed(1)  # the weights transformers initialises at random
    reference = randomize_(cls(hf_config(replace(CFG, model_type=request.param)).prompt_encoder_config), seed=1)
    module = PromptEncoder(PE_CFG)
    example = (jnp.zeros((1, 1, 1, 2)), jnp.zeros((1, 1, 1), jnp.int32), jnp.zeros((1, MASK_SIZE, MASK_SIZE, 1)))
    abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *example, method=_init_all))["params"]
    params = weights.state_dict_to_params(state_dict_numpy(reference.eval()), abstract)
    return reference, module, {"params": params}


@functools.partial(jax.jit, static_argnames="module")
def _encode(module, variables, inputs):
    with jax.default_matmul_precision("highest"):
        return module.apply(variables, **inputs)


def _random_points(rng, labels=(-10, -1, 0, 1, 2, 3)):
    points = rng.uniform(0, PE_CFG.image_size, (B, P, N, 2)).astype(np.float32)
    return points, rng.choice(labels, (B, P, N)).astype(np.int64)


def _random_boxes(rng):
    corners = np.sort(rng.uniform(0, PE_CFG.image_size, (B, P, 2, 2)), axis=2)  # x0 < x1, y0 < y1
    return corners.reshape(B, P, 4).astype(np.float32)


@pytest.mark.parametrize("pad", [True, False])
def test_embed_points(encoders, pad):
    reference, module, variables = encoders
    points, labels = _random_points(np.random.default_rng(0))
    labels[0, 0] = [1, 0, -1, -10]  # every kind of label occurs
    labels[1, 2] = [2, 3, 1, -10]
    with torch.no_grad():
        expected = reference._embed_points(torch.from_numpy(points), torch.from_numpy(labels), pad=pad)
    with jax.default_matmul_precision("highest"):
        ours = module.apply(variables, points, labels.astype(np.int32), pad, method=PromptEncoder.embed_points)
    assert ours.shape == (B, P, N + pad, PE_CFG.hidden_size)
    assert_close(f"points pad={pad}", ours, expected)
    assert not np.asarray(ours)[0, 0, 3].any()  # a -10 label is a zero token


@pytest.mark.parametrize("prompt", ["points", "boxes", "points+boxes", "points+mask", "boxes+mask"])
def test_forward(encoders, prompt):
    reference, module, variables = encoders
    rng = np.random.default_rng(1)
    points, labels = _random_points(rng, labels=(-10, -1, 0, 1))
    boxes = _random_boxes(rng)
    masks = rng.normal(0, 3, (B, 1, MASK_SIZE, MASK_SIZE)).astype(np.float32)
    given = {"input_points": "points" in prompt, "input_boxes": "boxes" in prompt, "input_masks": "mask" in prompt}
    torch_in = {"input_points": torch.from_numpy(points), "input_labels": torch.from_numpy(labels),
                "input_boxes": torch.from_numpy(boxes), "input_masks": torch.from_numpy(masks)}
    ours_in = {"input_points": points, "input_labels": labels.astype(np.int32), "input_boxes": boxes,
               "input_masks": masks.transpose(0, 2, 3, 1)}
    for name, on in given.items():
        if not on:
            torch_in[name] = ours_in[name] = None
    with torch.no_grad():
        sparse_ref, dense_ref = reference(**torch_in)
    sparse, dense = _encode(module, variables, ours_in)
    size = PE_CFG.image_embedding_size
    assert dense.shape == (B, size, size, PE_CFG.hidden_size)
    assert_close(f"{prompt} sparse", sparse, sparse_ref)
    assert_close(f"{prompt} dense", dense, dense_ref.permute(0, 2, 3, 1))


def test_points_require_labels(encoders):
    _, module, variables = encoders
    with pytest.raises(ValueError, match="input_labels"):
        module.apply(variables, jnp.zeros((1, 1, 1, 2)), None)
