"""The differentiable pass over a batch of clips: prompt frame 0, then track frames 1..T-1 with memory, as
inference does (same module methods, same memory lookups), with simulated correction clicks.

The memory bank is `tracker.TrackerState` with one conditioning slot (frame 0) and a ring of tracked
frames. Every object follows the same schedule (prompted on frame 0, tracked forward), so which slot feeds
which position is the same for all of them: `memory_plan` asks `tracker.MemoryPlanner` once per clip length,
and frames 1..T-1 are one `lax.scan`. Each decoder pass is scored with `losses.decoder_losses` on every
decoder slot (captured from the mask decoder), at the input resolution.

Correction clicks (frames marked in `Batch.correct`): `num_corrections` times, one click is drawn uniformly
from the error region of the current prediction (from the object itself with probability `click_from_truth`),
positive on a missed pixel and negative on a false one, and the decoder runs again with all clicks so far;
every pass is scored. The frame's final prediction goes to memory. Shapes: B clips, T frames, N objects,
S input size, h = S / 16, C = fpn_hidden_size, M = memory width.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import tracker
from ..config import Sam2Config
from ..modeling.layers import bilinear_matrix, resize_with
from ..modeling.mask_decoder import MaskDecoder
from ..modeling.sam2_video import Sam2VideoModule
from .batches import Batch
from .conv import taps_convolutions
from .losses import WEIGHTS, decoder_losses


@functools.lru_cache(maxsize=None)
def memory_plan(config: Sam2Config, num_frames: int) -> tuple[dict[str, np.ndarray], int]:
    """The memory lookups of every frame of a clip prompted on frame 0 and tracked forward, from
    `tracker.MemoryPlanner` (transformers' rules). Returns ({name: (T, ...) array} with the index arrays of
    `tracker.StepInputs` and the write slots, max_pointers)."""
    shape = tracker.BankShape.for_config(config, 1, 1)
    planner = tracker.MemoryPlanner(shape, config.num_maskmem)
    rows, max_pointers = [], None
    for t in range(num_frames):
        inputs, max_pointers = planner.memory_inputs(0, t, False, num_frames, streaming=False, cond_width=1)
        if t == 0:
            cond_slot, ring_slot = 0, shape.ring  # the conditioning slot; nothing in the ring
            planner.commit_cond(0, 0, 0)
        else:
            cond_slot, ring_slot = shape.cond_capacity, planner.ring_slot_for(0, t)
            planner.commit_ring(0, ring_slot, t)
        rows.append({**inputs, "write_cond_slot": cond_slot, "write_recent_slot": ring_slot})
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}, max_pointers


def read_bank(state: tracker.TrackerState, plan):
    """The memory inputs of `Sam2VideoModule.conditioned_features` for one frame's `plan` (no N axis), laid
    out as `tracker.track_step` lays them out: conditioning slots, then the ring slots of frames t-6..t-1;
    conditioning pointers, then those of frames t-1..t-15."""
    n, cc = state.cond_pointers.shape[0], plan["cond_index"].shape[0]
    cond_features = state.cond_features[:, plan["cond_index"]]
    memory = jnp.concatenate([cond_features, state.recent_features[:, plan["recent_index"]]], axis=1)
    tpos = jnp.asarray([tracker.NUM_RECENT] * cc + list(range(tracker.NUM_RECENT - 1, -1, -1)), jnp.int32)
    memory_mask = jnp.concatenate([plan["cond_mask"], plan["recent_mask"]])
    pointers = jnp.concatenate([state.cond_pointers[:, plan["cond_index"]],
                                state.recent_pointers[:, plan["pointer_index"]]], axis=1)
    offsets = jnp.concatenate([plan["pointer_cond_offset"],
                               jnp.arange(1, plan["pointer_index"].shape[0] + 1, dtype=jnp.int32)])
    pointer_mask = jnp.concatenate([plan["pointer_cond_mask"], plan["pointer_mask"]])

    def per_object(x):
        return jnp.broadcast_to(x, (n,) + x.shape)

    return memory, per_object(tpos), per_object(memory_mask), pointers, per_object(offsets), per_object(pointer_mask)


def write_bank(state: tracker.TrackerState, plan, features, pointer) -> tracker.TrackerState:
    """Store features (N,h,w,M) and pointer (N,C) in the plan's slots (a slot past the end stores nothing)."""
    flat = features.reshape(features.shape[0], -1, features.shape[-1])
    cond, ring = plan["write_cond_slot"], plan["write_recent_slot"]
    return tracker.TrackerState(
        cond_features=state.cond_features.at[:, cond].set(flat, mode="drop"),
        cond_pointers=state.cond_pointers.at[:, cond].set(pointer, mode="drop"),
        recent_features=state.recent_features.at[:, ring].set(flat, mode="drop"),
        recent_pointers=state.recent_pointers.at[:, ring].set(pointer, mode="drop"))


