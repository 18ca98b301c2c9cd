"""transformers' `Sam2VideoProcessor`: frames in, prompts into a session, masks out."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import processing
from ..io.frames import open_video
from .image import Sam2Processor
from .video_frames import Sam2VideoVideoProcessor, _square_size
from .video_session import Sam2VideoInferenceSession


class Sam2VideoProcessor(Sam2Processor):
    """transformers `Sam2VideoProcessor`: frames in, prompts into a session, masks out.

    `Sam2VideoProcessor(image_processor, video_processor, target_size=None, point_pad_value=-10)` as in
    transformers (processors with a `size`, e.g. `Sam2VideoVideoProcessor(size=...)`, the same for both), or
    `Sam2VideoProcessor(size=S)`; `from_pretrained` reads a checkpoint's."""

    def __init__(self, image_processor=None, video_processor=None, target_size: int | None = None,
                 point_pad_value: int = -10, size: int | None = None):
        sizes = {name: _square_size(p.size, f"{name}.size") for name, p in
                 (("image_processor", image_processor), ("video_processor", video_processor)) if p is not None}
        if size is not None:
            sizes["size"] = _square_size(size, "size")
        if len(set(sizes.values())) > 1:
            raise ValueError(f"{', '.join(sizes)}: expected one input size, got {sizes}")
        size = next(iter(sizes.values()), 1024)
        super().__init__(size=size, target_size=target_size, point_pad_value=point_pad_value)
        self.video_processor = video_processor if video_processor is not None else Sam2VideoVideoProcessor(size)
        self.image_processor = image_processor if image_processor is not None else self.video_processor

    def __call__(self, images=None, device=None, videos=None, **kwargs):
        """As `Sam2Processor.__call__`; `videos` goes to the video processor (`Sam2VideoVideoProcessor`);
        `device` is accepted (arrays land on JAX's default device)."""
        if videos is not None:
            if images is not None:
                raise ValueError("images, videos: expected one of them, got both")
            return self.video_processor(videos=videos, **kwargs)
        return super().__call__(images=images, **kwargs)

    def init_video_session(self, video=None, inference_device=None, inference_state_device=None,
                           processing_device=None, video_storage_device=None,
                           max_vision_features_cache_size: int = 1, dtype=jnp.float32,
                           max_conditioning_frames: int = 8, keep_memory_archive: bool | None = None,
                           add_all_frames_to_correct_as_cond: bool = False,
                           clear_non_cond_mem_around_input: bool = False) -> Sam2VideoInferenceSession:
        """Start a session on `video` (anything `sam2_jax.io.frames.open_video` reads: frames as a list, a
        (T,H,W,3) array, a file or folder path) or on nothing for streaming. The devices (a jax.Device, "cpu",
        "cuda", "gpu", "tpu" or None) and `max_vision_features_cache_size` mean what
        `Sam2VideoInferenceSession` says: where returned arrays live, and how many frames' features are kept."""
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
            video_storage_device=video_storage_device, processing_device=processing_device, dtype=dtype,
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
        from ..models.layers import antialias_bilinear_matrix

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

    def post_process_masks(self, masks, original_sizes, mask_threshold: float = 0.0, binarize: bool = True,
                           max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0,
                           apply_non_overlapping_constraints: bool = False, **unused):
        """As `Sam2Processor.post_process_masks` (the image processor's, as transformers' Sam2VideoProcessor:
        one-step upscaling); `video_processor.post_process_masks` is the video processor's."""
        return super().post_process_masks(
            masks, original_sizes, mask_threshold=mask_threshold, binarize=binarize, max_hole_area=max_hole_area,
            max_sprinkle_area=max_sprinkle_area, apply_non_overlapping_constraints=apply_non_overlapping_constraints)
