"""Video propagation as pure functions: `prepare` and `propagate`, one jitted program per video shape.

`propagate(params, config, frames, prompts)` tracks N objects through a uint8 video (T, H, W, 3) with no host
round trip per frame, so it can be `jax.jit`-ed, `jax.vmap`-ed over videos and sharded (see `sharding`).
It gives the numbers of `Sam2VideoModel` driven as a user drives transformers' session: each prompted frame
is added and run in frame order (so every prompted frame is an initial conditioning frame, decoded without
memory), then `propagate_in_video_iterator` from the first prompted frame (forward), from the last one
(`reverse`), or forward then backward from the first (`both_directions`, as `propagate_in_video`).

Two phases, each a loop on the device:
1. the prompted frames: every object's conditioning memories (transformers attends to all of them, future
   ones included, so they exist before tracking starts);
2. the tracked frames, one `lax.scan` step each, memories looked up by frame index (`plan.memory_lookup`,
   the rule the session uses too).
Shapes: T frames, N objects, P prompted frames per object, K points per prompt, S the model's input size.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import processing
from . import plan, tracker
from ..config import Sam2VideoConfig
from ..models.layers import antialias_bilinear_matrix
from ..models.edgetam_video import video_module
from ..models.sam2_video import NO_OBJ_SCORE


class Prompts(NamedTuple):
    """Prompts of N objects, each on up to P frames, padded to fixed shapes (build them with `make_prompts`).

    frame_idx (N, P) int32: the frame of each prompt, -1 for an unused entry;
    points (N, P, K, 2) float32: (x, y) in pixels of the video frame; labels (N, P, K) int32: 1 positive,
    0 negative, -1 padding (not a point);
    boxes (N, P, 4) float32 (x1, y1, x2, y2) in pixels and has_box (N, P) bool, or both None;
    masks (N, P, H, W) bool at the video's size and has_mask (N, P) bool, or both None.
    An entry holds points, a box (with or without points) or a mask.
    """

    frame_idx: jax.Array
    points: jax.Array
    labels: jax.Array
    boxes: jax.Array | None = None
    has_box: jax.Array | None = None
    masks: jax.Array | None = None
    has_mask: jax.Array | None = None


def make_prompts(objects, height: int, width: int, max_prompts: int | None = None,
                 max_points: int | None = None) -> Prompts:
    """Fixed-shape `Prompts` from per-object lists of prompts.

    objects: one list per object of dicts {"frame": int, "points": [[x, y], ...], "labels": [1, 0, ...],
    "box": [x1, y1, x2, y2], "mask": (height, width) bool array}, each with points, a box, points and a box,
    or a mask. max_prompts / max_points pad P and K further (for shape buckets shared by several videos).
    """
    if not isinstance(objects, (list, tuple)) or not objects:
        raise ValueError(f"objects: expected a non-empty list with one list of prompts per object, got {objects!r}")
    for n, prompts in enumerate(objects):
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise ValueError(f"objects[{n}]: expected a non-empty list of prompts (an object needs one), got "
                             f"{prompts!r}")
    num_prompts = max(len(p) for p in objects)
    num_points = max([len(q.get("points") or []) for p in objects for q in p] + [1])
    p_max = num_prompts if max_prompts is None else max_prompts
    k_max = num_points if max_points is None else max_points
    if p_max < num_prompts or k_max < num_points:
        raise ValueError(f"max_prompts, max_points: expected at least {num_prompts} and {num_points}, got "
                         f"{max_prompts} and {max_points}")
    n = len(objects)
    frame_idx = np.full((n, p_max), -1, np.int32)
    points = np.zeros((n, p_max, k_max, 2), np.float32)
    labels = np.full((n, p_max, k_max), -1, np.int32)
    boxes, has_box = np.zeros((n, p_max, 4), np.float32), np.zeros((n, p_max), bool)
    any_mask = any("mask" in q for p in objects for q in p)
    masks = np.zeros((n, p_max, height, width), bool) if any_mask else None
    has_mask = np.zeros((n, p_max), bool) if any_mask else None
    for i, prompts in enumerate(objects):
        for j, q in enumerate(prompts):
            where = f"objects[{i}][{j}]"
            unknown = set(q) - {"frame", "points", "labels", "box", "mask"}
            if unknown:
                raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
            if "frame" not in q or isinstance(q["frame"], bool) or not isinstance(q["frame"], (int, np.integer)):
                raise ValueError(f"{where}.frame: expected a frame index (int), got {q.get('frame')!r}")
            frame_idx[i, j] = q["frame"]
            pts = np.asarray(q.get("points") or np.zeros((0, 2)), np.float32).reshape(-1, 2)
            lbl = np.asarray(q.get("labels") if q.get("labels") is not None else [], np.int32).reshape(-1)
            if len(pts) != len(lbl):
                raise ValueError(f"{where}.labels: expected one label per point ({len(pts)}), got {len(lbl)}")
            points[i, j, :len(pts)], labels[i, j, :len(lbl)] = pts, lbl
            if q.get("box") is not None:
                boxes[i, j], has_box[i, j] = np.asarray(q["box"], np.float32).reshape(4), True
            if q.get("mask") is not None:
                mask = np.asarray(q["mask"])
                if mask.shape != (height, width):
                    raise ValueError(f"{where}.mask: expected shape {(height, width)}, got {mask.shape}")
                masks[i, j], has_mask[i, j] = mask.astype(bool), True
    if not has_box.any():
        boxes = has_box = None
    return Prompts(frame_idx, points, labels, boxes, has_box, masks, has_mask)


# ------------------------------------------------------------------------------------------ frames in
def prepare(config: Sam2VideoConfig, frames) -> jax.Array:
    """uint8 frames (T, H, W, 3) -> pixel values (T, S, S, 3) float32, channels last, on the device.

    Numerically the processor's (`processing.preprocess_images`): torchvision's antialiased bilinear resize
    with its fixed-point uint8 kernel, bit for bit, then `(x - mean*255) / (std*255)`.
    """
    _check_frames(frames)
    size = config.image_size
    x = jnp.asarray(frames)
    for axis, out_size in ((2, size), (1, size)):  # width first, as the processor
        if x.shape[axis] != out_size:
            x = processing._resize_axis_fixed_point(x, axis, out_size, xp=jnp)
    # A table of the 256 x 3 normalised values, computed as the processor computes them (XLA would turn the
    # division into a multiplication by the reciprocal, one ulp off).
    table = (np.arange(256, dtype=np.float32)[:, None] - processing._MEAN_255) / processing._STD_255
    return jnp.asarray(table)[x.astype(jnp.int32), np.arange(3)]


def _check_frames(frames):
    if not hasattr(frames, "dtype") or not hasattr(frames, "shape"):
        raise TypeError(f"frames: expected a uint8 array (T, H, W, 3), got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise TypeError(f"frames: expected dtype uint8 (T, H, W, 3), got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames: expected shape (T, H, W, 3) with T >= 1, got {tuple(frames.shape)}")


# ------------------------------------------------------------------------------------------- checks
def check_prompts(prompts: Prompts, frames_shape, num_frames=None) -> None:
    """Shape checks always; value checks (frames inside the video, every object prompted, points inside the
    frame, one kind of prompt per entry) when the values are concrete (outside a user's jit or vmap)."""
    if not isinstance(prompts, Prompts):
        raise TypeError(f"prompts: expected functional.Prompts (see make_prompts), got {type(prompts).__name__}")
    t, height, width = frames_shape[0], frames_shape[1], frames_shape[2]
    if np.ndim(prompts.frame_idx) != 2:
        raise ValueError(f"prompts.frame_idx: expected shape (N, P), got {np.shape(prompts.frame_idx)}")
    n, p = np.shape(prompts.frame_idx)
    expected = {"points": (n, p, None, 2), "labels": (n, p, None), "boxes": (n, p, 4), "has_box": (n, p),
                "masks": (n, p, height, width), "has_mask": (n, p)}
    k = np.shape(prompts.points)[2] if np.ndim(prompts.points) == 4 else None
    for name, shape in expected.items():
        value = getattr(prompts, name)
        if value is None:
            if name in ("points", "labels"):
                raise ValueError(f"prompts.{name}: expected an array of shape {shape}, got None")
            continue
        shape = tuple(k if s is None else s for s in shape)
        if tuple(np.shape(value)) != shape:
            raise ValueError(f"prompts.{name}: expected shape {shape} (N={n} objects, P={p} prompts, K={k} "
                             f"points), got {tuple(np.shape(value))}")
    for flag, data in (("has_box", "boxes"), ("has_mask", "masks")):
        if (getattr(prompts, flag) is None) != (getattr(prompts, data) is None):
            raise ValueError(f"prompts.{flag}: expected it together with prompts.{data}")
    leaves = [x for x in prompts if x is not None] + ([] if num_frames is None else [num_frames])
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return  # traced values (inside the caller's jit or vmap) cannot be checked here
    frame_idx = np.asarray(prompts.frame_idx)
    limit = t if num_frames is None else int(num_frames)
    used = frame_idx >= 0
    if ((frame_idx < -1) | (frame_idx >= limit)).any():
        i, j = np.argwhere((frame_idx < -1) | (frame_idx >= limit))[0]
        raise ValueError(f"prompts.frame_idx[{i}][{j}]: expected a frame in [0, {limit - 1}] (or -1 for an unused "
                         f"entry), got {frame_idx[i, j]}")
    empty = ~used.any(axis=1)
    if empty.any():
        raise ValueError(f"prompts.frame_idx[{int(np.argmax(empty))}]: object has no prompt (every entry is -1)")
    for i in range(n):
        frames_i = frame_idx[i][used[i]]
        if len(set(frames_i.tolist())) != len(frames_i):
            raise ValueError(f"prompts.frame_idx[{i}]: expected distinct frames per object, got {frames_i.tolist()}")
    labels = np.asarray(prompts.labels)
    has_points = (labels >= 0).any(axis=2)
    has_box = np.zeros((n, p), bool) if prompts.has_box is None else np.asarray(prompts.has_box)
    has_mask = np.zeros((n, p), bool) if prompts.has_mask is None else np.asarray(prompts.has_mask)
    if (~np.isin(labels, (-1, 0, 1))).any():
        raise ValueError(f"prompts.labels: expected 1 (positive), 0 (negative) or -1 (padding), got "
                         f"{sorted(set(labels[~np.isin(labels, (-1, 0, 1))].tolist()))}")
    bad = used & ~(has_points | has_box | has_mask)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"prompts[{i}][{j}]: prompt on frame {frame_idx[i, j]} has no points, box or mask")
    bad = used & has_mask & (has_points | has_box)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"prompts.masks[{i}][{j}]: a mask cannot be given together with points or a box")
    points = np.asarray(prompts.points)
    real = used[..., None] & (labels >= 0)
    outside = real & ~((points[..., 0] >= 0) & (points[..., 0] <= width) & (points[..., 1] >= 0)
                       & (points[..., 1] <= height))
    if outside.any():
        i, j, q = np.argwhere(outside)[0]
        raise ValueError(f"prompts.points[{i}][{j}][{q}]: expected x in [0, {width}] and y in [0, {height}], got "
                         f"{points[i, j, q].tolist()}")