def _is_decoder_call(module, method_name: str) -> bool:
    return isinstance(module, MaskDecoder) and method_name == "__call__"


def decode(apply, config: Sam2Config, high_res, pix, points, labels, point_mask, first, mask_inputs=None,
           is_mask_prompt=None):
    """`Sam2VideoModule.segment` with transformers' multimask rule, plus every slot of its mask decoder.

    points (N,K,2), labels (N,K), point_mask (N,K); label -1 is transformers' placeholder for "no points";
    first: bool (traced), an initial conditioning frame.
    Returns (segment's outputs, slot logits (N,K',4h,4w), slot IoUs (N,K'), object score logits (N,),
    multimask (N,)).
    """
    n = pix.shape[0]
    num_points = jnp.sum(point_mask & (labels != -1), axis=1)
    multimask = ((config.multimask_min_pt_num <= num_points) & (num_points <= config.multimask_max_pt_num)
                 & config.multimask_output_in_sam & (first | config.multimask_output_for_tracking))
    if is_mask_prompt is None:
        is_mask_prompt = jnp.zeros((n,), bool)
    out, captured = apply(high_res, pix, points, labels, point_mask, multimask, mask_inputs, is_mask_prompt,
                          method=Sam2VideoModule.segment, capture_intermediates=_is_decoder_call,
                          mutable=["intermediates"])
    masks, iou, _, score = captured["intermediates"]["mask_decoder"]["__call__"][0]
    return out, masks[:, 0], iou[:, 0], score[:, 0, 0], multimask


def score_pass(slot_masks, iou, score, multimask, truth, weight):
    """Loss terms of one decoder pass summed over objects with `weight` (N,): slot logits upsampled to the
    input size as the model upsamples its output."""
    size = truth.shape[-1]
    h = slot_masks.shape[-1]
    up = resize_with(slot_masks.astype(jnp.float32)[..., None], bilinear_matrix(h, size),
                     bilinear_matrix(h, size))[..., 0]
    terms = decoder_losses(up, iou.astype(jnp.float32), score.astype(jnp.float32), truth, multimask)
    return {name: jnp.sum(weight * value) for name, value in terms.items()}


