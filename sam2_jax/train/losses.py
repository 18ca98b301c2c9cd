"""The losses of the original SAM 2 trainer (`MultiStepMultiMasksAndIous`), per object.

For every decoder pass: focal and dice losses of the mask, L1 regression of the predicted IoU on the
actual IoU, and a binary cross-entropy of the object score. Mask, dice and IoU terms count only where the
object is present. With multimask output, only the best of the three masks (by 20 focal + dice) is
supervised, and the IoU of all three is. Shapes: N objects, K output masks, H, W pixels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

WEIGHTS = {"focal": 20.0, "dice": 1.0, "iou": 1.0, "score": 1.0}  # the sam2.1 training configs


def _pixel_sums(logits, targets, alpha: float, gamma: float):
    """Per-pixel focal loss and sigmoid, summed over (H, W), and what their gradients need.

    With z = -logits on object pixels and logits elsewhere: cross-entropy = softplus(z), 1 - p_t =
    sigmoid(z) = s, and sigmoid(logits) is s off the object and 1 - s on it. One exp and one log1p per
    pixel; `targets` may broadcast against `logits` (one truth for every decoder slot)."""
    t = jnp.broadcast_to(targets, logits.shape)
    z = jnp.where(t, -logits, logits)
    softplus = jnp.maximum(z, 0) + jnp.log1p(jnp.exp(-jnp.abs(z)))
    s = jnp.exp(z - softplus)
    alpha_t = jnp.where(t, alpha, 1 - alpha)
    p = jnp.where(t, 1 - s, s)
    sums = ((alpha_t * softplus * s ** gamma).sum(axis=(-2, -1)), p.sum(axis=(-2, -1)),
            jnp.where(t, p, 0).sum(axis=(-2, -1)))
    return sums, (t, s, softplus, alpha_t)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def focal_and_sigmoid_sums(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
    """(sum of focal loss, sum of sigmoid, sum of sigmoid on the object) over the last two axes of
    logits (..., H, W) against targets (..., H, W) bool. Its gradient is one fused pass over the pixels
    and keeps nothing but the inputs (the mask losses run on every decoder slot at full resolution)."""
    return _pixel_sums(logits, targets, alpha, gamma)[0]


def _sums_forward(logits, targets, alpha, gamma):
    return focal_and_sigmoid_sums(logits, targets, alpha, gamma), (logits, targets)


def _sums_backward(alpha, gamma, saved, grads):
    logits, targets = saved
    _, (t, s, softplus, alpha_t) = _pixel_sums(logits, targets, alpha, gamma)
    g_focal, g_p, g_pt = (g[..., None, None] for g in grads)
    # d/dz [alpha_t softplus(z) s^gamma] = alpha_t s^gamma (s + gamma softplus (1 - s)); dz/dlogits = -1 on the
    # object; d sigmoid(logits) / d logits = s (1 - s) everywhere.
    d_focal = alpha_t * s ** gamma * (s + gamma * softplus * (1 - s))
    d_logits = g_focal * jnp.where(t, -d_focal, d_focal) + (g_p + jnp.where(t, g_pt, 0)) * s * (1 - s)
    return d_logits.astype(logits.dtype), None


focal_and_sigmoid_sums.defvjp(_sums_forward, _sums_backward)


def focal_and_dice(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
    """The RetinaNet focal loss averaged over pixels and the dice loss 1 - (2 |p t| + 1) / (|p| + |t| + 1) with
    p = sigmoid(logits): logits (..., H, W) float, targets broadcasting to them, bool -> ((...), (...))."""
    focal, p_sum, pt_sum = focal_and_sigmoid_sums(logits, targets, alpha, gamma)
    pixels = logits.shape[-2] * logits.shape[-1]
    t_sum = jnp.broadcast_to(targets, logits.shape).sum(axis=(-2, -1), dtype=jnp.float32)
    return focal / pixels, 1 - (2 * pt_sum + 1) / (p_sum + t_sum + 1)


def sigmoid_focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
    """RetinaNet focal loss averaged over pixels: logits (..., H, W) float, targets (..., H, W) bool -> (...)."""
    return focal_and_dice(logits, targets, alpha, gamma)[0]


def dice_loss(logits, targets):
    """1 - (2 |p t| + 1) / (|p| + |t| + 1) with p = sigmoid(logits): (..., H, W), (..., H, W) bool -> (...)."""
    return focal_and_dice(logits, targets)[1]


def mask_iou(logits, targets):
    """IoU of `logits > 0` with targets (..., H, W) -> (...); 0 where both are empty (the trainer's clamp)."""
    pred = logits > 0
    inter = (pred & targets).sum(axis=(-2, -1))
    union = (pred | targets).sum(axis=(-2, -1))
    return inter / jnp.maximum(union, 1).astype(jnp.float32)


def iou_loss(iou_pred, logits, targets):
    """|predicted IoU - actual IoU| (the actual one is a constant): (...), (..., H, W), (..., H, W) -> (...)."""
    return jnp.abs(iou_pred - jax.lax.stop_gradient(mask_iou(logits, targets)))


def object_score_loss(score_logits, present):
    """Binary cross-entropy of object-score logits (...) against presence (...) bool -> (...)."""
    return optax.sigmoid_binary_cross_entropy(score_logits, present.astype(jnp.float32))


def decoder_losses(mask_logits, iou_pred, score_logits, targets):
    """The unweighted loss terms of one decoder pass's outputs, per object, as the original's
    `_update_losses`: one output mask (K = 1) is supervised as it is; of several (the multimask outputs),
    the best by 20 focal + dice is, and the IoU predictions of all.

    mask_logits (N, K, H, W) at the targets' size; iou_pred (N, K); score_logits (N,); targets (N, H, W)
    bool. Returns {"focal", "dice", "iou", "score"}: (N,) each.
    """
    focal, dice = focal_and_dice(mask_logits, targets[:, None])  # (N, K)
    ious = iou_loss(iou_pred, mask_logits, targets[:, None])
    best = jnp.argmin(WEIGHTS["focal"] * focal + WEIGHTS["dice"] * dice, axis=1)

    def pick(x):
        return jnp.take_along_axis(x, best[:, None], axis=1)[:, 0]

    present = targets.any(axis=(-2, -1))
    on = present.astype(jnp.float32)
    return {"focal": on * pick(focal), "dice": on * pick(dice), "iou": on * ious.mean(axis=1),
            "score": object_score_loss(score_logits, present)}


def total_loss(terms):
    """The weighted sum of a dict of loss terms (arrays of any matching shape)."""
    return sum(WEIGHTS[name] * value for name, value in terms.items())
