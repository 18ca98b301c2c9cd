"""Pieces shared by every SAM 2 subnetwork: norms, MLPs, the attention entry point, position encodings and
exact resize matrices.

Conventions (used throughout `sam2_jax.models`):
- Arrays are channels-last: images (B, H, W, C), token sequences (B, L, C).
- Module names mirror the transformers keys, so joining a param path with '.' gives the transformers key
  after the fixed rules in `sam2_jax.weights` (kernel <-> weight with the layout change, LayerNorm
  scale <-> weight).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# transformers uses nn.GELU() (exact erf) everywhere; flax defaults to the tanh approximation.
gelu = functools.partial(jax.nn.gelu, approximate=False)


def depthwise_taps(x, kernel, strides, out_size):
    """Depthwise convolution of padded x (B, Hp, Wp, C) with kernel (kh, kw, 1, C) into out_size (oh, ow): the
    sum over the kernel's taps of x's strided slices times the tap's weights, one loop that XLA fuses."""
    kh, kw = kernel.shape[:2]
    (sh, sw), (oh, ow) = strides, out_size
    return sum(x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] * kernel[i, j, 0]
               for i in range(kh) for j in range(kw))


def depthwise_conv(inputs, kernel, window_strides, padding, *, lhs_dilation=None, rhs_dilation=None,
                   dimension_numbers=None, feature_group_count=1, precision=None):
    """`lax.conv_general_dilated` for `nn.Conv(..., conv_general_dilated=depthwise_conv)`: a depthwise
    convolution of (B, H, W, C) by `depthwise_taps`. XLA:CPU runs grouped convolutions as slow loops: the
    memory fuser's 7x7 depthwise on 64x64x256 took 66 ms, against 2 ms as taps. Same numbers up to the
    summation order."""
    dilated = any(d is not None and tuple(d) != (1,) * len(d) for d in (lhs_dilation, rhs_dilation))
    if feature_group_count != inputs.shape[-1] or kernel.shape[2] != 1 or dilated:
        raise NotImplementedError(f"depthwise_conv: expected one group per channel ({inputs.shape[-1]}) and no "
                                  f"dilation, got {feature_group_count} groups, kernel {kernel.shape}")
    x = jnp.pad(inputs, ((0, 0), *map(tuple, padding), (0, 0)))
    (kh, kw), (sh, sw) = kernel.shape[:2], window_strides
    return depthwise_taps(x, kernel, (sh, sw), ((x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1))


def layer_norm(eps: float, name: str | None = None) -> nn.LayerNorm:
    """torch.nn.LayerNorm numerics: two-pass variance, the given eps (1e-6 or 1e-5 depending on the site)."""
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False, name=name)


class FeedForward(nn.Module):
    """transformers `Sam2FeedForward`: proj_in -> act -> [layers.i -> act]* -> proj_out (-> sigmoid)."""

    hidden_dim: int
    output_dim: int
    num_layers: int
    activation: str = "relu"
    sigmoid_output: bool = False

    @nn.compact
    def __call__(self, x):
        act = jax.nn.relu if self.activation == "relu" else gelu
        x = act(nn.Dense(self.hidden_dim, name="proj_in")(x))
        for i in range(self.num_layers - 2):
            x = act(nn.Dense(self.hidden_dim, name=f"layers.{i}")(x))
        x = nn.Dense(self.output_dim, name="proj_out")(x)
        return jax.nn.sigmoid(x) if self.sigmoid_output else x


# Queries per block on the XLA path: the (H, block, Lk) float32 scores then stay ~30 MB in memory attention
# (Lk = 7 x 4096 + 64) instead of 470 MB, which measured 1.6x faster on CPU; 256 rather than 512 measured as fast
# there and 1.7x faster in Hiera's global attention (4 heads, 4096 x 4096).
_QUERY_BLOCK = 256


def attention(query, key, value, *, scale: float, mask=None, blocks: tuple[int, int | None] | None = None):
    """Scaled dot-product attention with the softmax in float32, as transformers' SDPA/eager paths.

    query (..., Lq, H, D), key (..., Lk, H, D), value (..., Lk, H, Dv) with Dv <= D; mask (..., Lk) of
    booleans, True = attend. Masked keys are left out of the softmax, which gives the same numbers as removing
    them. Returns (..., Lq, H, Dv). blocks = (query block, key block or None for all keys at once) of the XLA
    path; None: (`_QUERY_BLOCK`, None). Memory attention passes the per-machine choice of
    `attention_choice`.

    bfloat16/float16 on a GPU runs cuDNN's fused kernel where cuDNN supports the shapes; everything else
    (float32 parity included) runs `_xla_attention`.
    """
    if jax.default_backend() == "gpu" and query.dtype in (jnp.bfloat16, jnp.float16):
        try:
            return _cudnn_attention(query, key, value, scale, mask)
        except NotImplementedError:  # cuDNN's own checks: head dim, GPU generation
            pass
    query_block, key_block = blocks or (_QUERY_BLOCK, None)
    return _xla_attention(query, key, value, scale, mask, query_block, key_block)


