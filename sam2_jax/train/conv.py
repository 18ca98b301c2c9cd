"""Convolutions as slices and matmuls, for training on CPUs.

XLA:CPU computes the weight gradient of a convolution with a naive loop, and that of a grouped (depthwise)
convolution as a dense one whose diagonal it keeps: 85% of a training step of the tiny model went there
(the memory encoder's depthwise 7x7 and strided convs). Here a convolution is its kernel taps' strided
slices side by side on the channel axis times one matmul (im2col); a depthwise one on a small grid is one
(positions x positions) matrix per channel, elsewhere a sum of slices times the tap's weights. Every
gradient is then a slice, a pad or a matmul; im2col and the dense depthwise form halved the memory
encoder's forward and backward time against one matmul per tap. Same numbers as `flax.linen.Conv` up to
the summation order. `taps_convolutions()` routes every `nn.Conv` call traced inside it here; the params
and modules are untouched."""

from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..models.layers import depthwise_taps


def conv_by_taps(module: nn.Conv, x):
    """`module(x)` for an `nn.Conv` on (B, H, W, Cin) without input or kernel dilation, with groups of one
    channel (depthwise) or a single group."""
    kernel = module.get_variable("params", "kernel")  # (kh, kw, Cin / groups, Cout)
    bias = module.get_variable("params", "bias") if module.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=module.dtype)
    kh, kw, _, features = kernel.shape
    strides = module.strides or (1, 1)
    sh, sw = (strides, strides) if isinstance(strides, int) else strides
    padding = module.padding
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw), (sh, sw), padding)
    elif isinstance(padding, int):
        padding = ((padding, padding),) * 2
    x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    depthwise = module.feature_group_count > 1
    if depthwise and module.feature_group_count != x.shape[-1]:
        raise ValueError(f"feature_group_count: expected 1 or the channels ({x.shape[-1]}), got "
                         f"{module.feature_group_count}")
    if depthwise and oh * ow <= DENSE_DEPTHWISE_POSITIONS:
        out = _dense_depthwise(x, kernel, (sh, sw), (oh, ow))
    elif depthwise:
        out = depthwise_taps(x, kernel, (sh, sw), (oh, ow))
    else:  # im2col: the taps side by side on the channel axis, then one matmul
        taps = [x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] for i in range(kh) for j in range(kw)]
        out = jnp.concatenate(taps, axis=-1) @ kernel.reshape(-1, features)
    return out if bias is None else out + bias


# Depthwise kernels on grids of at most this many output positions run as one dense (positions x positions)
# matmul per channel: two einsums instead of a slice and a product per tap, forward and backward.
DENSE_DEPTHWISE_POSITIONS = 256


def _dense_depthwise(x, kernel, strides, out_size):
    """Depthwise convolution of padded x (B, Hp, Wp, C) with kernel (kh, kw, 1, C) as a (positions x
    positions) matrix per channel, built from the kernel by a constant one-hot map."""
    kh, kw = kernel.shape[:2]
    (sh, sw), (oh, ow) = strides, out_size
    hp, wp = x.shape[1:3]
    # one_hot[p, q, t]: output position p reads padded input position q through tap t.
    one_hot = np.zeros((oh * ow, hp * wp, kh * kw), np.float32)
    for t in range(kh * kw):
        i, j = divmod(t, kw)
        for p in range(oh * ow):
            y, z = divmod(p, ow)
            one_hot[p, (y * sh + i) * wp + z * sw + j, t] = 1
    dense = jnp.einsum("pqt,tc->pqc", jnp.asarray(one_hot, kernel.dtype), kernel.reshape(kh * kw, -1))
    out = jnp.einsum("bqc,pqc->bpc", x.reshape(x.shape[0], hp * wp, -1), dense)
    return out.reshape(x.shape[0], oh, ow, -1)


def _intercept(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Conv) and context.method_name == "__call__" and not kwargs:
        return conv_by_taps(context.module, *args)
    return next_fun(*args, **kwargs)


@contextlib.contextmanager
def taps_convolutions():
    """Within this context, every `nn.Conv` called (traced) runs `conv_by_taps`."""
    with nn.intercept_methods(_intercept):
        yield
