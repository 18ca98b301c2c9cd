"""The transformers-shaped video facade: `Sam2VideoModel`, `Sam2VideoProcessor`, `Sam2VideoInferenceSession`.

The session keeps transformers' bookkeeping (objects, prompts per frame, which frames are conditioning or
tracked) in plain Python, because it decides control flow and never depends on the model's numbers;
`plan.SessionPlan` runs transformers' state machine on it and decides which memory slots feed each frame.
The numbers live in a fixed-shape `tracker.TrackerState` on the device and go through jitted steps
(`Sam2VideoModel` ties the two together). A host archive of per-frame memories (kept by default for whole
videos) refills the device slots when a call needs frames that are no longer in them (e.g. a refinement
click in the middle of an already tracked video).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from . import processing, tracker
from .api import ModelOutput, PretrainedModel, Sam2Processor, _cast_floats
from .config import Sam2Config, replace
from .modeling.sam2_video import Sam2VideoModule
from .plan import SessionPlan, mask_prompts
from .video import VideoError, open_video


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_host_memory() -> None:
    """Give the C heap's free pages back to the OS (glibc's `malloc_trim`; nothing elsewhere).

    Compilation leaves much of glibc's heap free, and XLA's large transient host buffers fragment it: over a
    long stream RSS crept up by 5% while the bytes in use stayed flat. Sessions call this every 100 tracked
    frames (`python -m benchmarks.soak`)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class _HeapTrimmer:
    """Calls `release_free_host_memory` every `every` tracked frames (all sessions together)."""

    def __init__(self, every: int = 100):
        self.every, self.frames = every, 0

    def count(self, frames: int) -> None:
        self.frames += frames
        if self.frames >= self.every:
            self.frames = 0
            release_free_host_memory()


_heap_trimmer = _HeapTrimmer()


@dataclasses.dataclass
class Sam2VideoSegmentationOutput(ModelOutput):
    """object_ids [N]; pred_masks (N,1,256,256) low-res logits (-1024 where an object is absent);
    object_score_logits (N,1); frame_idx."""

    object_ids: list
    pred_masks: jax.Array
    object_score_logits: jax.Array
    frame_idx: int


@dataclasses.dataclass
class _ObjectTrack:
    """What the session knows of one object (transformers keeps the same per object index)."""

    point_inputs: dict = dataclasses.field(default_factory=dict)  # frame -> (coords (K,2) f32, labels (K,) i32)
    mask_inputs: dict = dataclasses.field(default_factory=dict)  # frame -> (S,S,1) float32
    cond_outputs: dict = dataclasses.field(default_factory=dict)  # frame -> (pred_masks (h,w), score float)
    cond_memories: dict = dataclasses.field(default_factory=dict)  # frame -> (features (L,M), pointer (C,))
    tracked: dict = dataclasses.field(default_factory=dict)  # frame -> {"reverse": bool}
    memories: dict = dataclasses.field(default_factory=dict)  # tracked frame -> (features, pointer) or None


