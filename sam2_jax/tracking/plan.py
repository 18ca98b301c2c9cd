"""The memory plan of video tracking, on the host: which memory slots feed which frame, and why.

transformers looks memories up by frame index (frames t-1..t-6 and pointers of t-1..t-15, skipping the
ones it lacks; every conditioning frame, or the closest ones). The device keeps them in fixed slots
(`tracker.TrackerState`), so the lookup rule, `memory_lookup`, turns the frame index held by each slot
into the index arrays of `tracker.StepInputs`: on the host for the session (`MemoryPlanner` mirrors the
slots), inside jit for `functional.propagate` (whose slots carry their frame indices). `SessionPlan` runs transformers' per-object
state machine for a frame of a `Sam2VideoInferenceSession` (conditioning or tracked, prompts, multimask),
the bookkeeping after it, and refills of the device slots from the session's host archive. None of it
depends on the model's numbers, so it stays plain Python; the device side is `tracker`.
Shapes: N objects, K prompt points, S input size, h = S / 16, Cc conditioning slots, R ring slots.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..config import EdgeTamVideoConfig, Sam2VideoConfig
from . import tracker
from .tracker import MIN_SESSION_POINTS, NUM_RECENT, BankShape, prompt_bucket

_set_object_memories = jax.jit(tracker.set_object_memories, static_argnames="conditioning", donate_argnums=0)


def resize_bank(state: tracker.TrackerState, keep, shape: BankShape) -> tracker.TrackerState:
    """The bank's rows `keep`, in that order, then empty rows up to `shape.num_objects`: on the host, put back
    on the device as it is (objects added or removed are rare; no program compiles for it)."""
    rows = np.asarray(list(keep), np.int64)

    def resized(x):
        host = np.asarray(x)[rows]
        return np.concatenate([host, np.zeros((shape.num_objects - len(rows),) + host.shape[1:], host.dtype)])

    return jax.device_put(tracker.TrackerState(*(resized(x) for x in state)))


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


def memory_lookup(frame_idx, reverse, cond_frames, ring_frames, num_frames, num_maskmem: int,
                  streaming: bool = False, xp=jnp) -> dict:
    """transformers' memory selection for frame `frame_idx` (`_gather_memory_frame_outputs`,
    `_get_object_pointers`) as the index arrays of `tracker.StepInputs` (and max_pointers), from the frame
    index held by every slot: cond_frames (N, Cc) conditioning slots in insertion order, ring_frames (N, R)
    tracked-frame slots, -1 for empty ones. Memories of frames t -/+ 6..1 and pointers of frames t -/+
    1..R-1 that some slot holds are used, the rest skipped; pointers stop at the video's ends (only at 0 when
    streaming). `xp` is jax.numpy inside jit (`functional`) or numpy on the host (the session)."""
    ring = ring_frames.shape[1]
    sign = xp.where(reverse, -1, 1)
    offsets = xp.arange(NUM_RECENT, 0, -1)
    target = frame_idx - sign * offsets
    match = ring_frames[:, None, :] == target[None, :, None]
    recent_mask = match.any(axis=2) & ((offsets <= num_maskmem - 1) & (target >= 0))[None]
    cond_mask = cond_frames >= 0
    pointer_cond_mask = cond_mask & xp.where(reverse, cond_frames >= frame_idx, cond_frames <= frame_idx)
    max_pointers = xp.int32(ring) if streaming else xp.minimum(num_frames, ring).astype(xp.int32)
    distance = xp.arange(1, ring)
    pointer_target = frame_idx - sign * distance
    usable = (distance < max_pointers) & (pointer_target >= 0)
    if not streaming:
        usable = usable & (pointer_target < num_frames)
    pointer_match = ring_frames[:, None, :] == pointer_target[None, :, None]
    return dict(cond_index=xp.broadcast_to(xp.arange(cond_frames.shape[1], dtype=xp.int32), cond_frames.shape),
                cond_mask=cond_mask,
                recent_index=xp.argmax(match, axis=2).astype(xp.int32), recent_mask=recent_mask,
                pointer_cond_mask=pointer_cond_mask,
                pointer_cond_offset=xp.where(pointer_cond_mask, (frame_idx - cond_frames) * sign, 0).astype(xp.int32),
                pointer_index=xp.argmax(pointer_match, axis=2).astype(xp.int32),
                pointer_mask=pointer_match.any(axis=2) & usable[None], max_pointers=max_pointers)


def no_memory_lookup(num_objects: int, cond_slots: int, ring: int) -> dict:
    """The lookup of a frame decoded without memory (nothing selected)."""
    n = num_objects
    ints = lambda *shape: jnp.zeros(shape, jnp.int32)  # noqa: E731
    falses = lambda *shape: jnp.zeros(shape, bool)  # noqa: E731
    return dict(cond_index=ints(n, cond_slots), cond_mask=falses(n, cond_slots), recent_index=ints(n, NUM_RECENT),
                recent_mask=falses(n, NUM_RECENT), pointer_cond_mask=falses(n, cond_slots),
                pointer_cond_offset=ints(n, cond_slots), pointer_index=ints(n, ring - 1),
                pointer_mask=falses(n, ring - 1), max_pointers=jnp.int32(ring))


class MemoryPlanner:
    """Host mirror of the device bank: which frame each slot holds, per object; builds the index arrays of
    `StepInputs` with transformers' lookup rules (`_gather_memory_frame_outputs`, `_get_object_pointers`)."""

    def __init__(self, shape: BankShape, num_maskmem: int, num_objects: int | None = None):
        """`num_objects` (default: the bank's rows) real objects; the bank's rows past them are inert."""
        self.shape = shape
        self.num_recent = num_maskmem - 1
        count = shape.num_objects if num_objects is None else num_objects
        self.cond_frames = [[] for _ in range(count)]  # insertion order = slot order
        self.ring_frames = [[-1] * shape.ring for _ in range(count)]

    def cond_width(self) -> int:
        """Conditioning slots a step attends to: the largest count over objects, rounded up to a power of
        two (masked slots cost compute, so the step does not carry the whole capacity)."""
        count = max([len(c) for c in self.cond_frames] + [1])
        return min(1 << (count - 1).bit_length(), self.shape.cond_capacity)

    def memory_inputs(self, obj: int, frame_idx: int, reverse: bool, num_frames: int | None, streaming: bool,
                      cond_width: int):
        """`memory_lookup`'s index arrays for one object tracked at `frame_idx` (without the N axis) and
        max_pointers; `num_frames` None means unknown (streaming)."""
        cond = np.full((1, cond_width), -1, np.int32)
        cond[0, :len(self.cond_frames[obj])] = self.cond_frames[obj]
        ring = np.asarray([self.ring_frames[obj]], np.int32)
        lookup = memory_lookup(frame_idx, reverse, cond, ring, num_frames, self.num_recent + 1, streaming, xp=np)
        max_pointers = int(lookup.pop("max_pointers"))
        return {key: value[0] for key, value in lookup.items()}, max_pointers

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
        """Record that conditioning slot `slot` of object `obj` now holds frame `frame_idx`."""
        cond = self.cond_frames[obj]
        if slot == len(cond):
            cond.append(frame_idx)
        else:
            cond[slot] = frame_idx

    def commit_ring(self, obj: int, slot: int, frame_idx: int):
        """Record that ring slot `slot` of object `obj` now holds tracked frame `frame_idx`."""
        self.ring_frames[obj][slot] = frame_idx

    def add_objects(self, count: int, shape: BankShape):
        """Grow the mirror with `count` empty objects, the bank to `shape` (the device state grows alongside)."""
        self.shape = shape
        self.cond_frames += [[] for _ in range(count)]
        self.ring_frames += [[-1] * shape.ring for _ in range(count)]

    def drop_object(self, obj: int, shape: BankShape):
        """Forget object index `obj`'s slots (the session removed it); the bank becomes `shape`."""
        del self.cond_frames[obj]
        del self.ring_frames[obj]
        self.shape = shape


