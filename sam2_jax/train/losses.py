"""The losses of the original SAM 2 trainer (`MultiStepMultiMasksAndIous`), per object.

For every decoder pass: focal and dice losses of the mask, L1 regression of the predicted IoU on the
actual IoU, and a binary cross-entropy of the object score. Mask, dice and IoU terms count only where the
object is present. With multimask output, only the best of the three masks (by 20 focal + dice) is
supervised, and the IoU of all three is. Shapes: N objects, K decoder slots (slot 0 is the single-mask
output, 1..K-1 the multimask outputs), H, W pixels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

WEIGHTS = {"focal": 20.0, "dice": 1.0, "iou": 1.0, "score": 1.0}  # the sam2.1 training configs


def sigmoid_focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
    """RetinaNet focal loss averaged over pixels: logits (..., H, W) float, targets (..., H, W) bool -> (...)."""
    t = targets.astype(jnp.float32)
    p = jax.nn.sigmoid(logits)
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    loss = alpha_t * optax.sigmoid_binary_cross_entropy(logits, t) * (1 - p_t) ** gamma
    return loss.mean(axis=(-2, -1))


def dice_loss(logits, targets):
    """1 - (2 |p t| + 1) / (|p| + |t| + 1) with p = sigmoid(logits): (..., H, W), (..., H, W) bool -> (...)."""
    t = targets.astype(jnp.float32)
    p = jax.nn.sigmoid(logits)
    numerator = 2 * (p * t).sum(axis=(-2, -1)) + 1
    return 1 - numerator / (p.sum(axis=(-2, -1)) + t.sum(axis=(-2, -1)) + 1)


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


def decoder_losses(mask_logits, iou_pred, score_logits, targets, multimask):
    """The unweighted loss terms of one decoder pass, per object.

    mask_logits (N, K, H, W) every slot at the targets' size; iou_pred (N, K); score_logits (N,);
    targets (N, H, W) bool; multimask (N,) bool: supervise the best multimask output, else slot 0.
    Returns {"focal", "dice", "iou", "score"}: (N,) each.
    """
    targets_k = jnp.broadcast_to(targets[:, None], mask_logits.shape)
    focal = sigmoid_focal_loss(mask_logits, targets_k)  # (N, K)
    dice = dice_loss(mask_logits, targets_k)
    ious = iou_loss(iou_pred, mask_logits, targets_k)
    combo = WEIGHTS["focal"] * focal[:, 1:] + WEIGHTS["dice"] * dice[:, 1:]
    slot = jnp.where(multimask, jnp.argmin(combo, axis=1) + 1, 0)

    def pick(x):
        return jnp.take_along_axis(x, slot[:, None], axis=1)[:, 0]

    present = targets.any(axis=(-2, -1))
    on = present.astype(jnp.float32)
    return {"focal": on * pick(focal), "dice": on * pick(dice),
            "iou": on * jnp.where(multimask, ious[:, 1:].mean(axis=1), ious[:, 0]),
            "score": object_score_loss(score_logits, present)}


def total_loss(terms):
    """The weighted sum of a dict of loss terms (arrays of any matching shape)."""
    return sum(WEIGHTS[name] * value for name, value in terms.items())
