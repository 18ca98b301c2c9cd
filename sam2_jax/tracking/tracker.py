"""Functional core of video tracking: a fixed-shape `TrackerState` pytree and pure, jitted step functions.

The memory bank lives on the device as fixed slots per object (objects are the batch axis N):
- `cond_*`: conditioning-frame memories (prompted frames), `cond_capacity` slots kept in insertion order;
- `recent_*`: a ring of `max_object_pointers_in_encoder` tracked-frame memories (the last six feed memory
  attention, all of them feed object pointers).
Which slot feeds which position (transformers looks memories up by frame index: frames t-1..t-6 and
pointers of t-1..t-15, skipping the ones it lacks) is decided on the host by `plan.MemoryPlanner` from
the frame index of every slot, and handed to the step as index arrays. The step itself only gathers,
attends, decodes, encodes and scatters, so its shapes never change with the video length or the number of
clicks. This module is the device side only; it never imports `plan` (the host side sits above it).
Shapes: N objects, Cc conditioning slots, R ring slots, L tokens per memory (h*w for SAM 2, the perceiver's
latents for EdgeTAM), M = 64, C = 256, K prompt points. The module is the config's (`edgetam_video.video_module`):
its methods are called by name, so EdgeTAM's overrides run.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ..config import EdgeTamVideoConfig, Sam2VideoConfig
from ..models.edgetam_video import memory_feature_dtype, memory_tokens
from ..models.sam2_video import Sam2VideoModule

NUM_RECENT = 6  # num_maskmem - 1 tracked frames feed memory attention (transformers' constant is 7)


class TrackerState(NamedTuple):
    """The device memory bank; empty slots hold zeros and are never selected."""

    cond_features: jax.Array  # (N, Cc, L, M) `BankShape.feature_dtype` (bfloat16 for SAM 2)
    cond_pointers: jax.Array  # (N, Cc, C) float32
    recent_features: jax.Array  # (N, R, L, M) as cond_features
    recent_pointers: jax.Array  # (N, R, C) float32

    @property
    def nbytes(self) -> int:
        """Bytes of the whole bank on the device."""
        return sum(x.size * x.dtype.itemsize for x in self)


class StepInputs(NamedTuple):
    """Per-frame, per-object instructions for `track_step`, built on the host (`plan.SessionPlan`)."""

    use_memory: Any  # (N,) bool: memory attention (False on initial conditioning frames)
    is_mask_prompt: Any  # (N,) bool: the mask prompt is the output (transformers `_use_mask_as_output`)
    multimask: Any  # (N,) bool: transformers `_use_multimask`
    points: Any  # (N, K, 2) float32, input pixels
    labels: Any  # (N, K) int32
    point_mask: Any  # (N, K) bool: real points (the rest is bucket padding)
    binarize: Any  # (N,) bool: binarise the mask for memory (SAM 2: any object prompted on this frame; EdgeTAM:
    #                 this object prompted on it)
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
    objects: Any  # () int32: the live rows, the first ones (the CPU skips the inert rows after them)


def prompt_bucket(n: int) -> int:
    """Round a prompt length up to a power of two so the number of compilations stays small."""
    return 1 << max(n - 1, 0).bit_length()


MIN_SESSION_POINTS = 8  # a session's steps take at least 8 point slots: clicks up to 8 share one program


CPU_OBJECT_ROWS = 16  # a CPU session's bank has at least this many object rows


def object_bucket(n: int) -> int:
    """The object rows of a session's bank and steps for `n` objects: a power of two (1, 2, 4, 8, 16, ...),
    the rows past `n` inert (no memory read or written, outputs dropped), so object counts share programs.
    On the CPU at least `CPU_OBJECT_ROWS`: there a step loops over the live rows only (`track_step`), so one
    program serves 1 to 16 objects at the cost of the objects it has."""
    rows = prompt_bucket(n)
    return max(rows, CPU_OBJECT_ROWS) if jax.default_backend() == "cpu" else rows


@dataclasses.dataclass(frozen=True)
class BankShape:
    """Static sizes of the memory bank, and the dtype of its memory features."""

    num_objects: int
    cond_capacity: int
    ring: int
    tokens: int
    memory_dim: int
    hidden: int
    feature_dtype: Any = jnp.dtype(jnp.bfloat16)

    @classmethod
    def for_config(cls, config: Sam2VideoConfig | EdgeTamVideoConfig, num_objects: int, cond_capacity: int,
                   dtype=jnp.float32) -> "BankShape":
        """The bank's shapes for a model config, an object count and conditioning slots per object, for a model
        of compute `dtype` (`edgetam_video.memory_feature_dtype`: SAM 2 stores bfloat16, EdgeTAM `dtype`)."""
        return cls(num_objects, cond_capacity, config.max_object_pointers_in_encoder, memory_tokens(config),
                   config.memory_encoder_output_channels, config.vision_config.fpn_hidden_size,
                   memory_feature_dtype(config, dtype))


def init_state(shape: BankShape, feature_dtype=None, xp=jnp) -> TrackerState:
    """An empty bank, its memory features in `feature_dtype` (default `shape.feature_dtype`; training may keep
    its compute dtype). `xp=np` makes it on the host (a session puts it on the device as it is, with no program
    to compile)."""
    feature_dtype = shape.feature_dtype if feature_dtype is None else feature_dtype
    n, cc, r = shape.num_objects, shape.cond_capacity, shape.ring
    return TrackerState(
        cond_features=xp.zeros((n, cc, shape.tokens, shape.memory_dim), feature_dtype),
        cond_pointers=xp.zeros((n, cc, shape.hidden), jnp.float32),
        recent_features=xp.zeros((n, r, shape.tokens, shape.memory_dim), feature_dtype),
        recent_pointers=xp.zeros((n, r, shape.hidden), jnp.float32),
    )


def set_object_memories(state: TrackerState, obj, features, pointers, conditioning: bool) -> TrackerState:
    """The bank with object row `obj`'s conditioning (or ring) slots replaced by features (Cc|R, L, M) and
    pointers (Cc|R, C): the session's refills from its host archive, as one small jitted program a bank shape."""
    if conditioning:
        return state._replace(cond_features=state.cond_features.at[obj].set(features),
                              cond_pointers=state.cond_pointers.at[obj].set(pointers))
    return state._replace(recent_features=state.recent_features.at[obj].set(features),
                          recent_pointers=state.recent_pointers.at[obj].set(pointers))