def _cudnn_attention(query, key, value, scale, mask):
    """`jax.nn.dot_product_attention(implementation="cudnn")` on (B, L, H, D) views. Masked keys are moved
    behind the valid ones (a stable sort) and cut off by `key_value_seq_lengths`, cuDNN's padding mask;
    values narrower than the keys are zero-padded."""
    lead, (lq, heads, d), (lk, dv) = query.shape[:-3], query.shape[-3:], (key.shape[-3], value.shape[-1])

    def flat(t, length, depth):
        return jnp.broadcast_to(t, (*lead, length, heads, depth)).reshape(-1, length, heads, depth)

    query, key = flat(query, lq, d), flat(key, lk, d)
    value = jnp.pad(flat(value, lk, dv), ((0, 0),) * 3 + ((0, d - dv),))
    lengths = None
    if mask is not None:
        mask = jnp.broadcast_to(mask, (*lead, lk)).reshape(-1, lk)
        order = jnp.argsort(~mask, axis=-1, stable=True)[..., None, None]
        key, value = jnp.take_along_axis(key, order, axis=1), jnp.take_along_axis(value, order, axis=1)
        lengths = mask.sum(-1, dtype=jnp.int32)
    out = jax.nn.dot_product_attention(query, key, value, scale=scale, key_value_seq_lengths=lengths,
                                       implementation="cudnn")
    return out[..., :dv].reshape(*lead, lq, heads, dv)


