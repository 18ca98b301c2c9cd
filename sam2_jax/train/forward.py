"""The differentiable pass over a batch of clips: prompt some frames, then track the others with memory, as
inference does (same module methods, same memory lookups), with simulated correction clicks.

As in the original trainer, the prompted frames (`Batch.prompt_frames`: frame 0 and possibly another) go
first, without memory, then the other frames in time order; prompted and corrected frames are stored as
conditioning memories, the others in the ring of tracked frames (`tracker.TrackerState`). Every object of a
batch follows the same order, so all of them step together through one `lax.scan`; which slot feeds which
position differs per object only through its corrected frames, and `with_memory_plan` asks
`plan.MemoryPlanner` (transformers' rules) on the host, adding, as the original trainer does, the object
pointers of later conditioning frames. Each decoder pass is scored with `losses.decoder_losses` on its
output slots (captured from the mask decoder), at the input resolution.

`tests/test_train_original.py` checks the loss and every gradient against the original trainer
(`SAM2Train` and `MultiStepMultiMasksAndIous` of the sam2 package). One difference stays on purpose: a mask
prompt's object pointer comes from the best multimask token, as in transformers and so at inference here,
where the original takes the single-mask token.

Correction clicks (frames marked in `Batch.correct`): `num_corrections` times, one click is drawn uniformly
from the error region of the current prediction (from the object itself with probability `click_from_truth`),
positive on a missed pixel and negative on a false one, and the decoder runs again with all clicks so far
and, as the original trainer does, the previous pass's low-res logits as its mask prompt; every pass is
scored. The frame's final prediction goes to memory. The clicks and logits are sampled pass after pass
without gradients; then every pass is decoded again as one batch, with gradients: one batched backward pass
instead of a loop whose every step is stored. (So, unlike the original, no gradient flows from a pass into
the pass before it through the fed-back logits.)

Shapes: B clips, T frames, N objects, S input size, h = S / 16, C = fpn_hidden_size, M = memory width.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from ..tracking import tracker
from ..tracking.plan import MemoryPlanner
from ..config import Sam2VideoConfig, replace
from ..models.layers import bilinear_matrix, resize_with
from ..models.mask_decoder import MaskDecoder
from ..models.sam2_video import NO_OBJ_SCORE, Sam2VideoModule
from .batches import Batch
from .conv import taps_convolutions
from .losses import decoder_losses


COND_WIDTH = 2  # conditioning memories per object: the original recipe prompts or corrects at most two frames


def training_config(config: Sam2VideoConfig) -> Sam2VideoConfig:
    """`config` as the original trainer decodes: single-mask outputs as they are (the decoder's stability
    fallback runs only at evaluation)."""
    return replace(config, mask_decoder_config=replace(config.mask_decoder_config,
                                                       dynamic_multimask_via_stability=False))


def with_memory_plan(config: Sam2VideoConfig, batch: Batch, inference: bool = False) -> Batch:
    """`batch` with its memory plan: the order in which the pass takes the frames (the prompted frames, then
    the others in time order, as the original trainer) and, per frame and object, the memory lookups of
    `plan.MemoryPlanner` (transformers' rules) and the slot the frame's memory goes to. Prompted and
    corrected frames go to conditioning slots (the original's `add_all_frames_to_correct_as_cond`).
    The original trainer lets every conditioning frame's object pointer reach every frame, also the frames
    before it; inference (and the original at evaluation) takes the pointers of past frames only.
    Returns a batch whose `plan` is {"order": (T,), "max_pointers": (T,), name: (T, N, ...) for the index
    arrays of `tracker.StepInputs`, "write_cond_slot", "write_recent_slot"}, all in processing order."""
    prompted = tuple(int(t) for t in np.flatnonzero(batch.prompt_frames))
    conditioning = batch.prompt_frames[:, None] | batch.correct
    counts = conditioning.sum(axis=0)
    if counts.max() > COND_WIDTH:
        raise ValueError(f"batch: expected at most {COND_WIDTH} prompted or corrected frames per object, got "
                         f"{int(counts.max())}")
    order = prompted + tuple(t for t in range(batch.correct.shape[0]) if t not in prompted)
    rows = [_object_plan(config, order, tuple(int(t) for t in np.flatnonzero(column)), inference)
            for column in conditioning.T]
    plan = {k: np.stack([r[k] for r in rows], axis=1) for k in rows[0] if k != "max_pointers"}
    plan["max_pointers"] = rows[0]["max_pointers"]  # the same for every object
    plan["order"] = np.asarray(order, np.int32)
    return batch._replace(plan=plan)


@functools.lru_cache(maxsize=4096)
def _object_plan(config: Sam2VideoConfig, order: tuple, conditioning: tuple, inference: bool) -> dict:
    """One object's lookups and write slots, (T, ...) arrays in processing `order`, the frames in
    `conditioning` stored as conditioning memories (see `with_memory_plan`)."""
    shape = tracker.BankShape.for_config(config, 1, COND_WIDTH)
    planner = MemoryPlanner(shape, config.num_maskmem)
    rows = []
    for t in order:
        lookup, max_pointers = planner.memory_inputs(0, t, False, len(order), streaming=False,
                                                     cond_width=COND_WIDTH)
        if not inference:  # every conditioning pointer, at its signed offset
            for slot, c in enumerate(planner.cond_frames[0]):
                lookup["pointer_cond_mask"][slot], lookup["pointer_cond_offset"][slot] = True, t - c
        if t in conditioning:
            cond_slot, ring_slot = planner.cond_slot_for(0, t), shape.ring
            planner.commit_cond(0, cond_slot, t)
        else:
            cond_slot, ring_slot = COND_WIDTH, planner.ring_slot_for(0, t)
            planner.commit_ring(0, ring_slot, t)
        rows.append({**lookup, "max_pointers": max_pointers, "write_cond_slot": cond_slot,
                     "write_recent_slot": ring_slot})
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


def _is_decoder_call(module, method_name: str) -> bool:
    return isinstance(module, MaskDecoder) and method_name == "__call__"


def decode(apply, config: Sam2VideoConfig, high_res, pix, points, labels, point_mask, first, mask_inputs=None,
           is_mask_prompt=None, previous_logits=None, has_previous=None):
    """`Sam2VideoModule.segment` with transformers' multimask rule, plus every slot of its mask decoder.

    points (N,K,2), labels (N,K), point_mask (N,K); label -1 is transformers' placeholder for "no points";
    first: bool (traced), an initial conditioning frame; previous_logits (N,4h,4w) fed back where
    has_previous (N,) (see `segment`).
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
                          previous_logits, has_previous, method=Sam2VideoModule.segment,
                          capture_intermediates=_is_decoder_call, mutable=["intermediates"])
    masks, iou, _, score = captured["intermediates"]["mask_decoder"]["__call__"][0]
    return out, masks[:, 0], iou[:, 0], score[:, 0, 0], multimask


def score_pass(slot_masks, iou, score, multimask, truth, weight):
    """Loss terms of one decoder pass summed over objects with `weight` (N,): of the multimask outputs
    (slots 1-3) where `multimask`, else of the single mask (slot 0), upsampled to the input size as the
    model upsamples its output, and, as the model outputs them, NO_OBJ_SCORE everywhere where the object
    score says absent (so such a pass trains the score, not the mask). Only the slots some counted object
    needs are scored (a full-resolution loss per slot is much of a step's cost)."""
    size = truth.shape[-1]
    h = slot_masks.shape[-1]
    score = score.astype(jnp.float32)

    def terms_of(slots: slice, weights):
        masks = slot_masks[:, slots].astype(jnp.float32)[..., None]
        up = resize_with(masks, bilinear_matrix(h, size), bilinear_matrix(h, size))[..., 0]
        up = jnp.where(score[:, None, None, None] > 0, up, NO_OBJ_SCORE)
        terms = decoder_losses(up, iou[:, slots].astype(jnp.float32), score, truth)
        return {name: jnp.sum(weights * value) for name, value in terms.items()}

    single, multi = weight * ~multimask, weight * multimask

    def both():
        return jax.tree_util.tree_map(jnp.add, terms_of(slice(0, 1), single), terms_of(slice(1, None), multi))

    def neither():
        return {name: jnp.zeros((), jnp.float32) for name in ("focal", "dice", "iou", "score")}

    branches = [neither, lambda: terms_of(slice(0, 1), single), lambda: terms_of(slice(1, None), multi), both]
    return jax.lax.switch(jnp.any(single > 0) + 2 * jnp.any(multi > 0), branches)


def sample_correction(key, pred_logits, truth, active, click_from_truth: float):
    """One correction click per object: a pixel drawn uniformly from the error region of `pred_logits > 0`
    (N,S,S) against truth (N,S,S) (from the whole object with probability `click_from_truth`), label 1 on a
    missed pixel and 0 on a false one. Returns points (N,2) (x, y), labels (N,), used (N,): active and the
    error region not empty. The pixel is the r-th of the region for a uniform rank r (one random number per
    object, not one per pixel)."""
    n, size = truth.shape[0], truth.shape[-1]
    k_truth, k_rank = jax.random.split(key)
    from_truth = jax.random.bernoulli(k_truth, click_from_truth, (n,))
    pred = (pred_logits > 0) & ~from_truth[:, None, None]
    error = (pred ^ truth).reshape(n, -1)
    count = error.sum(axis=1)
    rank = jnp.minimum(jnp.floor(jax.random.uniform(k_rank, (n,)) * count).astype(jnp.int32), count - 1)
    index = jnp.argmax(jnp.cumsum(error, axis=1, dtype=jnp.int32) > rank[:, None], axis=1)
    label = jnp.take_along_axis(truth.reshape(n, -1), index[:, None], axis=1)[:, 0].astype(jnp.int32)
    points = jnp.stack([index % size, index // size], axis=-1).astype(jnp.float32)
    return points, label, active & (count > 0)


def placeholder_rule(labels, point_mask):
    """transformers' (0, 0) label -1 placeholder point in slot 0 stands only while there is no real point."""
    has_clicks = point_mask[..., 1:].any(axis=-1)
    return point_mask.at[..., 0].set(jnp.where(labels[..., 0] == -1, ~has_clicks, point_mask[..., 0]))


def pass_prompts(points, labels, point_mask, num_passes: int):
    """The prompts of decoder passes 0..num_passes-1 from the final ones (N,K): pass p sees the frame's prompt
    (slots 0-1) and the first p correction clicks (slots 2..1+p). Returns (points, labels, point_mask) of
    shape (P*N, K)."""
    n, k = labels.shape
    seen = jnp.arange(k)[None, :] <= 1 + jnp.arange(num_passes)[:, None]  # (P, K)
    mask = placeholder_rule(labels[None], point_mask[None] & seen[:, None])
    return repeat_passes(points, num_passes), repeat_passes(labels, num_passes), mask.reshape(num_passes * n, k)


def repeat_passes(x, num_passes: int):
    """(N, ...) -> (P*N, ...): the same per-object array for each of P decoder passes (None stays None)."""
    if x is None or num_passes == 1:
        return x
    return jnp.broadcast_to(x, (num_passes,) + x.shape).reshape((num_passes * x.shape[0],) + x.shape[1:])


def _frame(apply, sampling_apply, config, num_corrections, click_from_truth, inference, pos, state, x):
    """One frame for all objects (a `lax.scan` step): memory attention, decoding with corrections, memory
    encoding. `x` holds the frame's slice of `forward`'s per-frame arrays. Returns (state, (high-res logits
    (N,S,S), summed loss terms)). `sampling_apply` holds constant params: it samples the correction clicks."""
    plan, (s0, s1, level2), truth, prompt, is_mask_prompt, correct, weight, first, key = x
    n = level2.shape[0]
    pix = apply(level2, pos, *tracker.read_memory(state, plan), plan["max_pointers"],
                jnp.broadcast_to(~first, (n,)), method=Sam2VideoModule.conditioned_features)
    pix = jnp.where(is_mask_prompt[:, None, None, None], level2, pix)  # as `tracker.track_step`

    def decode_and_score(passes, points, labels, point_mask, previous=None, has_previous=None):
        """All passes as one batch; pass 0 weighs every object, later passes only corrected ones."""
        def tile(x):
            return repeat_passes(x, passes)

        out, *scored = decode(apply, config, (tile(s0), tile(s1)), tile(pix), points, labels, point_mask, first,
                              tile(mask_inputs), tile(is_mask_prompt), previous, has_previous)
        pass_weight = jnp.concatenate([weight[None], jnp.broadcast_to(weight * correct, (passes - 1, n))])
        terms = score_pass(*scored, tile(truth), pass_weight.reshape(-1))
        last = jax.tree_util.tree_map(lambda v: v[-n:], out)  # uncorrected objects: the same as pass 0
        return last, terms

    mask_inputs = truth[..., None].astype(pix.dtype)
    padded = tuple(jnp.pad(v, ((0, 0), (0, num_corrections)) + ((0, 0),) * (v.ndim - 2)) for v in prompt)

    def with_corrections(_):
        frozen = jax.lax.stop_gradient((s0, s1, pix))

        def next_click(carry, xs):
            (points, labels, point_mask), previous = carry
            key, p = xs
            out = decode(sampling_apply, config, frozen[:2], frozen[2], points, labels,
                         placeholder_rule(labels, point_mask), first, mask_inputs, is_mask_prompt, previous,
                         correct & (p > 0))[0]
            click, label, used = sample_correction(key, out["high_res_masks"], truth, correct, click_from_truth)
            slot = 2 + p
            points = points.at[:, slot].set(jnp.where(correct[:, None], click, points[:, slot]))
            labels = labels.at[:, slot].set(jnp.where(correct, label, labels[:, slot]))
            point_mask = point_mask.at[:, slot].set(correct & used)
            logits = out["pred_masks"].astype(previous.dtype)  # the compute dtype (the decoder gives float32)
            return ((points, labels, point_mask), logits), logits

        low_res = 4 * level2.shape[1]
        no_previous = jnp.zeros((n, low_res, low_res), pix.dtype)
        (clicks, _), logits = jax.lax.scan(
            next_click, (padded, no_previous),
            (jax.random.split(key, num_corrections), jnp.arange(num_corrections)))
        clicks, logits = checkpoint_name((clicks, logits), "correction_passes")
        # Pass p > 0 gets pass p-1's logits back (from the sampling run: the same values, no gradient).
        previous = jnp.concatenate([no_previous[None], logits]).reshape((-1,) + no_previous.shape[1:])
        has_previous = jnp.concatenate([jnp.zeros((n,), bool), repeat_passes(correct, num_corrections)])
        return decode_and_score(num_corrections + 1, *pass_prompts(*clicks, num_corrections + 1), previous,
                                has_previous)

    def prompt_only(_):
        return decode_and_score(1, *padded)

    if num_corrections:
        out, terms = jax.lax.cond(jnp.any(correct), with_corrections, prompt_only, None)
    else:
        out, terms = prompt_only(None)
    # Inference binarises prompted frames' masks; the original trainer takes the sigmoid of every mask.
    binarize = (first | jnp.any(correct)) if inference else False
    memory_features = apply(level2, out["high_res_masks"], out["object_score_logits"], binarize,
                            state.cond_features.dtype, method=Sam2VideoModule.encode_memory)
    state = tracker.write_memory(state, plan["write_cond_slot"], plan["write_recent_slot"], memory_features,
                                 out["object_pointer"])
    return state, (out["high_res_masks"], terms)


def forward(module: Sam2VideoModule, params, batch: Batch, key, num_corrections: int = 7,
            click_from_truth: float = 0.1, inference: bool = False):
    """The whole pass, frames as one `lax.scan`. Returns (high-res mask logits (T,N,S,S), loss terms summed
    over frames, passes and objects: {"focal", "dice", "iou", "score"}). Padding objects and mask-prompted
    frames add no loss. Convolutions run as `conv.conv_by_taps` (fast gradients on CPUs).

    The pass runs as the original trainer: single-mask outputs are taken as they are (the decoder's
    stability fallback only runs at evaluation) and every mask goes to memory through a sigmoid (so that
    later frames' losses reach the prompted frames' masks), its features kept in the compute dtype. With
    `inference` it runs as the inference API instead: the stability fallback, prompted frames' masks
    binarised, features in bfloat16 (plan the batch with `with_memory_plan(..., inference=True)`).
    """
    with taps_convolutions():
        return _forward(module, params, batch, key, num_corrections, click_from_truth, inference)


def _forward(module, params, batch, key, num_corrections, click_from_truth, inference):
    if batch.plan is None:
        raise ValueError("batch: expected a memory plan (`forward.with_memory_plan`), got a batch without one")
    if not inference:
        module = Sam2VideoModule(training_config(module.config))
    config = module.config
    apply = functools.partial(module.apply, {"params": params})
    sampling_apply = functools.partial(module.apply, {"params": jax.lax.stop_gradient(params)})
    b, t, size = batch.pixels.shape[:3]
    n = batch.valid.shape[0]
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    (s0, s1, level2), pos = apply(batch.pixels.reshape(b * t, size, size, 3).astype(dtype),
                                  method=Sam2VideoModule.vision_features)
    order = jnp.asarray(batch.plan["order"])

    def per_object(x):  # (B*T, ...) -> (T, N, ...) in processing order
        return jnp.swapaxes(x.reshape((b, t) + x.shape[1:])[batch.clip_index], 0, 1)[order]

    def in_order(x):
        return jnp.asarray(x)[order]

    valid = jnp.asarray(batch.valid, jnp.float32)
    weight = valid * ~jnp.asarray(batch.is_mask_prompt)  # a mask prompt is its own output: nothing to learn
    plan = {k: jnp.asarray(v) for k, v in batch.plan.items() if k != "order"}
    xs = (plan, (per_object(s0), per_object(s1), per_object(level2)), in_order(batch.masks),
          tuple(in_order(v) for v in (batch.points, batch.labels, batch.point_mask)), in_order(batch.is_mask_prompt),
          in_order(batch.correct), weight[order], in_order(batch.prompt_frames), jax.random.split(key, t))
    frame = functools.partial(_frame, apply, sampling_apply, config, num_corrections, click_from_truth,
                              inference, pos)
    # Inference stores memory features in bfloat16; the original trainer keeps the compute dtype.
    state = tracker.init_state(tracker.BankShape.for_config(config, n, COND_WIDTH),
                               jnp.bfloat16 if inference else dtype)
    if t == 1:  # single images: no frames to scan, nothing worth recomputing
        _, (masks, terms) = frame(state, jax.tree_util.tree_map(lambda x: x[0], xs))
        return masks[None], terms
    # Rematerialised: the backward pass recomputes each frame from the bank and its inputs instead of storing
    # every intermediate of every frame (mostly elementwise loss and RoPE arrays, 10x the frame's compute). On
    # the 2-core CPU it is also faster: 3.0 s a step of 8 clips x 8 frames, against 3.5 s storing everything and
    # 3.3 s storing the matmul outputs too (rematerialising the image encoder as well changes nothing).
    # The sampled correction clicks and fed-back logits are kept, so the recomputation does not sample again.
    # Not unrolled: unrolling all 8 frames (with or without the correction scan) made the step slower, 2.9-3.0 s
    # against 2.6 s with the image encoder frozen, and compiled 2.5-3 times as long.
    keep_passes = jax.checkpoint_policies.save_only_these_names("correction_passes")
    _, (masks, terms) = jax.lax.scan(jax.checkpoint(frame, prevent_cse=False, policy=keep_passes), state, xs)
    return masks[jnp.argsort(order)], {k: v.sum() for k, v in terms.items()}