class Sam2VideoInferenceSession:
    """One video's tracking state (transformers `Sam2VideoInferenceSession`).

    `video` is a `sam2_jax.video.FrameSource` (frames stay uint8 at their own size until encoded) or None
    for streaming. Placement arguments of transformers are accepted: devices map to JAX devices
    (`inference_device` may be a `jax.Device`, a platform name like "cpu"/"gpu"/"cuda", or None for the
    default); state kept "on the CPU" is the host archive.

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
    middle of a tracked video). Off, host memory stays the video plus a constant.
    """

    def __init__(self, video=None, video_height: int | None = None, video_width: int | None = None,
                 inference_device=None, inference_state_device=None, video_storage_device=None,
                 dtype=jnp.float32, max_vision_features_cache_size: int = 1, image_size: int = 1024,
                 max_conditioning_frames: int = 8, keep_memory_archive: bool | None = None,
                 add_all_frames_to_correct_as_cond: bool = False, clear_non_cond_mem_around_input: bool = False):
        self.video = video
        self.add_all_frames_to_correct_as_cond = bool(add_all_frames_to_correct_as_cond)
        self.clear_non_cond_mem_around_input = bool(clear_non_cond_mem_around_input)
        self.video_height = video_height
        self.video_width = video_width
        self.device = _jax_device(inference_device, "inference_device")
        self.inference_state_device = inference_state_device
        self.video_storage_device = video_storage_device
        self.dtype = jnp.dtype(dtype)
        self.image_size = image_size
        if max_vision_features_cache_size < 1:
            raise ValueError(f"max_vision_features_cache_size: expected >= 1, got {max_vision_features_cache_size}")
        self.max_vision_features_cache_size = int(max_vision_features_cache_size)
        if max_conditioning_frames < 1:
            raise ValueError(f"max_conditioning_frames: expected >= 1, got {max_conditioning_frames}")
        self.max_conditioning_frames = int(max_conditioning_frames)
        self.keep_memory_archive = video is not None if keep_memory_archive is None else keep_memory_archive
        # Streaming keeps only the newest frames (pixel_values (S,S,3)), so memory stays flat.
        self.streamed_frames: dict[int, jax.Array] = {}
        self.num_streamed = 0
        self._vision_cache: dict[int, Any] = {}
        self.reset_tracking_data()

    # ----------------------------------------------------------------------------- transformers API
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
            arrays += [value[0] for value in track.cond_outputs.values()]
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
        frame = jnp.asarray(pixel_values)
        if frame.ndim == 4:
            frame = frame[0]
        if frame.shape != (3, self.image_size, self.image_size):
            raise ValueError(f"frame: expected processor output of shape (3, {self.image_size}, {self.image_size}), "
                             f"got {tuple(pixel_values.shape)}")
        frame_idx = self.num_streamed if frame_idx is None else int(frame_idx)
        self.streamed_frames[frame_idx] = jnp.transpose(frame, (1, 2, 0)).astype(self.dtype)
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
            self._state = tracker.TrackerState(*(x[np.asarray(keep, np.int32)] for x in self._state))
            self._planner.drop_object(idx)

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


def _jax_device(device, name):
    """transformers device arguments -> a jax.Device (or None for JAX's default)."""
    if device is None or isinstance(device, jax.Device):
        return device
    if hasattr(device, "type"):  # a torch.device
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"{name}: expected a jax.Device, a device name like 'cpu' or 'cuda:0', or None, "
                        f"got {type(device).__name__}")
    platform, _, index = device.partition(":")
    platform = {"cuda": "gpu", "mps": "METAL"}.get(platform, platform)
    try:
        devices = jax.devices(platform)
    except RuntimeError as err:
        raise ValueError(f"{name}: no JAX device for {device!r} ({err})") from err
    i = int(index) if index else 0
    if i >= len(devices):
        raise ValueError(f"{name}: expected a device index below {len(devices)} for {platform}, got {i}")
    return devices[i]