@dataclasses.dataclass
class ObjectStep:
    """transformers `forward`'s decision for one object on one frame."""

    reverse: bool  # tracking direction (transformers' argument, overwritten by an initial conditioning frame)
    ran: bool = True  # False: a conditioning frame without new inputs, whose stored output is returned
    as_cond: bool = False  # stored as a conditioning memory (else as a tracked frame)
    use_memory: bool = True  # memory attention (off on initial conditioning frames and mask prompts)
    coords: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((1, 2), np.float32))  # (K,2) pixels
    labels: np.ndarray = dataclasses.field(default_factory=lambda: np.array([-1], np.int32))  # (K,); -1: none
    mask: np.ndarray | None = None  # (S,S,1) mask prompt
    multimask: bool = False  # transformers `_use_multimask`
    from_prompt: bool = False  # points or a mask on this frame
    consumes_new_input: bool = False  # the object leaves the session's `obj_with_new_inputs`
    write_cond_slot: int | None = None  # set with the step's inputs: the conditioning slot written, Cc = none
    write_recent_slot: int | None = None  # set with the step's inputs: the ring slot written, R = none


def mask_prompts(steps: list[ObjectStep], image_size: int, rows: int) -> np.ndarray:
    """The mask prompts of a frame (rows,S,S,1) bool, empty for objects without one and for the inert rows:
    always an array (the processor's masks are binary), so that frames with and without masks share a program."""
    masks = np.zeros((rows, image_size, image_size, 1), bool)
    for i, p in enumerate(steps):
        if p.mask is not None:
            masks[i] = p.mask > 0
    return masks