# --------------------------------------------------------------------------------------- device side
def encode_frames(module: Sam2VideoModule, params, pixel_values):
    """pixel_values (T,H,W,3) normalised -> per-frame features (s0, s1, level2) and the level-2 sine PE."""
    return module.apply({"params": params}, pixel_values, method="vision_features")


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
    """Store each object's features (N,h,w,M) or (N,L,M) and pointer (N,C) in its conditioning slot `cond_slot` (N,) or
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
    object_score_logits (N,), object_pointer (N,C), maskmem_features (N,h,w,M) for SAM 2 or (N,L,M) for EdgeTAM
    in the bank's dtype, iou_scores (N,)).

    On the CPU the objects run one at a time, in a loop over the `inputs.objects` live rows (inert rows cost
    nothing; their outputs are zeros): XLA:CPU's batched matmuls measured 26% (memory attention) to 40% (memory
    encoder) slower per object than single ones (`benchmarks.step_parts`, tiny, 4 objects). A GPU needs the
    batch to fill its cores: there all rows run at once.
    """
    if jax.default_backend() != "cpu":
        return _track_objects(module, params, state, features, inputs, mask_inputs)
    n = state.cond_pointers.shape[0]

    def row(tree, i):  # object row i of every per-object leaf (scalars are shared)
        return jax.tree_util.tree_map(lambda x: jax.lax.dynamic_slice_in_dim(x, i, 1) if jnp.ndim(x) else x, tree)

    def put(tree, i, part):
        return jax.tree_util.tree_map(lambda x, y: jax.lax.dynamic_update_slice_in_dim(x, y, i, 0), tree, part)

    def one(i, carry):
        state, outputs = carry
        new_row, out = _track_objects(module, params, row(state, i), features, row(inputs, i), row(mask_inputs, i))
        return put(state, i, new_row), put(outputs, i, out)

    shapes = jax.eval_shape(lambda: _track_objects(module, params, row(state, 0), features, row(inputs, 0),
                                                   row(mask_inputs, 0))[1])
    outputs = jax.tree_util.tree_map(lambda x: jnp.zeros((n,) + x.shape[1:], x.dtype), shapes)
    return jax.lax.fori_loop(0, jnp.minimum(inputs.objects, n), one, (state, outputs))


def _track_objects(module: Sam2VideoModule, params, state: TrackerState, features, inputs: StepInputs,
                   mask_inputs=None):
    """`track_step` on every row at once (the rows are the batch axis)."""
    (s0, s1, level2), pos = features
    n = state.cond_pointers.shape[0]
    h, w, c = level2.shape[1:]
    level2_n = jnp.broadcast_to(level2, (n, h, w, c))
    apply = functools.partial(module.apply, {"params": params})
    pix = apply(level2_n, pos, *read_memory(state, inputs._asdict()), inputs.max_pointers, inputs.use_memory,
                method="conditioned_features")
    pix = jnp.where(inputs.is_mask_prompt[:, None, None, None], level2_n, pix)  # raw features for mask prompts
    out = apply((s0, s1), pix, inputs.points, inputs.labels, inputs.point_mask, inputs.multimask, mask_inputs,
                inputs.is_mask_prompt, method="segment")
    memory_features = apply(level2_n, out.pop("high_res_masks"), out["object_score_logits"], inputs.binarize,
                            state.cond_features.dtype, method="encode_memory")
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


def encode_frames_apart(module: Sam2VideoModule, params, pixel_values):
    """`encode_frames`, each frame's features returned apart: a tuple of T ((s0, s1, level2) with a leading
    axis of 1, PE), so the session caches frames with no slicing program of its own."""
    (s0, s1, level2), pe = encode_frames(module, params, pixel_values)
    return tuple(((s0[i:i + 1], s1[i:i + 1], level2[i:i + 1]), pe) for i in range(pixel_values.shape[0]))


def track_frames_apart(module: Sam2VideoModule, params, state: TrackerState, frame_features, inputs: StepInputs):
    """`track_frames` on T frames' features as the session caches them (`encode_frames_apart`): stacked here,
    inside the program, rather than by a concatenation program of their own."""
    stacked = tuple(jnp.concatenate([f[0][k] for f in frame_features]) for k in range(3))
    return track_frames(module, params, state, (stacked, frame_features[0][1]), inputs)
