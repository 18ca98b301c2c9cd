"""transformers' `Sam2VideoInferenceSession`: one video's bookkeeping on the host.

The session keeps transformers' bookkeeping (objects, prompts per frame, which frames are conditioning or
tracked) in plain Python, because it decides control flow and never depends on the model's numbers;
`tracking.plan.SessionPlan` runs transformers' state machine on it and decides which memory slots feed each
frame. The numbers live in a fixed-shape `tracking.tracker.TrackerState` on the device.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..tracking import tracker
from ..tracking.plan import resize_bank
from .devices import jax_device as _jax_device
from .session_state import SessionStateAccess


@dataclasses.dataclass
class _ObjectTrack:
    """What the session knows of one object (transformers keeps the same per object index)."""

    point_inputs: dict = dataclasses.field(default_factory=dict)  # frame -> (coords (K,2) f32, labels (K,) i32)
    mask_inputs: dict = dataclasses.field(default_factory=dict)  # frame -> (S,S,1) float32
    cond_outputs: dict = dataclasses.field(default_factory=dict)  # frame -> (pred_masks (h,w), score float)
    cond_memories: dict = dataclasses.field(default_factory=dict)  # frame -> (features (L,M), pointer (C,))
    tracked: dict = dataclasses.field(default_factory=dict)  # frame -> {"reverse": bool}
    memories: dict = dataclasses.field(default_factory=dict)  # tracked frame -> (features, pointer) or None
    tracked_outputs: dict = dataclasses.field(default_factory=dict)  # archived tracked frame -> (pred_masks, score)


class Sam2VideoInferenceSession(SessionStateAccess):
    """One video's tracking state (transformers `Sam2VideoInferenceSession`).

    `video` is a `sam2_jax.io.frames.FrameSource` (frames stay uint8 at their own size until encoded) or None
    for streaming. transformers' placement arguments each take a `jax.Device`, a platform name ("cpu", "cuda",
    "gpu", "tpu", "cuda:1") or None (JAX's default device), checked when the session starts:
    - `inference_device`: where what `get_frame` and `get_output` return lives. The model computes where its
      weights are (`model.to(device)`, or JAX's default device);
    - `inference_state_device`: where the per-frame outputs and the memory archive live. They are kept in host
      memory (numpy) whatever the device, as transformers keeps them with its default "cpu";
    - `video_storage_device`, `processing_device`: the video stays on the host as uint8 frames and is
      processed there (resize, normalise) on access; the arguments are checked and recorded.
    `max_vision_features_cache_size` is how many frames' vision features are kept on the device (at least
    the frames encoded together in one batch ahead of the memory loop); a stream also keeps that many frames.
    transformers' accessors (`add_point_inputs`, `get_output`, `store_output`, `point_inputs_per_obj`, ...)
    come from `session_state.SessionStateAccess`.

    Options from the original predictor, off by default as in both references:
    - `add_all_frames_to_correct_as_cond`: a click on an already tracked frame makes it a conditioning frame,
      so propagating over it again keeps the correction (by default transformers stores it as a tracked frame,
      which the next propagation overwrites);
    - `clear_non_cond_mem_around_input`: a prompt on a frame drops that object's tracked-frame memories within
      `num_maskmem` frames of it, so stale memories near a correction do not pull the mask back.
    - `max_conditioning_frames`: device slots for conditioning frames per object. transformers attends to all
      of them (`max_cond_frame_num=-1`); beyond this many, each frame attends to the closest ones, chosen
      as transformers' `max_cond_frame_num` chooses them (the closest before, the closest after, then the
      nearest), with only their pointers (transformers would also take the others' pointers).

    `keep_memory_archive` (default: on for a whole video, off when streaming) keeps every tracked frame's
    memory on the host too, so that a later call can refill the device slots from any frame (a click in the
    middle of a tracked video), and its masks and score for `get_output`. Off, host memory stays the video plus
    a constant.
    """

    def __init__(self, video=None, video_height: int | None = None, video_width: int | None = None,
                 inference_device=None, inference_state_device=None, video_storage_device=None,
                 dtype=jnp.float32, max_vision_features_cache_size: int = 1, image_size: int = 1024,
                 max_conditioning_frames: int = 8, keep_memory_archive: bool | None = None,
                 add_all_frames_to_correct_as_cond: bool = False, clear_non_cond_mem_around_input: bool = False,
                 processing_device=None):
        self.video = video
        self.add_all_frames_to_correct_as_cond = bool(add_all_frames_to_correct_as_cond)
        self.clear_non_cond_mem_around_input = bool(clear_non_cond_mem_around_input)
        self.video_height = video_height
        self.video_width = video_width
        self.device = _jax_device(inference_device, "inference_device")
        self.inference_state_device = _jax_device(inference_state_device, "inference_state_device")
        self.video_storage_device = _jax_device(video_storage_device, "video_storage_device")
        self.processing_device = _jax_device(processing_device, "processing_device")
        self.dtype = jnp.dtype(dtype)
        self.image_size = image_size
        if isinstance(max_vision_features_cache_size, bool) or not isinstance(max_vision_features_cache_size,
                                                                              (int, np.integer)):
            raise TypeError(f"max_vision_features_cache_size: expected an int, got "
                            f"{type(max_vision_features_cache_size).__name__}")
        if max_vision_features_cache_size < 1:
            raise ValueError(f"max_vision_features_cache_size: expected >= 1, got {max_vision_features_cache_size}")
        self.max_vision_features_cache_size = int(max_vision_features_cache_size)
        if max_conditioning_frames < 1:
            raise ValueError(f"max_conditioning_frames: expected >= 1, got {max_conditioning_frames}")
        self.max_conditioning_frames = int(max_conditioning_frames)
        self.keep_memory_archive = video is not None if keep_memory_archive is None else keep_memory_archive
        # Streaming keeps only the newest frames (pixel_values (S,S,3)), so memory stays flat.
        self.streamed_frames: dict[int, np.ndarray] = {}
        self.num_streamed = 0
        self._vision_cache: dict[int, Any] = {}
        self.reset_tracking_data()

    # ----------------------------------------------------------------------------- transformers API
    @property
    def inference_device(self):
        """The jax.Device that get_frame and get_output place their arrays on (None: JAX's default)."""
        return self.device

    @property
    def num_frames(self) -> int | None:
        """Frames in the video, or streamed so far; None for a stream that has not started."""
        if self.video is not None:
            return len(self.video)
        return self.num_streamed if self.num_streamed else None

    @property
    def nbytes(self) -> int:
        """Bytes held for tracking: the device memory bank, the host archive, kept frames and features."""
        arrays = [] if self._state is None else list(self._state)
        arrays += list(self.streamed_frames.values())
        arrays += jax.tree_util.tree_leaves(list(self._vision_cache.values()))
        for track in self._objects:
            arrays += [a for value in track.memories.values() if value is not None for a in value]
            arrays += [value[0] for value in (*track.cond_outputs.values(), *track.tracked_outputs.values())]
            arrays += list(track.mask_inputs.values())
        return int(sum(np.asarray(a).nbytes if not isinstance(a, jax.Array) else a.nbytes for a in arrays))

    @property
    def streaming(self) -> bool:
        """Whether frames arrive one by one (a session started without a video)."""
        return self.video is None

    @property
    def obj_ids(self) -> list:
        """The session's object ids, in the order of the outputs' object axis."""
        return list(self._obj_idx_to_id)

    def obj_id_to_idx(self, obj_id) -> int:
        """The dense index of `obj_id`, creating it on first use (transformers does the same)."""
        if obj_id not in self._obj_id_to_idx:
            self._obj_id_to_idx[obj_id] = len(self._obj_idx_to_id)
            self._obj_idx_to_id.append(obj_id)
            self._objects.append(_ObjectTrack())
        return self._obj_id_to_idx[obj_id]

    def obj_idx_to_id(self, obj_idx: int):
        """The id of the object at index `obj_idx` of the outputs."""
        return self._obj_idx_to_id[obj_idx]

    def get_obj_num(self) -> int:
        """The number of objects in the session."""
        return len(self._obj_idx_to_id)

    def add_new_frame(self, pixel_values, frame_idx: int | None = None) -> int:
        """Append a streamed frame (3,S,S) or (1,3,S,S) of processor output; returns its index."""
        frame = np.asarray(pixel_values)  # on the host: no program compiles for a frame
        if frame.ndim == 4:
            frame = frame[0]
        if frame.shape != (3, self.image_size, self.image_size):
            raise ValueError(f"frame: expected processor output of shape (3, {self.image_size}, {self.image_size}), "
                             f"got {tuple(pixel_values.shape)}")
        frame_idx = self.num_streamed if frame_idx is None else int(frame_idx)
        self.streamed_frames[frame_idx] = frame.transpose(1, 2, 0).astype(self.dtype)
        self.num_streamed = max(self.num_streamed, frame_idx + 1)
        while len(self.streamed_frames) > self.max_vision_features_cache_size:
            del self.streamed_frames[min(self.streamed_frames)]
        return frame_idx

    def reset_tracking_data(self):
        """Forget objects, prompts and outputs; keep the frames and the vision features cache."""
        self._obj_id_to_idx: dict = {}
        self._obj_idx_to_id: list = []
        self._objects: list[_ObjectTrack] = []
        self._removed_obj_ids: set = set()
        self.obj_with_new_inputs: list = []
        self._state = None
        self._planner = None
        self._memory_batch_first = False  # transformers' memory layout: EdgeTAM's (1,L,M), SAM 2's (L,1,M)

    def reset_inference_session(self):
        """`reset_tracking_data` and also clear the vision features cache."""
        self.reset_tracking_data()
        self._vision_cache.clear()

    # -------------------------------------------------------------------------- beyond transformers
    def remove_object(self, obj_id) -> None:
        """Forget one object and all its prompts and memories (the original predictor's `remove_object`)."""
        idx = self._check_obj_id(obj_id)
        self._removed_obj_ids.add(obj_id)
        del self._objects[idx]
        del self._obj_idx_to_id[idx]
        self._obj_id_to_idx = {o: i for i, o in enumerate(self._obj_idx_to_id)}
        self.obj_with_new_inputs = [o for o in self.obj_with_new_inputs if o != obj_id]
        if self._state is not None:
            keep = [i for i in range(len(self._planner.cond_frames)) if i != idx]
            shape = dataclasses.replace(self._planner.shape, num_objects=tracker.object_bucket(len(keep)))
            self._state = resize_bank(self._state, keep, shape)
            self._planner.drop_object(idx, shape)

    def clear_prompts_in_frame(self, frame_idx: int, obj_id) -> None:
        """Remove one object's prompts on one frame (the original predictor's `clear_all_prompts_in_frame`)."""
        idx = self._check_obj_id(obj_id)
        self._check_frame_idx(frame_idx)
        self._objects[idx].point_inputs.pop(frame_idx, None)
        self._objects[idx].mask_inputs.pop(frame_idx, None)

    # ------------------------------------------------------------------------------------- internals
    def _check_obj_id(self, obj_id) -> int:
        if obj_id not in self._obj_id_to_idx:
            removed = " (it was removed)" if obj_id in self._removed_obj_ids else ""
            raise ValueError(f"obj_id: expected one of the session's objects {self.obj_ids}, got {obj_id!r}{removed}")
        return self._obj_id_to_idx[obj_id]

    def _check_new_obj_ids(self, obj_ids) -> list[int]:
        """obj_ids of a prompt call -> a list of distinct ints, none of them removed from this session."""
        ids = [obj_ids] if not isinstance(obj_ids, (list, tuple)) else list(obj_ids)
        if not ids:
            raise ValueError("obj_ids: expected an int or a non-empty list of ints, got an empty list")
        for obj_id in ids:
            if isinstance(obj_id, (bool, np.bool_)) or not isinstance(obj_id, (int, np.integer)):
                raise TypeError(f"obj_ids: expected ints, got {obj_id!r} ({type(obj_id).__name__})")
        ids = [int(i) for i in ids]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"obj_ids: expected distinct ids in one call, got {ids} ({duplicates} repeated)")
        removed = [i for i in ids if i in self._removed_obj_ids]
        if removed:
            raise ValueError(f"obj_ids: {removed} were removed from this session (remove_object); give new ids, or "
                             "start over with reset_tracking_data()")
        return ids

    def _check_frame_idx(self, frame_idx, name: str = "frame_idx") -> int:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise TypeError(f"{name}: expected an int, got {type(frame_idx).__name__}")
        n = self.num_frames
        if frame_idx < 0 or (not self.streaming and frame_idx >= n):
            raise ValueError(f"{name}: expected a frame index in [0, {n - 1 if n else 0}], got {frame_idx}")
        if self.streaming and frame_idx not in self.streamed_frames and frame_idx != self.num_streamed:
            raise ValueError(f"{name}: expected a streamed frame still kept ({sorted(self.streamed_frames)}) or the "
                             f"next one ({self.num_streamed}), got {frame_idx}")
        return int(frame_idx)


EdgeTamVideoInferenceSession = Sam2VideoInferenceSession  # transformers' EdgeTAM session: the same bookkeeping