class Sam2VideoProcessor(Sam2Processor):
    """transformers `Sam2VideoProcessor`: frames in, prompts into a session, masks out."""

    def __call__(self, images=None, device=None, **kwargs):
        """As `Sam2Processor.__call__`; `device` is accepted (arrays land on JAX's default device)."""
        return super().__call__(images=images, **kwargs)

    def init_video_session(self, video=None, inference_device=None, inference_state_device=None,
                           processing_device=None, video_storage_device=None,
                           max_vision_features_cache_size: int = 1, dtype=jnp.float32,
                           max_conditioning_frames: int = 8, keep_memory_archive: bool | None = None,
                           add_all_frames_to_correct_as_cond: bool = False,
                           clear_non_cond_mem_around_input: bool = False) -> Sam2VideoInferenceSession:
        """Start a session on `video` (anything `sam2_jax.video.open_video` reads: frames as a list, a
        (T,H,W,3) array, a file or folder path) or on nothing for streaming."""
        source = None
        height = width = None
        if video is not None:
            source = open_video(video)
            if source.num_frames is None:
                raise ValueError("video: expected a video with a known number of frames; stream a live source "
                                 "frame by frame with model(inference_session=..., frame=...)")
            if source.num_frames == 0:
                raise ValueError("video: expected at least one frame, got an empty video")
            height, width = source.height, source.width
        return Sam2VideoInferenceSession(
            source, height, width, inference_device=inference_device, inference_state_device=inference_state_device,
            video_storage_device=video_storage_device, dtype=dtype,
            max_vision_features_cache_size=max_vision_features_cache_size, image_size=self.size,
            max_conditioning_frames=max_conditioning_frames, keep_memory_archive=keep_memory_archive,
            add_all_frames_to_correct_as_cond=add_all_frames_to_correct_as_cond,
            clear_non_cond_mem_around_input=clear_non_cond_mem_around_input)

    def add_inputs_to_inference_session(self, inference_session: Sam2VideoInferenceSession, frame_idx: int, obj_ids,
                                        input_points=None, input_labels=None, input_boxes=None, input_masks=None,
                                        original_size=None, clear_old_inputs: bool = True
                                        ) -> Sam2VideoInferenceSession:
        """transformers `add_inputs_to_inference_session`, validated first: a failed call changes nothing."""
        session = inference_session
        if not isinstance(session, Sam2VideoInferenceSession):
            raise TypeError(f"inference_session: expected a Sam2VideoInferenceSession (from init_video_session), "
                            f"got {type(session).__name__}")
        obj_ids = session._check_new_obj_ids(obj_ids)
        if (input_points is None) != (input_labels is None):
            raise ValueError("input_points, input_labels: points and labels must be provided together")
        if input_points is None and input_boxes is None and input_masks is None:
            raise ValueError("input_points, input_boxes, input_masks: at least one of points, boxes, or masks "
                             "must be provided as input")
        if input_masks is not None and (input_points is not None or input_boxes is not None):
            raise ValueError("input_masks: masks cannot be provided together with points or boxes")
        if session.streaming and frame_idx != session.num_streamed and frame_idx not in session.streamed_frames:
            raise ValueError(f"frame_idx: expected a streamed frame or the next one ({session.num_streamed}), "
                             f"got {frame_idx}")
        if not session.streaming:
            session._check_frame_idx(frame_idx)
        if input_masks is not None:
            masks = self._prepare_masks(input_masks, len(obj_ids), (session.video_height, session.video_width))
            for obj_id, mask in zip(obj_ids, masks):
                track = session._objects[session.obj_id_to_idx(obj_id)]
                track.mask_inputs[frame_idx] = mask
                track.point_inputs.pop(frame_idx, None)
            session.obj_with_new_inputs = list(obj_ids)  # a copy: transformers empties the caller's list
            return session

        if original_size is not None:
            size_array = np.asarray(original_size)
            if size_array.shape != (2,) or not np.issubdtype(size_array.dtype, np.integer) or (size_array <= 0).any():
                raise ValueError(f"original_size: expected (height, width) positive integers, got {original_size!r}")
            original_size = (int(size_array[0]), int(size_array[1]))
        size = original_size if original_size is not None else (session.video_height, session.video_width)
        if size[0] is None:
            raise ValueError("original_size: must be provided when adding points or boxes on a first streamed "
                             "frame")
        encoded = processing.prepare_prompts(input_points, input_labels, input_boxes, original_sizes=[list(size)],
                                             target_size=self.target_size)
        points = encoded.get("input_points", np.zeros((1, len(obj_ids), 0, 2), np.float32))
        labels = encoded.get("input_labels", np.zeros((1, len(obj_ids), 0), np.int64))
        for name, arr in (("input_points", points), ("input_labels", labels), ("input_boxes", encoded.get("input_boxes"))):
            if arr is not None and arr.shape[0] != 1:
                raise ValueError(f"{name}: expected prompts for one frame (first nesting level of length 1), got "
                                 f"{arr.shape[0]}")
            if arr is not None and arr.shape[1] != len(obj_ids):
                raise ValueError(f"{name}: number of object ids ({len(obj_ids)}) does not match number of "
                                 f"{name.split('_')[1]} ({arr.shape[1]})")
        if "input_boxes" in encoded:
            if not clear_old_inputs:
                raise ValueError("clear_old_inputs: cannot add box without clearing old points, since box prompt must "
                                 "be provided before any point prompt (use clear_old_inputs=True)")
            boxes = encoded["input_boxes"].reshape(1, -1, 2, 2)
            points = np.concatenate([boxes, points], axis=2)
            labels = np.concatenate([np.broadcast_to(np.array([2, 3]), boxes.shape[:3]), labels], axis=2)
        if original_size is not None:
            session.video_height, session.video_width = int(original_size[0]), int(original_size[1])
        for k, obj_id in enumerate(obj_ids):
            track = session._objects[session.obj_id_to_idx(obj_id)]
            coords, lbls = points[0, k].astype(np.float32), labels[0, k].astype(np.int32)
            if not clear_old_inputs and frame_idx in track.point_inputs:
                old_coords, old_labels = track.point_inputs[frame_idx]
                coords, lbls = np.concatenate([old_coords, coords]), np.concatenate([old_labels, lbls])
            track.point_inputs[frame_idx] = (coords, lbls)
            track.mask_inputs.pop(frame_idx, None)
        session.obj_with_new_inputs = list(obj_ids)  # a copy: transformers empties the caller's list
        return session

    def _prepare_masks(self, input_masks, num_objects: int, video_size: tuple) -> list[np.ndarray]:
        """transformers `process_new_mask_for_video_frame`: one mask per object; arrays that are not jax
        arrays are taken as booleans (as transformers does with non-tensors); masks of another size are
        resized with antialiasing and thresholded at 0.5. A mask must be bool, integer or float, and the size
        of the video's frames (H, W) or of the model's input (S, S)."""
        from .modeling.layers import antialias_bilinear_matrix

        masks = input_masks if isinstance(input_masks, list) else [input_masks]
        if len(masks) != num_objects:
            raise ValueError(f"input_masks: number of object ids ({num_objects}) does not match number of masks "
                             f"({len(masks)})")
        out = []
        s = self.target_size
        for k, mask in enumerate(masks):
            if isinstance(mask, (list, tuple)):
                mask = np.asarray(mask)
            if not isinstance(mask, (np.ndarray, jax.Array)) or not (
                    np.issubdtype(mask.dtype, np.bool_) or np.issubdtype(mask.dtype, np.integer)
                    or np.issubdtype(mask.dtype, np.floating)):
                raise TypeError(f"input_masks[{k}]: expected a bool, integer or float (H, W) array, got "
                                f"{type(mask).__name__} of dtype {getattr(mask, 'dtype', None)}")
            array = np.asarray(mask, np.float32) if isinstance(mask, jax.Array) else np.asarray(mask).astype(bool)
            if not 2 <= array.ndim <= 4:
                raise ValueError(f"input_masks: mask has an unsupported number of dimensions: {array.ndim}")
            array = array.astype(np.float32)
            while array.ndim > 2:
                if array.shape[0] != 1:
                    raise ValueError(f"input_masks: expected one (H, W) mask per object, got shape {np.shape(mask)}")
                array = array[0]
            if video_size[0] is not None and array.shape not in (tuple(video_size), (s, s)):
                raise ValueError(f"input_masks[{k}]: expected the video's frame size {tuple(video_size)} (or the "
                                 f"model's input size {(s, s)}), got {array.shape}")
            if array.shape != (s, s):
                array = antialias_bilinear_matrix(array.shape[0], s) @ array @ antialias_bilinear_matrix(
                    array.shape[1], s).T
                array = (array >= 0.5).astype(np.float32)
            out.append(array[..., None])
        return out

    def post_process_masks(self, masks, original_sizes, **kwargs):
        return super().post_process_masks(masks, original_sizes, **kwargs)


