"""Functional core of video tracking: a fixed-shape `TrackerState` pytree and pure, jitted step functions.

The memory bank lives on the device as fixed slots per object (objects are the batch axis N):
- `cond_*`: conditioning-frame memories (prompted frames), `cond_capacity` slots kept in insertion order;
- `recent_*`: a ring of `max_object_pointers_in_encoder` tracked-frame memories (the last six feed memory
  attention, all of them feed object pointers).
Which slot feeds which position (transformers looks memories up by frame index: frames t-1..t-6 and
pointers of t-1..t-15, skipping the ones it lacks) is decided on the host by `MemoryPlanner` from the
frame index of every slot, and handed to the step as index arrays. The step itself only gathers, attends,
decodes, encodes and scatters, so its shapes never change with the video length or the number of clicks.
Shapes: N objects, Cc conditioning slots, R ring slots, L = h*w tokens, M = 64, C = 256, K prompt points.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .config import Sam2Config
from .modeling.sam2_video import Sam2VideoModule

NUM_RECENT = 6  # num_maskmem - 1 tracked frames feed memory attention (transformers' constant is 7)


class TrackerState(NamedTuple):
    """The device memory bank; empty slots hold zeros and are never selected."""

    cond_features: jax.Array  # (N, Cc, L, M) bfloat16
    cond_pointers: jax.Array  # (N, Cc, C) float32
    recent_features: jax.Array  # (N, R, L, M) bfloat16
    recent_pointers: jax.Array  # (N, R, C) float32

    @property
    def nbytes(self) -> int:
        return sum(x.size * x.dtype.itemsize for x in self)


class StepInputs(NamedTuple):
    """Per-frame, per-object instructions for `track_step`, built on the host by the session."""

    use_memory: Any  # (N,) bool: memory attention (False on initial conditioning frames)
    is_mask_prompt: Any  # (N,) bool: the mask prompt is the output (transformers `_use_mask_as_output`)
    multimask: Any  # (N,) bool: transformers `_use_multimask`
    points: Any  # (N, K, 2) float32, input pixels
    labels: Any  # (N, K) int32
    point_mask: Any  # (N, K) bool: real points (the rest is bucket padding)
    binarize: Any  # () bool: binarise the masks for memory (any object prompted on this frame)
    cond_index: Any  # (N, Cu) int32: conditioning slots used, in insertion order (Cu = a bucket of the count)
    cond_mask: Any  # (N, Cu) bool: real entries of cond_index
    recent_index: Any  # (N, 6) int32 ring slot of frame t -/+ off for off = 6..1
    recent_mask: Any  # (N, 6) bool
    pointer_cond_mask: Any  # (N, Cu) bool: conditioning pointers used (of the cond_index slots)
    pointer_cond_offset: Any  # (N, Cu) int32 temporal offsets of those pointers
    pointer_index: Any  # (N, P-1) int32 ring slot of frame t -/+ d for d = 1..P-1
    pointer_mask: Any  # (N, P-1) bool
    max_pointers: Any  # () int32: transformers' max_object_pointers_to_use (normaliser + 1)
    write_cond_slot: Any  # (N,) int32: slot to store this frame's memory as conditioning, Cc = none
    write_recent_slot: Any  # (N,) int32: ring slot to store it as a tracked frame, R = none


@dataclasses.dataclass(frozen=True)
class BankShape:
    """Static sizes of the memory bank."""

    num_objects: int
    cond_capacity: int
    ring: int
    tokens: int
    memory_dim: int
    hidden: int

    @classmethod
    def for_config(cls, config: Sam2Config, num_objects: int, cond_capacity: int) -> "BankShape":
        h = config.prompt_encoder_config.image_embedding_size
        return cls(num_objects, cond_capacity, config.max_object_pointers_in_encoder, h * h,
                   config.memory_encoder_output_channels, config.vision_config.fpn_hidden_size)


def init_state(shape: BankShape, feature_dtype=jnp.bfloat16) -> TrackerState:
    """An empty bank; inference stores memory features in bfloat16 (training may keep its compute dtype)."""
    n, cc, r = shape.num_objects, shape.cond_capacity, shape.ring
    return TrackerState(
        cond_features=jnp.zeros((n, cc, shape.tokens, shape.memory_dim), feature_dtype),
        cond_pointers=jnp.zeros((n, cc, shape.hidden), jnp.float32),
        recent_features=jnp.zeros((n, r, shape.tokens, shape.memory_dim), feature_dtype),
        recent_pointers=jnp.zeros((n, r, shape.hidden), jnp.float32),
    )


# --------------------------------------------------------------------------------------- device side
def encode_frames(module: Sam2VideoModule, params, pixel_values):
    """pixel_values (T,H,W,3) normalised -> per-frame features (s0, s1, level2) and the level-2 sine PE."""
    return module.apply({"params": params}, pixel_values, method=Sam2VideoModule.vision_features)


def read_memory(state: TrackerState, lookup) -> tuple:
    """The memory inputs of `Sam2VideoModule.conditioned_features` after its first two: (memory (N,Cu+6,L,M),
    memory_tpos, memory_mask, pointers (N,Cu+P-1,C), pointer_offsets, pointer_mask), gathered from the bank
    by the index arrays of `lookup` (the `StepInputs` names cond_index .. pointer_mask, with an N axis):
    conditioning slots, then the ring slots of frames t-6..t-1; conditioning pointers, then those of frames
    t-1..t-15."""
    n = state.cond_pointers.shape[0]
    take = functools.partial(jnp.take_along_axis, axis=1)
    cond_index, pointer_index = lookup["cond_index"], lookup["pointer_index"]
    memory = jnp.concatenate([take(state.cond_features, cond_index[..., None, None]),
                              take(state.recent_features, lookup["recent_index"][..., None, None])], axis=1)
    cc = cond_index.shape[1]
    memory_tpos = jnp.asarray([NUM_RECENT] * cc + list(range(NUM_RECENT - 1, -1, -1)), jnp.int32)
    memory_tpos = jnp.broadcast_to(memory_tpos, (n, memory_tpos.shape[0]))
    memory_mask = jnp.concatenate([lookup["cond_mask"], lookup["recent_mask"]], axis=1)
    pointers = jnp.concatenate([take(state.cond_pointers, cond_index[..., None]),
                                take(state.recent_pointers, pointer_index[..., None])], axis=1)
    recent_offsets = jnp.arange(1, pointer_index.shape[1] + 1, dtype=jnp.int32)
    pointer_offsets = jnp.concatenate(
        [lookup["pointer_cond_offset"], jnp.broadcast_to(recent_offsets, pointer_index.shape)], axis=1)
    pointer_mask = jnp.concatenate([lookup["pointer_cond_mask"], lookup["pointer_mask"]], axis=1)
    return memory, memory_tpos, memory_mask, pointers, pointer_offsets, pointer_mask


def write_memory(state: TrackerState, cond_slot, recent_slot, features, pointer) -> TrackerState:
    """Store each object's features (N,h,w,M) and pointer (N,C) in its conditioning slot `cond_slot` (N,) or
    its ring slot `recent_slot` (N,); a slot past the end stores nothing."""
    n = features.shape[0]
    flat = features.reshape(n, -1, features.shape[-1])
    rows = jnp.arange(n)
    return TrackerState(
        cond_features=state.cond_features.at[rows, cond_slot].set(flat, mode="drop"),
        cond_pointers=state.cond_pointers.at[rows, cond_slot].set(pointer, mode="drop"),
        recent_features=state.recent_features.at[rows, recent_slot].set(flat, mode="drop"),
        recent_pointers=state.recent_pointers.at[rows, recent_slot].set(pointer, mode="drop"),
    )


def track_step(module: Sam2VideoModule, params, state: TrackerState, features, inputs: StepInputs,
               mask_inputs=None):
    """One frame for all objects: memory attention, decoding, memory encoding, bank update.

    features: ((s0 (1,4h,4w,C/8), s1 (1,2h,2w,C/4), level2 (1,h,w,C)), level2 PE (h,w,C)) of the frame;
    mask_inputs (N,H,W,1) or None. Returns (new state, outputs dict with pred_masks (N,4h,4w),
    object_score_logits (N,), object_pointer (N,C), maskmem_features (N,h,w,M) bf16, iou_scores (N,)).
    """
    (s0, s1, level2), pos = features
    n = state.cond_pointers.shape[0]
    h, w, c = level2.shape[1:]
    level2_n = jnp.broadcast_to(level2, (n, h, w, c))
    apply = functools.partial(module.apply, {"params": params})
    pix = apply(level2_n, pos, *read_memory(state, inputs._asdict()), inputs.max_pointers, inputs.use_memory,
                method=Sam2VideoModule.conditioned_features)
    pix = jnp.where(inputs.is_mask_prompt[:, None, None, None], level2_n, pix)  # raw features for mask prompts
    out = apply((s0, s1), pix, inputs.points, inputs.labels, inputs.point_mask, inputs.multimask, mask_inputs,
                inputs.is_mask_prompt, method=Sam2VideoModule.segment)
    memory_features = apply(level2_n, out.pop("high_res_masks"), out["object_score_logits"], inputs.binarize,
                            method=Sam2VideoModule.encode_memory)
    state = write_memory(state, inputs.write_cond_slot, inputs.write_recent_slot, memory_features,
                         out["object_pointer"])
    out["maskmem_features"] = memory_features
    return state, out


def track_frames(module: Sam2VideoModule, params, state: TrackerState, features, inputs: StepInputs):
    """`track_step` over T pre-encoded frames as one `lax.scan` (no mask prompts): features and inputs carry
    a leading T axis. Returns (state, outputs with a leading T axis)."""

    def body(carry, x):
        frame_features, frame_inputs = x
        (s0, s1, level2) = frame_features
        carry, out = track_step(module, params, carry, ((s0[None], s1[None], level2[None]), features[1]),
                                frame_inputs)
        return carry, out

    return jax.lax.scan(body, state, (features[0], inputs))


# ----------------------------------------------------------------------------------------- host side
def select_closest_cond_frames(frame_idx: int, cond_frames: list[int], limit: int) -> list[int]:
    """transformers `_select_closest_cond_frames`: the closest conditioning frame before `frame_idx`, the
    closest at or after it, then the nearest others, up to `limit` (all of them when they fit)."""
    if len(cond_frames) <= limit:
        return list(cond_frames)
    selected = []
    before = [t for t in cond_frames if t < frame_idx]
    after = [t for t in cond_frames if t >= frame_idx]
    if before:
        selected.append(max(before))
    if after:
        selected.append(min(after))
    rest = sorted((t for t in cond_frames if t not in selected), key=lambda t: abs(t - frame_idx))
    return selected + rest[:limit - len(selected)]



class MemoryPlanner:
    """Host mirror of the device bank: which frame each slot holds, per object; builds the index arrays of
    `StepInputs` with transformers' lookup rules (`_gather_memory_frame_outputs`, `_get_object_pointers`)."""

    def __init__(self, shape: BankShape, num_maskmem: int):
        self.shape = shape
        self.num_recent = num_maskmem - 1
        self.cond_frames = [[] for _ in range(shape.num_objects)]  # insertion order = slot order
        self.ring_frames = [[-1] * shape.ring for _ in range(shape.num_objects)]

    def cond_width(self) -> int:
        """Conditioning slots a step attends to: the largest count over objects, rounded up to a power of
        two (masked slots cost compute, so the step does not carry the whole capacity)."""
        count = max([len(c) for c in self.cond_frames] + [1])
        return min(1 << (count - 1).bit_length(), self.shape.cond_capacity)

    def memory_inputs(self, obj: int, frame_idx: int, reverse: bool, num_frames: int | None, streaming: bool,
                      cond_width: int):
        """Index arrays for one object tracked at `frame_idx`; `num_frames` None means unknown (streaming)."""
        shape = self.shape
        sign = -1 if reverse else 1
        cond = self.cond_frames[obj]
        cond_index = np.zeros(cond_width, np.int32)
        cond_index[:len(cond)] = np.arange(len(cond))
        cond_mask = np.zeros(cond_width, bool)
        cond_mask[:len(cond)] = True
        ring = self.ring_frames[obj]
        recent_index = np.zeros(NUM_RECENT, np.int32)
        recent_mask = np.zeros(NUM_RECENT, bool)
        for k, off in enumerate(range(NUM_RECENT, 0, -1)):
            if off > self.num_recent:
                continue
            target = frame_idx - sign * off
            if target >= 0 and target in ring:  # empty slots hold -1
                recent_index[k], recent_mask[k] = ring.index(target), True
        max_pointers = shape.ring if streaming else min(num_frames, shape.ring)
        pointer_cond_mask = np.zeros(cond_width, bool)
        pointer_cond_offset = np.zeros(cond_width, np.int32)
        for slot, t in enumerate(cond):
            if (t >= frame_idx) if reverse else (t <= frame_idx):
                pointer_cond_mask[slot] = True
                pointer_cond_offset[slot] = (frame_idx - t) * sign
        pointer_index = np.zeros(shape.ring - 1, np.int32)
        pointer_mask = np.zeros(shape.ring - 1, bool)
        for d in range(1, max_pointers):
            target = frame_idx - sign * d
            if target < 0 or (not streaming and target >= num_frames):
                break
            if target in ring:
                pointer_index[d - 1], pointer_mask[d - 1] = ring.index(target), True
        return dict(cond_index=cond_index, cond_mask=cond_mask, recent_index=recent_index, recent_mask=recent_mask,
                    pointer_cond_mask=pointer_cond_mask, pointer_cond_offset=pointer_cond_offset,
                    pointer_index=pointer_index, pointer_mask=pointer_mask), max_pointers

    def cond_slot_for(self, obj: int, frame_idx: int) -> int:
        """The conditioning slot that will hold `frame_idx`: its existing slot, else the next free one, else
        the slot of the conditioning frame farthest from it (the session keeps every conditioning memory on
        the host and reloads the closest ones when a frame needs them)."""
        cond = self.cond_frames[obj]
        if frame_idx in cond:
            return cond.index(frame_idx)
        if len(cond) < self.shape.cond_capacity:
            return len(cond)
        return int(np.argmax([abs(t - frame_idx) for t in cond]))

    def ring_slot_for(self, obj: int, frame_idx: int) -> int:
        """Ring slot for a tracked frame: its existing slot, else an empty one, else the farthest frame."""
        ring = self.ring_frames[obj]
        if frame_idx in ring:
            return ring.index(frame_idx)
        if -1 in ring:
            return ring.index(-1)
        return int(np.argmax([abs(t - frame_idx) for t in ring]))

    def commit_cond(self, obj: int, slot: int, frame_idx: int):
        cond = self.cond_frames[obj]
        if slot == len(cond):
            cond.append(frame_idx)
        else:
            cond[slot] = frame_idx

    def commit_ring(self, obj: int, slot: int, frame_idx: int):
        self.ring_frames[obj][slot] = frame_idx

    def add_objects(self, count: int, shape: BankShape):
        """Grow the mirror with `count` empty objects (the device state grows alongside)."""
        self.shape = shape
        self.cond_frames += [[] for _ in range(count)]
        self.ring_frames += [[-1] * shape.ring for _ in range(count)]

    def drop_object(self, obj: int):
        del self.cond_frames[obj]
        del self.ring_frames[obj]
        self.shape = dataclasses.replace(self.shape, num_objects=self.shape.num_objects - 1)