# --------------------------------------------------------------------------------------- propagation
def propagate(params, config: Sam2VideoConfig, frames, prompts: Prompts, *, reverse: bool = False,
              both_directions: bool = False, num_frames=None) -> dict:
    """Track every object of `prompts` through `frames` (uint8 (T, H, W, 3)) as one jitted program.

    reverse: from the last prompted frame back to frame 0; both_directions: forward from the first prompted
    frame to the end, then backward from it to frame 0. num_frames (int or traced scalar): the real length
    of a video padded to T frames (a shape bucket); frames past it are never visited.
    Returns a dict of arrays with a leading T axis, in frame order:
    pred_masks (T, N, 1, s, s) low-res mask logits (s = S/4; -1024 where an object is absent or a frame was
    not visited), object_score_logits (T, N, 1), iou_scores (T, N, 1), visited (T,) bool.
    """
    _check_frames(frames)
    check_prompts(prompts, frames.shape, num_frames)
    if num_frames is None:
        num_frames = frames.shape[0]
    return _propagate(params, config, frames, prompts, jnp.asarray(num_frames, jnp.int32), reverse=bool(reverse),
                      both_directions=bool(both_directions))


@functools.partial(jax.jit, static_argnames=("config", "reverse", "both_directions", "objects_axis"))
def _propagate(params, config, frames, prompts, num_frames, *, reverse, both_directions, objects_axis=None):
    """`propagate` after the checks. objects_axis: the mesh axis that splits the objects when this runs
    per device under `shard_map` (`sharding`): the start frame is then agreed over it."""
    module = video_module(config)  # SAM 2's or EdgeTAM's, by the config
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    n, p = prompts.frame_idx.shape
    prompts = _sorted_by_frame(prompts)
    state = tracker.init_state(tracker.BankShape.for_config(config, n, p, dtype))

    def encode(t):
        pixels = prepare(config, jax.lax.dynamic_slice_in_dim(frames, t, 1)).astype(dtype)
        (s0, s1, level2), pe = tracker.encode_frames(module, params, pixels)
        return (s0, s1, level2), pe

    state, cond = _prompted_frames(module, params, config, frames, prompts, state, encode)
    return _tracked_frames(module, params, config, prompts.frame_idx, state, cond, num_frames, encode,
                           frames.shape[0], reverse, both_directions, objects_axis)