def _xla_attention(query, key, value, scale, mask, query_block=_QUERY_BLOCK, key_block=None):
    """Heads first (a plain batched matmul), scores and softmax in float32, normalised after the weighted sum;
    long query sequences in blocks of `query_block` (a `lax.map`), so the score matrix stays small. With a
    `key_block` shorter than the keys, each query block also walks the keys in blocks with an online softmax
    (`_key_blocked`), so no (queries x keys) score matrix is ever written."""
    query, key, value = (jnp.swapaxes(t, -3, -2) for t in (query, key, value))  # (..., H, L, D)
    lq, lk = query.shape[-2], key.shape[-2]
    # float32 scores from narrower inputs; not asked for float32 inputs, where it measured 20% slower on CPU.
    acc = None if query.dtype == jnp.float32 else jnp.float32

    def block(q):
        logits = jnp.einsum("...qd,...kd->...qk", q, key, preferred_element_type=acc)
        logits = logits * jnp.float32(scale)
        if mask is not None:
            logits = jnp.where(mask[..., None, None, :], logits, -jnp.inf)
        weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
        out = jnp.einsum("...qk,...kd->...qd", weights.astype(value.dtype), value, preferred_element_type=acc)
        return (out / weights.sum(-1, keepdims=True)).astype(value.dtype)

    if key_block is not None and key_block < lk:
        block = functools.partial(_key_blocked, key=key, value=value, mask=mask, scale=scale, key_block=key_block,
                                  acc=acc)
    if lq <= query_block:
        out = block(query)
    else:
        blocks = -(-lq // query_block)
        padded = jnp.pad(query, ((0, 0),) * (query.ndim - 2) + ((0, blocks * query_block - lq), (0, 0)))
        padded = jnp.moveaxis(padded.reshape(*query.shape[:-2], blocks, query_block, query.shape[-1]), -3, 0)
        out = jnp.moveaxis(jax.lax.map(block, padded), 0, -3)
        out = out.reshape(*out.shape[:-3], blocks * query_block, out.shape[-1])[..., :lq, :]
    return jnp.swapaxes(out, -3, -2)


def _key_blocked(q, *, key, value, mask, scale, key_block, acc):
    """Attention of the queries q (..., H, Lq, D) over key (..., H, Lk, D) and value (..., H, Lk, Dv) in blocks
    of `key_block` keys (a loop of slices in place, then the shorter last block), with the online softmax of
    flash attention: a running max m, a running sum l and a running weighted sum, rescaled by exp(m_old - m_new)
    when the max grows. Masked keys score -inf; while a row has seen only masked keys its max stays -inf and its
    weights are exp(-inf) = 0 (the max is taken as 0 there, so no inf - inf). Same numbers as `_xla_attention`'s
    full rows up to float rounding. A block whose keys are all masked is skipped (`_unless_all_masked`)."""
    lk, given_mask = key.shape[-2], mask
    mask = jnp.ones((lk,), bool) if mask is None else mask
    lead = jnp.broadcast_shapes(q.shape[:-2], key.shape[:-2], value.shape[:-2], mask.shape[:-1] + (1,))
    rows = (*lead, q.shape[-2])
    # Keys shared along a leading axis are broadcast first: XLA:CPU fails on a bfloat16 product with float32
    # output whose operand is broadcast inside the loop ("Unsupported element type for DotThunk").
    key, value = (jnp.broadcast_to(t, (*lead, *t.shape[-2:])) for t in (key, value))

    def step(start, size, carry):
        m, l, out = carry
        k, v = (jax.lax.dynamic_slice_in_dim(t, start, size, axis=-2) for t in (key, value))
        valid = jax.lax.dynamic_slice_in_dim(mask, start, size, axis=-1)
        logits = jnp.einsum("...qd,...kd->...qk", q, k, preferred_element_type=acc) * jnp.float32(scale)
        logits = jnp.where(valid[..., None, None, :], logits, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(logits, axis=-1, keepdims=True))
        m_safe = jnp.where(m_new == -jnp.inf, jnp.float32(0), m_new)
        weights = jnp.exp(logits - m_safe)
        rescale = jnp.exp(m - m_safe)
        l = l * rescale + weights.sum(-1, keepdims=True)
        out = out * rescale + jnp.einsum("...qk,...kd->...qd", weights.astype(v.dtype), v, preferred_element_type=acc)
        return m_new, l, out

    if given_mask is not None:
        step = functools.partial(_unless_all_masked, step, mask)
    carry = (jnp.full((*rows, 1), -jnp.inf, jnp.float32), jnp.zeros((*rows, 1), jnp.float32),
             jnp.zeros((*rows, value.shape[-1]), jnp.float32))
    full, rest = divmod(lk, key_block)
    carry = jax.lax.fori_loop(0, full, lambda i, c: step(i * key_block, key_block, c), carry)
    if rest:
        carry = step(full * key_block, rest, carry)
    _, l, out = carry
    return (out / l).astype(value.dtype)


def _unless_all_masked(step, mask, start, size, carry):
    """`step` over the keys [start, start + size), or the carry unchanged where they are all masked: the memory
    bank's empty slots (its first frames) then cost nothing. Under `vmap` both branches run (a select), as
    without the test."""
    valid = jax.lax.dynamic_slice_in_dim(mask, start, size, axis=-1)
    return jax.lax.cond(jnp.any(valid), lambda c: step(start, size, c), lambda c: c, carry)


def sine_position_encoding(height: int, width: int, num_pos_feats: int, temperature: float = 10000.0,
                           dtype=jnp.float32) -> jnp.ndarray:
    """transformers `Sam2SinePositionEmbedding` (normalize=True, scale 2*pi) as (H, W, 2*num_pos_feats),
    y channels first, sin/cos interleaved."""
    scale = np.float32(2 * math.pi)
    eps = np.float32(1e-6)
    y = np.arange(1, height + 1, dtype=np.float32)
    x = np.arange(1, width + 1, dtype=np.float32)
    y = y / (y[-1:] + eps) * scale
    x = x / (x[-1:] + eps) * scale
    dim_t = np.arange(num_pos_feats, dtype=np.float32)
    dim_t = np.float32(temperature) ** (np.float32(2) * np.floor(dim_t / 2) / np.float32(num_pos_feats))
    dim_t = dim_t.astype(np.float32)
    pos_x = jnp.asarray(x)[:, None] / jnp.asarray(dim_t)  # (W, F)
    pos_y = jnp.asarray(y)[:, None] / jnp.asarray(dim_t)  # (H, F)
    pos_x = jnp.stack([jnp.sin(pos_x[:, 0::2]), jnp.cos(pos_x[:, 1::2])], axis=-1).reshape(width, -1)
    pos_y = jnp.stack([jnp.sin(pos_y[:, 0::2]), jnp.cos(pos_y[:, 1::2])], axis=-1).reshape(height, -1)
    # y channels then x channels as one broadcast add of zero-padded halves (exact), which XLA on CPU writes
    # 2x faster than a concatenation of two broadcasts (measured at 256 x 256 x 256).
    pos_y = jnp.pad(pos_y, ((0, 0), (0, num_pos_feats)))
    pos_x = jnp.pad(pos_x, ((0, 0), (num_pos_feats, 0)))
    return (pos_y[:, None, :] + pos_x[None, :, :]).astype(dtype)


class FourierPositionEmbedding(nn.Module):
    """transformers `Sam2PositionalEmbedding`: random Fourier features of coordinates in [0, 1]^2.

    Keep the order matmul, then x 2*pi (folding 2*pi into the matrix changes the rounding).
    """

    num_pos_feats: int = 128
    scale: float = 1.0

    @nn.compact
    def __call__(self, coords):
        gaussian = self.param("positional_embedding", nn.initializers.normal(self.scale), (2, self.num_pos_feats))
        coords = 2 * coords.astype(jnp.float32) - 1
        coords = coords @ gaussian
        coords = np.float32(2 * np.pi) * coords
        return jnp.concatenate([jnp.sin(coords), jnp.cos(coords)], axis=-1)


# ------------------------------------------------------------------------------------- resize matrices
# PyTorch's F.interpolate as separable (out, in) float32 weight matrices: y = Wh @ x @ Ww^T per channel.
# Sizes are static, so these are numpy constants built at trace time.

def _source_coords(in_size: int, out_size: int) -> np.ndarray:
    """PyTorch's half-pixel source coordinate, rounded once as its fused multiply-add does."""
    scale = np.float32(in_size) / np.float32(out_size)
    return (np.float64(scale) * (np.arange(out_size) + 0.5) - 0.5).astype(np.float32)


@functools.lru_cache(maxsize=None)
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """F.interpolate(mode="bilinear", align_corners=False, antialias=False) along one axis."""
    src = np.maximum(_source_coords(in_size, out_size), np.float32(0))
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    l1 = (src - i0.astype(np.float32)).astype(np.float32)
    l0 = (np.float32(1) - l1).astype(np.float32)
    w = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(w, (rows, i0), l0)
    np.add.at(w, (rows, i1), l1)
    return w


def antialias_taps(in_size: int, out_size: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """F.interpolate(mode="bilinear", antialias=True) taps along one axis, computed as ATen's
    `_compute_weights_aa` computes them in its scalar type: float64 for the uint8 kernel and float64 images,
    float32 for float32 images (which rounds the small weights coarsely).
    Returns source indices (out, K) and weights (out, K) of that dtype, zero past each support."""
    f64 = np.float64
    scale = dtype(in_size) / dtype(out_size)
    support = scale if scale >= 1.0 else dtype(1.0)
    invscale = dtype(1.0 / f64(scale)) if scale >= 1.0 else dtype(1.0)
    center = (f64(scale) * (np.arange(out_size) + 0.5)).astype(dtype)
    # C++ int() truncates; its `+ 0.5` is a double.
    start = np.maximum(((center - support).astype(f64) + 0.5).astype(np.int64), 0)
    count = np.minimum(((center + support).astype(f64) + 0.5).astype(np.int64), in_size) - start
    k = np.arange(math.ceil(support) * 2 + 1)
    x = np.abs(((((k + start[:, None]).astype(dtype) - center[:, None]).astype(f64) + 0.5) * invscale).astype(dtype))
    w = np.where((x < 1.0) & (k < count[:, None]), (1.0 - x.astype(f64)).astype(dtype), dtype(0))
    total = np.zeros(out_size, dtype)
    for j in k:  # sequential sum, as ATen
        total = total + w[:, j]
    w = w / np.where(total != 0, total, dtype(1))[:, None]
    return np.minimum(start[:, None] + k, in_size - 1), w



@functools.lru_cache(maxsize=None)
def antialias_bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """F.interpolate(mode="bilinear", align_corners=False, antialias=True) along one axis."""
    index, taps = antialias_taps(in_size, out_size)
    w = np.zeros((out_size, in_size), np.float64)
    np.add.at(w, (np.arange(out_size)[:, None], index), taps)
    return w.astype(np.float32)


@functools.lru_cache(maxsize=None)
def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """F.interpolate(mode="bicubic", align_corners=False, antialias=False): Keys cubic with A = -0.75."""
    a = np.float32(-0.75)
    real = _source_coords(in_size, out_size)  # no clamp at 0 for cubic
    ix = np.floor(real)
    t = (real - ix).astype(np.float32)

    def cc1(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def cc2(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    taps = [cc2(t + 1), cc1(t), cc1(1 - t), cc2(2 - t)]
    w = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    for k, tap in enumerate(taps):
        idx = np.clip(ix.astype(np.int64) - 1 + k, 0, in_size - 1)
        np.add.at(w, (rows, idx), tap.astype(np.float32))
    return w


def resize_with(x, row_matrix: np.ndarray, col_matrix: np.ndarray):
    """Apply (out_h, in_h) and (out_w, in_w) matrices to the H and W axes of a (..., H, W, C) array."""
    prec = jax.lax.Precision.HIGHEST
    x = jnp.einsum("oh,...hwc->...owc", jnp.asarray(row_matrix, x.dtype), x, precision=prec)
    return jnp.einsum("pw,...owc->...opc", jnp.asarray(col_matrix, x.dtype), x, precision=prec)


def resize_bilinear(x, size: tuple[int, int], antialias: bool = False):
    """F.interpolate(x, size, mode="bilinear", align_corners=False, antialias=...) on (..., H, W, C)."""
    make = antialias_bilinear_matrix if antialias else bilinear_matrix
    h, w = x.shape[-3], x.shape[-2]
    return resize_with(x, make(h, size[0]), make(w, size[1]))