def sample_correction(key, pred_logits, truth, active, click_from_truth: float):
    """One correction click per object: a pixel drawn uniformly from the error region of `pred_logits > 0`
    (N,S,S) against truth (N,S,S) (from the whole object with probability `click_from_truth`), label 1 on a
    missed pixel and 0 on a false one. Returns points (N,2) (x, y), labels (N,), used (N,): active and the
    error region not empty."""
    n, size = truth.shape[0], truth.shape[-1]
    k_truth, k_pixel = jax.random.split(key)
    from_truth = jax.random.bernoulli(k_truth, click_from_truth, (n,))
    pred = (pred_logits > 0) & ~from_truth[:, None, None]
    error = (pred ^ truth).reshape(n, -1)
    index = jax.random.categorical(k_pixel, jnp.where(error, 0.0, -jnp.inf))
    label = jnp.take_along_axis(truth.reshape(n, -1), index[:, None], axis=1)[:, 0].astype(jnp.int32)
    points = jnp.stack([index % size, index // size], axis=-1).astype(jnp.float32)
    return points, label, active & error.any(axis=1)


def _frame(apply, config, num_corrections, click_from_truth, mask_inputs, pos, max_pointers, state, x):
    """One frame for all objects (a `lax.scan` step): memory attention, decoding with corrections, memory
    encoding. `x` holds the frame's slice of `forward`'s per-frame arrays. Returns (state, (high-res logits
    (N,S,S), summed loss terms))."""
    plan, (s0, s1, level2), truth, prompt, is_mask_prompt, correct, weight, first, key = x
    n = level2.shape[0]
    memory = read_bank(state, plan)
    pix = apply(level2, pos, *memory, max_pointers, jnp.broadcast_to(~first, (n,)),
                method=Sam2VideoModule.conditioned_features)
    pix = jnp.where(is_mask_prompt[:, None, None, None], level2, pix)  # as `tracker.track_step`

    points, labels, point_mask = (jnp.pad(x, ((0, 0), (0, num_corrections)) + ((0, 0),) * (x.ndim - 2))
                                  for x in prompt)

    def run_decoder(points, labels, point_mask):
        return decode(apply, config, (s0, s1), pix, points, labels, point_mask, first, mask_inputs, is_mask_prompt)

    def one_pass(carry, x):
        """Pass 0 decodes the prompt; pass p >= 1 adds a correction click in slot 1 + p and decodes again."""
        key, p = x

        def run(carry):
            out, points, labels, point_mask, terms = carry
            add = correct & (p > 0)
            click, label, used = sample_correction(key, jax.lax.stop_gradient(out["high_res_masks"]), truth, add,
                                                   click_from_truth)
            slot = 1 + p
            points = points.at[:, slot].set(jnp.where(add[:, None], click, points[:, slot]))
            labels = labels.at[:, slot].set(jnp.where(add, label, labels[:, slot]))
            point_mask = point_mask.at[:, slot].set(jnp.where(add, used, point_mask[:, slot]))
            has_clicks = point_mask[:, 1:].any(axis=1)  # the placeholder point stands only without real points
            point_mask = point_mask.at[:, 0].set(jnp.where(labels[:, 0] == -1, ~has_clicks, point_mask[:, 0]))
            out, *scored = run_decoder(points, labels, point_mask)
            pass_terms = score_pass(*scored, truth, jnp.where(p == 0, weight, weight * correct))
            return out, points, labels, point_mask, {k: terms[k] + pass_terms[k] for k in terms}

        return jax.lax.cond((p == 0) | jnp.any(correct), run, lambda carry: carry, carry), None

    shapes = jax.eval_shape(lambda: run_decoder(points, labels, point_mask)[0])
    no_output = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    zero = {name: jnp.zeros((), jnp.float32) for name in WEIGHTS}
    passes = (jax.random.split(key, num_corrections + 1), jnp.arange(num_corrections + 1))
    (out, *_, terms), _ = jax.lax.scan(one_pass, (no_output, points, labels, point_mask, zero), passes)
    binarize = first | jnp.any(correct)  # prompted frames go to memory binarised
    memory_features = apply(level2, out["high_res_masks"], out["object_score_logits"], binarize,
                            method=Sam2VideoModule.encode_memory)
    state = write_bank(state, plan, memory_features, out["object_pointer"])
    return state, (out["high_res_masks"], terms)


def forward(module: Sam2VideoModule, params, batch: Batch, key, num_corrections: int = 7,
            click_from_truth: float = 0.1):
    """The whole pass, frames as one `lax.scan`. Returns (high-res mask logits (T,N,S,S), loss terms summed
    over frames, passes and objects: {"focal", "dice", "iou", "score"}). Padding objects and mask-prompted
    frames add no loss. Convolutions run as `conv.conv_by_taps` (fast gradients on CPUs)."""
    with taps_convolutions():
        return _forward(module, params, batch, key, num_corrections, click_from_truth)


def _forward(module, params, batch, key, num_corrections, click_from_truth):
    config = module.config
    apply = functools.partial(module.apply, {"params": params})
    b, t, size = batch.pixels.shape[:3]
    n = batch.valid.shape[0]
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    (s0, s1, level2), pos = apply(batch.pixels.reshape(b * t, size, size, 3).astype(dtype),
                                  method=Sam2VideoModule.vision_features)

    def per_object(x):  # (B*T, ...) -> (T, N, ...)
        return jnp.swapaxes(x.reshape((b, t) + x.shape[1:])[batch.clip_index], 0, 1)

    def first_only(x, later):  # (N, ...) on frame 0, `later` on the others -> (T, N, ...)
        return jnp.concatenate([x[None], jnp.broadcast_to(later, (t - 1,) + x.shape).astype(x.dtype)])

    plan, max_pointers = memory_plan(config, t)
    placeholder = (np.zeros((n, 2, 2), np.float32), np.array([[-1, -1]] * n, np.int32),
                   np.array([[True, False]] * n))  # transformers' "no points" on tracked frames
    prompt = tuple(first_only(jnp.asarray(x), p) for x, p in zip(
        (batch.points, batch.labels, batch.point_mask), placeholder))
    is_mask_prompt = first_only(jnp.asarray(batch.is_mask_prompt), False)
    valid = jnp.asarray(batch.valid, jnp.float32)
    weight = first_only(valid * ~jnp.asarray(batch.is_mask_prompt), valid)
    first = jnp.arange(t) == 0
    xs = (jax.tree_util.tree_map(jnp.asarray, plan), (per_object(s0), per_object(s1), per_object(level2)),
          jnp.asarray(batch.masks), prompt, is_mask_prompt, jnp.asarray(batch.correct), weight, first,
          jax.random.split(key, t))
    mask_inputs = jnp.asarray(batch.masks[0])[..., None].astype(dtype)
    frame = functools.partial(_frame, apply, config, num_corrections, click_from_truth, mask_inputs, pos,
                              jnp.int32(max_pointers))
    state = tracker.init_state(tracker.BankShape.for_config(config, n, 1))
    # Rematerialised: the backward pass recomputes each frame from the bank and its inputs instead of storing
    # every intermediate of every frame (mostly elementwise loss and RoPE arrays, 10x the frame's compute).
    _, (masks, terms) = jax.lax.scan(jax.checkpoint(frame, prevent_cse=False), state, xs)
    return masks, {k: v.sum() for k, v in terms.items()}