def _sorted_by_frame(prompts: Prompts) -> Prompts:
    """Each object's prompt entries in frame order, unused ones last: the session stores conditioning frames
    in the order they were run, which sets the order of memories (and so the float rounding)."""
    key = jnp.where(prompts.frame_idx >= 0, prompts.frame_idx, jnp.iinfo(jnp.int32).max)
    order = jnp.argsort(key, axis=1, stable=True)

    def take(x):
        if x is None:
            return None
        return jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1)

    return Prompts(*(take(x) for x in prompts))


def _prompt_step_inputs(config: Sam2VideoConfig, prompts: Prompts, slot, prompted, frame_shape, num_slots):
    """`tracker.StepInputs` of an initial conditioning frame: each prompted object's points (box corners
    first, labels 2 and 3) scaled to the input size, as the processor and the session build them."""
    n = prompts.frame_idx.shape[0]
    height, width = frame_shape
    size = config.image_size
    ratio = np.asarray([size / width, size / height], np.float32)
    rows = jnp.arange(n)
    points = prompts.points[rows, slot] * ratio  # (N, K, 2)
    labels = prompts.labels[rows, slot]
    real = labels >= 0
    if prompts.boxes is not None:
        corners = prompts.boxes[rows, slot].reshape(n, 2, 2) * ratio
        has_box = prompts.has_box[rows, slot]
        points = jnp.concatenate([corners, points], axis=1)
        labels = jnp.concatenate([jnp.broadcast_to(jnp.asarray([2, 3], jnp.int32), (n, 2)), labels], axis=1)
        real = jnp.concatenate([jnp.stack([has_box, has_box], axis=1), real], axis=1)
    num_points = real.sum(axis=1)
    # No points and no box: transformers' single (0, 0) point of label -1, a real token.
    none = num_points == 0
    points = jnp.where(none[:, None, None] & (jnp.arange(points.shape[1]) == 0)[None, :, None], 0.0, points)
    labels = jnp.where(none[:, None] & (jnp.arange(labels.shape[1]) == 0), -1, labels)
    real = real | (none[:, None] & (jnp.arange(real.shape[1]) == 0))
    is_mask = prompted & (prompts.has_mask[rows, slot] if prompts.has_mask is not None else False)
    multimask = _multimask(config, True, num_points)
    return _step_inputs(use_memory=jnp.zeros(n, bool), is_mask_prompt=is_mask, multimask=multimask,
                        points=points, labels=labels, point_mask=real, binarize=jnp.ones(n, bool),
                        lookup=plan.no_memory_lookup(n, num_slots, config.max_object_pointers_in_encoder),
                        write_cond_slot=jnp.where(prompted, slot, num_slots),
                        write_recent_slot=jnp.full(n, config.max_object_pointers_in_encoder))