def _scan_bucket(inputs: tracker.StepInputs) -> tuple:
    """The static shapes of a step: frames share one scan only if their prompt and memory buckets match."""
    return inputs.points.shape, inputs.cond_index.shape


class SessionPlan:
    """transformers' host-side state machine of video tracking, on a `Sam2VideoInferenceSession`: what each
    object does on a frame (`plan_frame`), the `StepInputs` that tell the device (`step_inputs`, refilling
    device slots from the host archive when needed), and the bookkeeping after it (`advance`, `record`).
    It reads and writes the session's objects, its device bank `_state` and its slot mirror `_planner`."""

    def __init__(self, config: Sam2VideoConfig, session, dtype=jnp.float32):
        """`dtype`: the model's compute dtype (EdgeTAM's bank stores its memories in it)."""
        self.config = config
        self.session = session
        self.dtype = dtype

    def bank_shape(self, num_objects: int) -> BankShape:
        """The device bank for `num_objects` objects: `tracker.object_bucket` rows."""
        return BankShape.for_config(self.config, tracker.object_bucket(num_objects),
                                    self.session.max_conditioning_frames, self.dtype)

    def ensure_bank(self):
        """Create the device bank and its mirror, or grow both when objects were added since. The bank is
        made and resized on the host and put on the device as it is: no program compiles for it."""
        session = self.session
        n = session.get_obj_num()
        shape = self.bank_shape(n)
        if session._state is None:
            session._memory_batch_first = isinstance(self.config, EdgeTamVideoConfig)  # `get_output`'s layout
            session._state = jax.device_put(tracker.init_state(shape, xp=np))
            session._planner = MemoryPlanner(shape, self.config.num_maskmem, n)
        elif len(session._planner.cond_frames) < n:
            session._state = resize_bank(session._state, range(session._state.cond_pointers.shape[0]), shape)
            session._planner.add_objects(n - len(session._planner.cond_frames), shape)

    def plan_frame(self, frame_idx: int, reverse: bool) -> list[ObjectStep]:
        """transformers `forward`'s per-object decisions for this frame, without touching the session."""
        cfg, session = self.config, self.session
        steps = []
        for i, track in enumerate(session._objects):
            obj_id = session.obj_idx_to_id(i)
            has_new = obj_id in session.obj_with_new_inputs
            if not has_new and frame_idx in track.cond_outputs:
                steps.append(ObjectStep(reverse=reverse, ran=False, as_cond=True, use_memory=False))
                continue
            step = ObjectStep(reverse=reverse)
            is_init = False
            points = mask = None
            if has_new:
                is_init = frame_idx not in track.tracked
                if is_init:
                    reverse = False  # transformers overwrites its argument: later objects see it too
                points = track.point_inputs.get(frame_idx)
                mask = track.mask_inputs.get(frame_idx)
                step.consumes_new_input = points is not None or mask is not None
            if points is not None and mask is not None:
                raise ValueError("input_points, input_masks: point_inputs and mask_inputs should not appear as "
                                 f"input simultaneously on the same frame ({frame_idx}) for object {obj_id}")
            if not is_init and mask is None and not track.cond_outputs:
                raise ValueError(f"frame_idx: object {obj_id} has no prompted frame to track from yet (add inputs "
                                 f"and run model(frame_idx=...) on that frame first)")
            num_pts = 0 if points is None else len(points[1])
            step.from_prompt = points is not None or mask is not None
            step.as_cond = is_init or (step.from_prompt and session.add_all_frames_to_correct_as_cond)
            step.use_memory = not is_init and mask is None
            step.reverse, step.mask = reverse, mask
            step.multimask = (cfg.multimask_output_in_sam and (is_init or cfg.multimask_output_for_tracking)
                              and cfg.multimask_min_pt_num <= num_pts <= cfg.multimask_max_pt_num)
            if num_pts:  # an empty point list is transformers' "no points" as well
                step.coords, step.labels = points
            steps.append(step)
        planner = session._planner
        for i, step in enumerate(steps):  # capacity check before anything changes
            if step.as_cond and step.ran and planner is not None and i < len(planner.cond_frames):
                planner.cond_slot_for(i, frame_idx)
        return steps

    def step_inputs(self, frame_idx: int, steps: list[ObjectStep], run_mem_encoder: bool, refill: bool):
        """`StepInputs` for one frame, setting the slots each step writes; with `refill=False`, None when the
        device slots lack memories this frame looks up (the caller then runs it on its own, with a refill)."""
        session = self.session
        planner = session._planner
        rows, max_pointers = [], None
        cond_width = planner.cond_width()
        for i, p in enumerate(steps):
            if p.use_memory and not (self._ring_ready(i, frame_idx, p.reverse) and self._cond_ready(i, frame_idx)):
                if not refill:
                    return None
                self._refill(i, frame_idx, p.reverse)
                self._reload_cond(i, frame_idx)
            inputs, max_pointers = planner.memory_inputs(i, frame_idx, p.reverse, session.num_frames,
                                                         session.streaming, cond_width)
            rows.append(inputs)
            write = p.ran and run_mem_encoder
            p.write_cond_slot = (planner.cond_slot_for(i, frame_idx) if write and p.as_cond
                                 else planner.shape.cond_capacity)
            p.write_recent_slot = (planner.ring_slot_for(i, frame_idx) if write and not p.as_cond
                                   else planner.shape.ring)
        live = len(steps)
        inert = [ObjectStep(reverse=False, use_memory=False)] * (planner.shape.num_objects - live)
        for p in inert:
            p.write_cond_slot, p.write_recent_slot = planner.shape.cond_capacity, planner.shape.ring
        rows += [{key: np.zeros_like(value) for key, value in rows[0].items()}] * len(inert)
        steps = steps + inert
        n = len(steps)
        k = max(prompt_bucket(max(len(p.labels) for p in steps)), MIN_SESSION_POINTS)
        points = np.zeros((n, k, 2), np.float32)
        labels = np.full((n, k), -1, np.int32)
        point_mask = np.zeros((n, k), bool)
        for i, p in enumerate(steps):
            m = len(p.labels)
            points[i, :m], labels[i, :m], point_mask[i, :m] = p.coords, p.labels, True
        return tracker.StepInputs(
            use_memory=np.array([p.use_memory for p in steps]),
            is_mask_prompt=np.array([p.mask is not None for p in steps]),
            multimask=np.array([p.multimask for p in steps]),
            points=points, labels=labels, point_mask=point_mask,
            binarize=self._binarize(steps),
            max_pointers=np.int32(max_pointers),
            write_cond_slot=np.array([p.write_cond_slot for p in steps], np.int32),
            write_recent_slot=np.array([p.write_recent_slot for p in steps], np.int32), objects=np.int32(live),
            **{key: np.stack([r[key] for r in rows]) for key in rows[0]})

    def _binarize(self, steps: list[ObjectStep]) -> np.ndarray:
        """Per object, whether its mask is binarised for memory: transformers' SAM 2 encodes all objects'
        memories together, binarised if any object that ran was prompted; EdgeTAM encodes each object's own,
        binarised if it was prompted."""
        if isinstance(self.config, EdgeTamVideoConfig):
            return np.array([p.ran and p.from_prompt for p in steps])
        return np.full(len(steps), any(p.from_prompt for p in steps if p.ran))

    def plan_scan(self, frames: list[int], reverse: bool) -> list[tuple[int, list[ObjectStep], tracker.StepInputs]]:
        """The leading `frames` that can run as one scan: tracked frames (no prompts) whose memories are in the
        device slots and whose inputs share one shape; each is planned and advanced. Possibly none."""
        planned = []
        for f in frames:
            steps = self.plan_frame(f, reverse)
            if any(p.ran and (p.from_prompt or p.as_cond) for p in steps):
                break  # prompted frames run on their own: the scan compiles for tracking shapes only
            inputs = self.step_inputs(f, steps, True, refill=False)
            if inputs is None:
                break
            if planned and _scan_bucket(inputs) != _scan_bucket(planned[0][2]):
                break
            self.advance(f, steps)
            planned.append((f, steps, inputs))
        return planned

    def advance(self, frame_idx: int, steps: list[ObjectStep]) -> None:
        """The session's control-flow bookkeeping after a frame (transformers `forward` after its loop):
        which inputs were consumed, which frames are conditioning or tracked, which slots hold what."""
        session = self.session
        planner = session._planner
        for i, p in enumerate(steps):
            if not p.ran:
                continue
            track = session._objects[i]
            if p.consumes_new_input:
                session.obj_with_new_inputs.remove(session.obj_idx_to_id(i))
            if p.as_cond:
                track.cond_outputs.setdefault(frame_idx, None)  # its values are recorded by `record`
                if p.write_cond_slot < planner.shape.cond_capacity:
                    planner.commit_cond(i, p.write_cond_slot, frame_idx)
                # A frame that becomes conditioning stops being a tracked memory (add_all_frames_to_correct_as_cond).
                self._forget_tracked_memories(i, [frame_idx])
                if p.from_prompt and session.clear_non_cond_mem_around_input:
                    r = self.config.num_maskmem
                    self._forget_tracked_memories(i, range(frame_idx - r, frame_idx + r + 1))
            else:
                track.tracked[frame_idx] = {"reverse": p.reverse}
                if p.write_recent_slot < planner.shape.ring:
                    planner.commit_ring(i, p.write_recent_slot, frame_idx)
                    track.memories[frame_idx] = None  # filled by `record` when the archive is kept
        if session.streaming:
            self._forget_old_streamed_frames()

    def _forget_old_streamed_frames(self) -> None:
        """Streaming: drop the per-frame bookkeeping of frames that no later call can look up (older than the
        memory window of the oldest frame still kept), so that host memory stays flat however long the stream.
        Frames arrive in order, so the oldest entries come first in the dicts."""
        session = self.session
        oldest_lookup = min(session.streamed_frames) - session._planner.shape.ring
        for track in session._objects:
            for frames in (track.tracked, track.memories, track.tracked_outputs):
                while frames and next(iter(frames)) < oldest_lookup:
                    del frames[next(iter(frames))]

    def record(self, frame_idx: int, steps: list[ObjectStep], out) -> tuple[np.ndarray, np.ndarray]:
        """Store a frame's results (conditioning outputs, archived memories) from the step's outputs `out`;
        returns the frame's pred_masks (N,4h,4w) and object_score_logits (N,), stored outputs replayed."""
        session = self.session
        pred_masks = np.array(out["pred_masks"][:len(steps)])
        scores = np.array(out["object_score_logits"][:len(steps)])
        keep = session.keep_memory_archive
        memory_dim = session._planner.shape.memory_dim
        for i, p in enumerate(steps):
            track = session._objects[i]
            if not p.ran:
                pred_masks[i], scores[i] = track.cond_outputs[frame_idx]
            elif p.as_cond:
                track.cond_outputs[frame_idx] = (pred_masks[i].copy(), float(scores[i]))
                track.cond_memories[frame_idx] = (np.asarray(out["maskmem_features"][i]).reshape(-1, memory_dim),
                                                  np.asarray(out["object_pointer"][i]))
            elif keep and frame_idx in track.memories:
                track.memories[frame_idx] = (np.asarray(out["maskmem_features"][i]).reshape(-1, memory_dim),
                                             np.asarray(out["object_pointer"][i]))
                track.tracked_outputs[frame_idx] = (pred_masks[i].copy(), float(scores[i]))
        return pred_masks, scores

    # ---------------------------------------------------------------------- device slots and the archive
    def _needed_memories(self, obj: int, frame_idx: int, reverse: bool) -> list[int]:
        """Tracked frames whose memories transformers would look up for this object at `frame_idx`."""
        session = self.session
        sign = -1 if reverse else 1
        n = session.num_frames
        window = [frame_idx - sign * d for d in range(1, session._planner.shape.ring)]
        track = session._objects[obj]
        return [f for f in window if f in track.memories and f >= 0 and (session.streaming or f < n)]

    def _cond_selection(self, obj: int, frame_idx: int) -> list[int]:
        """The conditioning frames this object attends to at `frame_idx` (all, or the closest that fit)."""
        frames = list(self.session._objects[obj].cond_memories)
        return select_closest_cond_frames(frame_idx, frames, self.session.max_conditioning_frames)

    def _cond_ready(self, obj: int, frame_idx: int) -> bool:
        return set(self._cond_selection(obj, frame_idx)) == set(self.session._planner.cond_frames[obj])

    def _ring_ready(self, obj: int, frame_idx: int, reverse: bool) -> bool:
        ring = self.session._planner.ring_frames[obj]
        return all(f in ring for f in self._needed_memories(obj, frame_idx, reverse))

    def _reload_cond(self, obj: int, frame_idx: int):
        """Put the selected conditioning memories in the device slots (when there are more than fit)."""
        if self._cond_ready(obj, frame_idx):
            return
        session = self.session
        track, state = session._objects[obj], session._state
        selected = self._cond_selection(obj, frame_idx)
        feats = np.zeros(state.cond_features.shape[1:], state.cond_features.dtype)
        ptrs = np.zeros(state.cond_pointers.shape[1:], np.float32)
        for slot, f in enumerate(selected):
            feats[slot], ptrs[slot] = track.cond_memories[f]
        session._state = _set_object_memories(state, obj, feats, ptrs, conditioning=True)
        session._planner.cond_frames[obj] = list(selected)

    def _refill(self, obj: int, frame_idx: int, reverse: bool):
        """Load the tracked-frame memories this step looks up into the device ring, from the host archive."""
        session = self.session
        planner, track = session._planner, session._objects[obj]
        needed = self._needed_memories(obj, frame_idx, reverse)
        missing = [f for f in needed if track.memories[f] is None]
        if missing:
            raise ValueError(f"frame_idx: tracking frame {frame_idx} needs the memories of frames {missing}, which "
                             "were not kept (create the session with keep_memory_archive=True)")
        state = session._state
        feats = np.zeros(state.recent_features.shape[1:], state.recent_features.dtype)
        ptrs = np.zeros(state.recent_pointers.shape[1:], np.float32)
        frames = [-1] * planner.shape.ring
        for slot, f in enumerate(needed):
            feats[slot], ptrs[slot] = track.memories[f]
            frames[slot] = f
        session._state = _set_object_memories(state, obj, feats, ptrs, conditioning=False)
        planner.ring_frames[obj] = frames

    def _forget_tracked_memories(self, obj: int, frames) -> None:
        """Drop an object's tracked-frame memories of `frames` from the archive and the device ring mirror."""
        track, ring = self.session._objects[obj], self.session._planner.ring_frames[obj]
        for f in frames:
            track.memories.pop(f, None)
            track.tracked_outputs.pop(f, None)
            if f in ring:
                ring[ring.index(f)] = -1