class Sam2VideoModel(PretrainedModel):
    """SAM 2 video tracking, mirroring transformers `Sam2VideoModel` (weights from a transformers folder).

    Thread safety: one model may drive several sessions from several threads at once, with the masks it
    gives them one after the other (tests/test_threads.py). The model holds no per-session state: its
    weights are read-only and its jitted steps are JAX's (thread-safe; the first calls of two threads may
    both compile a program, once each). All tracking state lives in the session, so one session must be
    used by one thread at a time.
    """

    module_class = Sam2VideoModule
    model_type = "sam2_video"
    accepted_model_types = ("sam2_video",)

    def __init__(self, config: Sam2Config, params: dict[str, Any], dtype=jnp.float32):
        self.config = replace(config, model_type="sam2_video")
        self.dtype = jnp.dtype(dtype)
        self.params = _cast_floats(params, self.dtype)
        self.module = Sam2VideoModule(self.config)
        module = self.module
        self._encode = jax.jit(functools.partial(tracker.encode_frames, module))
        self._step = jax.jit(functools.partial(tracker.track_step, module), donate_argnums=(1,))
        self._scan = jax.jit(functools.partial(tracker.track_frames, module), donate_argnums=(1,))

    # ------------------------------------------------------------------------------------ inference
    def __call__(self, inference_session: Sam2VideoInferenceSession, frame_idx: int | None = None, frame=None,
                 reverse: bool = False, run_mem_encoder: bool = True) -> Sam2VideoSegmentationOutput:
        """transformers `Sam2VideoModel.forward`: segment every object on one frame, with memory.

        Give `frame` (processor output) to stream a new frame. A failed call leaves the session unchanged.
        """
        session = self._check_session(inference_session)
        if frame is not None:
            if session.get_obj_num() == 0:
                raise ValueError("inference_session: no objects are provided for tracking; please add inputs "
                                 "first")
            if session.video_height is None:
                raise ValueError("original_size: must be provided (add_inputs_to_inference_session(..., "
                                 "original_size=...)) before the first streamed frame")
            kept, count = dict(session.streamed_frames), session.num_streamed
            frame_idx = session.add_new_frame(frame, frame_idx)
            try:
                return self._run_frame(session, frame_idx, bool(reverse), run_mem_encoder)
            except Exception:
                session.streamed_frames, session.num_streamed = kept, count  # leave the session as it was
                raise
        if frame_idx is None:
            raise ValueError("frame_idx: expected a frame index (or frame= to stream a new frame), got None")
        frame_idx = session._check_frame_idx(frame_idx)
        if frame_idx not in session.streamed_frames and session.streaming:
            raise ValueError(f"frame_idx: frame {frame_idx} has not been streamed yet")
        if session.get_obj_num() == 0:
            raise ValueError("inference_session: no objects are provided for tracking; please add inputs first")
        return self._run_frame(session, frame_idx, bool(reverse), run_mem_encoder)

    def propagate_in_video_iterator(self, inference_session: Sam2VideoInferenceSession, start_frame_idx=None,
                                    max_frame_num_to_track=None, reverse: bool = False,
                                    show_progress_bar: bool = False) -> Iterator[Sam2VideoSegmentationOutput]:
        """transformers `propagate_in_video_iterator`: yields one output per frame in processing order."""
        session = inference_session
        order = self._processing_order(session, start_frame_idx, max_frame_num_to_track, reverse)
        pos = 0
        while pos < len(order):
            chunk = order[pos:pos + self.scan_length]
            outputs = (self._run_frames_scanned(session, chunk, reverse, order) if len(chunk) == self.scan_length
                       else [])
            if not outputs:  # a prompted frame, a memory refill or the tail: one frame at a time
                outputs = [self._run_frame(session, order[pos], reverse, True, lookahead=order)]
            pos += len(outputs)
            yield from outputs

    scan_length = 8  # frames per jitted scan during propagation (each scan is one dispatch)

    def propagate_in_video(self, inference_session: Sam2VideoInferenceSession, start_frame_idx=None,
                           max_frame_num_to_track=None, reverse: bool = False, both_directions: bool = False
                           ) -> dict[int, Sam2VideoSegmentationOutput]:
        """Every frame's outputs at once, {frame_idx: output}; with `both_directions`, forward from the start
        frame, then backward from it (the original predictor's usual full-video pass)."""
        order = self._processing_order(inference_session, start_frame_idx, max_frame_num_to_track, reverse)
        if not order:
            return {}
        out = {o.frame_idx: o for o in self.propagate_in_video_iterator(
            inference_session, order[0], max_frame_num_to_track, reverse)}
        if both_directions:
            out.update({o.frame_idx: o for o in self.propagate_in_video_iterator(
                inference_session, order[0], max_frame_num_to_track, not reverse)})
        return dict(sorted(out.items()))

    # ------------------------------------------------------------------------------------- internals
    def _check_session(self, session) -> Sam2VideoInferenceSession:
        """The session, if its frames are processed at the model's input size (the model's boundary check)."""
        if not isinstance(session, Sam2VideoInferenceSession):
            raise TypeError(f"inference_session: expected a Sam2VideoInferenceSession (from "
                            f"Sam2VideoProcessor.init_video_session), got {type(session).__name__}")
        size = self.config.prompt_encoder_config.image_size
        if session.image_size != size:
            raise ValueError(f"inference_session: the model takes {size}x{size} px frames, but the session's processor "
                             f"makes {session.image_size}x{session.image_size} px ones; make the processor with "
                             f"Sam2VideoProcessor.from_pretrained(<the model's checkpoint>) or "
                             f"Sam2VideoProcessor(size={size})")
        return session

    def _processing_order(self, session, start_frame_idx, max_frame_num_to_track, reverse) -> list[int]:
        self._check_session(session)
        if session.streaming:
            raise ValueError("inference_session: propagation needs a whole video; a streaming session is driven "
                             "frame by frame with model(inference_session=..., frame=...)")
        if session.get_obj_num() == 0:
            raise ValueError("inference_session: no objects are provided for tracking; please add inputs first")
        num_frames = session.num_frames
        if start_frame_idx is None:
            frames = [f for track in session._objects for f in track.cond_outputs]
            if not frames:
                raise ValueError("start_frame_idx: cannot determine the starting frame index; please specify it "
                                 "manually, or run inference on a frame with inputs first")
            start_frame_idx = min(frames)
        start_frame_idx = session._check_frame_idx(start_frame_idx, "start_frame_idx")
        if max_frame_num_to_track is None:
            max_frame_num_to_track = num_frames
        if max_frame_num_to_track < 0:
            raise ValueError(f"max_frame_num_to_track: expected >= 0, got {max_frame_num_to_track}")
        if reverse:
            end = max(start_frame_idx - max_frame_num_to_track, 0)
            return list(range(start_frame_idx, end - 1, -1)) if start_frame_idx > 0 else []
        end = min(start_frame_idx + max_frame_num_to_track, num_frames - 1)
        return list(range(start_frame_idx, end + 1))

    def _features(self, session, frame_idx: int, lookahead=()):
        """Vision features of a frame: from the cache, or encoded together with the frames that follow it in
        `lookahead` (the propagation order), so frames are encoded in batches ahead of the memory loop."""
        cache = session._vision_cache
        if frame_idx not in cache:
            batch = [frame_idx]
            size = self._lookahead_batch_size()
            if frame_idx in lookahead:
                pos = list(lookahead).index(frame_idx)
                batch = list(lookahead[pos:pos + size])
            frames = []
            for f in batch:
                try:
                    frames.append(self._pixel_values(session, f))
                except VideoError:
                    if f == frame_idx:
                        raise
                    break  # a damaged frame ahead: its error comes when tracking reaches it
            batch = batch[:len(frames)]
            if frame_idx in lookahead:  # look-ahead batches always have the same size: one compilation
                frames += frames[-1:] * (size - len(batch))
            (s0, s1, level2), pe = self._encode(self.params, jnp.stack(frames))
            for i, f in enumerate(batch):
                cache[f] = ((s0[i:i + 1], s1[i:i + 1], level2[i:i + 1]), pe)
            keep = max(session.max_vision_features_cache_size, len(batch))
            while len(cache) > keep:  # oldest first; the batch just encoded is the newest
                del cache[next(iter(cache))]
        return cache[frame_idx]

    encode_batch_size = 4  # at most this many frames encoded together ahead of the memory loop

    def _lookahead_batch_size(self) -> int:
        """Frames encoded together during propagation: `encode_batch_size`, but on the CPU no more than 1024x1024
        pixels in all, beyond which the encoder's activations outgrow the caches: tiny at 1024 px took 1.35 s a
        frame alone and 1.93 s in batches of 4; small at 256 px, 9 ms alone and 7.4 ms in batches of 4."""
        if jax.default_backend() != "cpu":
            return self.encode_batch_size
        return max(1, min(self.encode_batch_size, 1024 ** 2 // self.config.image_size ** 2))

    def _pixel_values(self, session, frame_idx: int):
        if session.streaming:
            return session.streamed_frames[frame_idx]
        pixels, _ = processing.preprocess_images(session.video[frame_idx], size=session.image_size)
        return jnp.asarray(pixels[0].transpose(1, 2, 0), self.dtype)

    def _run_frame(self, session, frame_idx: int, reverse: bool, run_mem_encoder: bool, lookahead=()):
        """transformers `forward` on one frame: its per-object state machine, then one batched jitted step."""
        plan = SessionPlan(self.config, session)
        steps = plan.plan_frame(frame_idx, reverse)
        features = self._features(session, frame_idx, lookahead)
        plan.ensure_bank()
        inputs = plan.step_inputs(frame_idx, steps, run_mem_encoder, refill=True)
        session._state, out = self._step(self.params, session._state, features, inputs,
                                         mask_prompts(steps, session.image_size))
        plan.advance(frame_idx, steps)
        _heap_trimmer.count(1)
        return self._output(session, frame_idx, *plan.record(frame_idx, steps, out))

    def _run_frames_scanned(self, session, frames: list[int], reverse: bool,
                            order=()) -> list[Sam2VideoSegmentationOutput]:
        """Tracked frames (no prompts, no memory refills) as one jitted `lax.scan` (same step, same numbers).

        Returns the outputs of the leading frames that qualified (possibly none)."""
        try:  # before planning, which advances the session's bookkeeping
            features = [self._features(session, f, order) for f in frames]
        except VideoError:
            return []  # a damaged frame ahead: frame by frame, so the frames before it are tracked
        plan = SessionPlan(self.config, session)
        plan.ensure_bank()
        planned = plan.plan_scan(frames, reverse)
        if not planned:
            return []
        features = features[:len(planned)]
        pe = features[0][1]
        stacked_features = tuple(jnp.concatenate([feat[0][k] for feat in features]) for k in range(3))
        inputs = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *[step_inputs for _, _, step_inputs in planned])
        session._state, out = self._scan(self.params, session._state, (stacked_features, pe), inputs)
        out = jax.tree_util.tree_map(np.asarray, out)
        _heap_trimmer.count(len(planned))
        return [self._output(session, f, *plan.record(f, steps, jax.tree_util.tree_map(lambda x: x[t], out)))
                for t, (f, steps, _) in enumerate(planned)]

    @staticmethod
    def _output(session, frame_idx: int, pred_masks, scores) -> Sam2VideoSegmentationOutput:
        return Sam2VideoSegmentationOutput(
            object_ids=session.obj_ids, pred_masks=jnp.asarray(pred_masks)[:, None],
            object_score_logits=jnp.asarray(scores)[:, None], frame_idx=frame_idx)