def _multimask(config: Sam2VideoConfig, is_init, num_points):
    """transformers `_use_multimask`: num_points counts box corners (and no padding)."""
    return (config.multimask_output_in_sam & (is_init | config.multimask_output_for_tracking)
            & (config.multimask_min_pt_num <= num_points) & (num_points <= config.multimask_max_pt_num))


def _step_inputs(lookup, **fields) -> tracker.StepInputs:
    """Every row is a live object here."""
    return tracker.StepInputs(**fields, **lookup, objects=jnp.int32(fields["use_memory"].shape[0]))


def _prompted_frames(module, params, config, frames, prompts: Prompts, state, encode):
    """Phase 1: decode every prompted frame without memory and store each object's conditioning memory in
    the slot of its prompt entry. Returns (state, cond) with cond = (pred_masks (N,P,s,s), scores (N,P),
    iou (N,P)), each object's outputs on its prompted frames."""
    n, p = prompts.frame_idx.shape
    t = frames.shape[0]
    num_unique = min(n * p, t)
    big = jnp.iinfo(jnp.int32).max
    flat = jnp.where(prompts.frame_idx >= 0, prompts.frame_idx, big).reshape(-1)
    unique = jnp.unique(flat, size=num_unique, fill_value=big)
    s = config.image_size // 4
    cond = (jnp.full((n, p, s, s), NO_OBJ_SCORE, jnp.float32), jnp.zeros((n, p), jnp.float32),
            jnp.zeros((n, p), jnp.float32))
    rows = jnp.arange(n)

    def run(carry, frame):
        state, cond = carry
        match = prompts.frame_idx == frame
        prompted = match.any(axis=1)
        slot = jnp.argmax(match, axis=1)
        inputs = _prompt_step_inputs(config, prompts, slot, prompted, frames.shape[1:3], p)
        mask_inputs = None
        if prompts.masks is not None:
            masks = prompts.masks[rows, slot].astype(jnp.float32)
            mask_inputs = _resize_masks(masks, config.image_size)[..., None]
        state, out = tracker.track_step(module, params, state, encode(frame), inputs, mask_inputs)
        write = lambda store, value: store.at[rows, slot].set(jnp.where(  # noqa: E731
            prompted.reshape((n,) + (1,) * (value.ndim - 1)), value, store[rows, slot]))
        cond = (write(cond[0], out["pred_masks"]), write(cond[1], out["object_score_logits"]),
                write(cond[2], out["iou_scores"]))
        return state, cond

    def body(carry, frame):
        carry = jax.lax.cond(frame < big, run, lambda c, f: c, carry, frame)
        return carry, None

    (state, cond), _ = jax.lax.scan(body, (state, cond), unique)
    return state, cond


