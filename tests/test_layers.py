"""`sam2_jax.models.layers.attention` against torch `F.scaled_dot_product_attention` (float64): query blocks,
masks, leading axes, narrow values; and the cuDNN path's key compaction, checked on the CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from reference import assert_close

from sam2_jax.models import layers


def _case(lq=1100, lk=300, heads=2, d=16, dv=8, seed=0):
    """Random (2, 3, L, H, D) queries/keys/values and a key mask with a few valid keys per row."""
    rng = np.random.default_rng(seed)
    q, k = (rng.standard_normal((2, 3, n, heads, d)).astype(np.float32) for n in (lq, lk))
    v = rng.standard_normal((2, 3, lk, heads, dv)).astype(np.float32)
    mask = rng.random((2, 3, lk)) < 0.3
    mask[..., 0] = True
    return q, k, v, mask


def _sdpa(q, k, v, mask, scale):
    t = [torch.from_numpy(x).double().transpose(-3, -2) for x in (q, k, v)]  # (..., H, L, D)
    out = torch.nn.functional.scaled_dot_product_attention(*t, attn_mask=torch.from_numpy(mask)[..., None, None, :],
                                                           scale=scale)
    return out.transpose(-3, -2).numpy()


@pytest.mark.parametrize("lq", [7, 1100])  # one block; three blocks with a ragged last one
def test_attention_matches_sdpa(lq):
    q, k, v, mask = _case(lq=lq)
    with jax.default_matmul_precision("highest"):
        ours = jax.jit(lambda q, k, v, m: layers.attention(q, k, v, scale=0.25, mask=m))(q, k, v, mask)
    assert_close("attention", ours, _sdpa(q, k, v, mask, 0.25), rel=1e-5)


def test_cudnn_path_compacts_masked_keys(monkeypatch):
    """The key sort and `key_value_seq_lengths` of `_cudnn_attention`, run by JAX's XLA implementation."""
    xla = jax.nn.dot_product_attention
    monkeypatch.setattr(jax.nn, "dot_product_attention", lambda *a, implementation, **kw: xla(*a, **kw))
    q, k, v, mask = _case(lq=64)
    with jax.default_matmul_precision("highest"):
        ours = layers._cudnn_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), 0.25, jnp.asarray(mask))
    assert_close("attention, cuDNN path", ours, _sdpa(q, k, v, mask, 0.25), rel=1e-5)