def _resize_masks(masks, size: int):
    """Mask prompts (N, H, W) in {0, 1} -> (N, S, S): antialiased bilinear resize, then >= 0.5, as the
    processor (`Sam2VideoProcessor._prepare_masks`); a no-op at the input size."""
    h, w = masks.shape[1:]
    if (h, w) == (size, size):
        return masks
    rows, cols = antialias_bilinear_matrix(h, size), antialias_bilinear_matrix(w, size)
    resized = jnp.einsum("sh,nhw,tw->nst", rows, masks, cols, precision=jax.lax.Precision.HIGHEST)
    return (resized >= 0.5).astype(jnp.float32)


def _visit_order(cond_frames, num_frames, num_steps: int, reverse: bool, both_directions: bool, objects_axis):
    """The frames of phase 2 in processing order, padded to `num_steps` steps: frame (S,), backward (S,),
    valid (S,), the start frame and the number of forward steps. transformers yields nothing when asked to
    go backward from frame 0."""
    used = cond_frames >= 0
    first = jnp.min(jnp.where(used, cond_frames, jnp.iinfo(jnp.int32).max))
    last = jnp.max(jnp.where(used, cond_frames, -1))
    if objects_axis is not None:
        first, last = jax.lax.pmin(first, objects_axis), jax.lax.pmax(last, objects_axis)
    k = jnp.arange(num_steps, dtype=jnp.int32)
    if reverse and not both_directions:
        count = jnp.where(last > 0, last + 1, 0)
        return last - k, jnp.ones(num_steps, bool), k < count, last, jnp.int32(0)
    forward = num_frames - first
    backward = jnp.where(both_directions & (first > 0), first + 1, 0)
    frame = jnp.where(k < forward, first + k, first - (k - forward))
    return frame, k >= forward, k < forward + backward, first, forward


def _tracked_frames(module, params, config, cond_frames, state, cond, num_frames, encode, length: int,
                    reverse: bool, both_directions: bool, objects_axis):
    """Phase 2: one scan step per visited frame, in the session's processing order; each object either
    returns its stored prompted-frame output or is tracked with memory. With both directions, the backward
    pass starts from the forward pass's memories of the 15 frames after the start frame (`head`), which the
    session reads back from its archive."""
    n, p = cond_frames.shape
    ring = config.max_object_pointers_in_encoder
    num_steps = length + 1 if both_directions else length
    frame, backward, valid, start, forward_steps = _visit_order(cond_frames, num_frames, num_steps, reverse,
                                                                both_directions, objects_axis)
    rows = jnp.arange(n)
    ring_frames = jnp.full((n, ring), -1, jnp.int32)
    head = (state.recent_features, state.recent_pointers, ring_frames) if both_directions else None
    s = config.image_size // 4

    def run(carry, x):
        state, ring_frames, head = carry
        t, back, k = x
        if both_directions:  # the backward pass starts from the forward pass's first memories
            state, ring_frames = jax.lax.cond(
                k == forward_steps,
                lambda: (state._replace(recent_features=head[0], recent_pointers=head[1]), head[2]),
                lambda: (state, ring_frames))
        is_back = back if both_directions else jnp.asarray(reverse)
        here = cond_frames == t
        is_cond = here.any(axis=1)
        slot = jnp.where(is_cond, ring, t % ring)
        lookup = plan.memory_lookup(t, is_back, cond_frames, ring_frames, num_frames, config.num_maskmem)
        inputs = _step_inputs(
            lookup, use_memory=jnp.ones(n, bool), is_mask_prompt=jnp.zeros(n, bool),
            multimask=jnp.full(n, _multimask(config, False, 0)), points=jnp.zeros((n, 1, 2), jnp.float32),
            labels=jnp.full((n, 1), -1, jnp.int32), point_mask=jnp.ones((n, 1), bool), binarize=jnp.zeros(n, bool),
            write_cond_slot=jnp.full(n, p), write_recent_slot=slot)
        state, out = tracker.track_step(module, params, state, encode(t), inputs)
        ring_frames = ring_frames.at[rows, slot].set(t, mode="drop")
        if both_directions:  # frames start+1 .. start+15 of the forward pass, kept for the backward pass
            keep = jnp.where(~back & (t - start >= 1) & (t - start < ring), slot, ring)
            flat = out["maskmem_features"].reshape(n, -1, out["maskmem_features"].shape[-1])
            head = (head[0].at[rows, keep].set(flat, mode="drop"),
                    head[1].at[rows, keep].set(out["object_pointer"], mode="drop"),
                    head[2].at[rows, keep].set(t, mode="drop"))
        cond_slot = jnp.argmax(here, axis=1)
        pick = lambda stored, value: jnp.where(  # noqa: E731
            is_cond.reshape((n,) + (1,) * (value.ndim - 1)), stored[rows, cond_slot], value.astype(jnp.float32))
        y = (pick(cond[0], out["pred_masks"]), pick(cond[1], out["object_score_logits"]),
             pick(cond[2], out["iou_scores"]))
        return (state, ring_frames, head), y

    def skip(carry, x):
        return carry, (jnp.zeros((n, s, s), jnp.float32), jnp.zeros(n, jnp.float32), jnp.zeros(n, jnp.float32))

    def body(carry, x):
        return jax.lax.cond(x[3], run, skip, carry, x[:3])

    steps = jnp.arange(num_steps, dtype=jnp.int32)
    _, (pred, score, iou) = jax.lax.scan(body, (state, ring_frames, head), (frame, backward, steps, valid))
    # Each frame's output is that of the last step that visited it (the backward pass re-runs the start frame).
    step_of_frame = jnp.full(length, -1, jnp.int32).at[jnp.where(valid, frame, length)].max(steps, mode="drop")
    visited = step_of_frame >= 0
    at = jnp.maximum(step_of_frame, 0)
    seen = lambda x, fill: jnp.where(visited.reshape((-1,) + (1,) * (x.ndim - 1)), x[at], fill)  # noqa: E731
    return {"pred_masks": seen(pred, NO_OBJ_SCORE)[:, :, None], "object_score_logits": seen(score, NO_OBJ_SCORE)[..., None],
            "iou_scores": seen(iou, 0.0)[..., None], "visited": visited}
