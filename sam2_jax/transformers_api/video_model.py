"""transformers' `Sam2VideoModel`: the session's prompts and frames through jitted steps.

`Sam2VideoModel` ties the host-side session (`video_session`) to the device: `tracking.plan.SessionPlan`
decides which memory slots feed each frame, and the jitted steps of `tracking.tracker` compute it. A host
archive of per-frame memories (kept by default for whole videos) refills the device slots when a call needs
frames that are no longer in them (e.g. a refinement click in the middle of an already tracked video).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from .. import processing, runtime
from ..config import EdgeTamVideoConfig, Sam2VideoConfig
from ..io.frames import VideoError
from ..models.edgetam_video import video_module
from ..tracking.plan import SessionPlan, mask_prompts
from ..tracking.programs import WarmUp, program_set
from .image import ModelOutput, PretrainedModel, _cast_floats
from .video_features import VideoFeatures
from .video_session import Sam2VideoInferenceSession


@dataclasses.dataclass
class Sam2VideoSegmentationOutput(ModelOutput):
    """object_ids [N]; pred_masks (N,1,256,256) low-res logits (-1024 where an object is absent);
    object_score_logits (N,1); frame_idx."""

    object_ids: list
    pred_masks: jax.Array
    object_score_logits: jax.Array
    frame_idx: int



class Sam2VideoModel(VideoFeatures, PretrainedModel):
    """SAM 2 video tracking, mirroring transformers `Sam2VideoModel` (weights from a transformers folder).

    Thread safety: one model may drive several sessions from several threads at once, with the masks it
    gives them one after the other (tests/test_threads.py). The model holds no per-session state: its
    weights are read-only and its jitted steps are JAX's (thread-safe; the first calls of two threads may
    both compile a program, once each). All tracking state lives in the session, so one session must be
    used by one thread at a time.

    An EdgeTAM config or checkpoint (model_type "edgetam_video") gives the EdgeTAM video model
    (`models.edgetam_video.EdgeTamVideoModule`), through the same session, programs and tracker
    (see `EdgeTamVideoModel`).
    """

    module_class = staticmethod(video_module)  # the config's module: SAM 2's or EdgeTAM's
    model_type = "sam2_video"
    accepted_model_types = ("sam2_video",)
    edgetam_model_type = "edgetam_video"
    edgetam_accepted_model_types = ("edgetam_video",)

    def __init__(self, config: Sam2VideoConfig | EdgeTamVideoConfig, params: dict[str, Any] | None = None,
                 dtype=jnp.float32, seed: int = 0):
        self.config = self._own_config(config)
        self.dtype = jnp.dtype(dtype)
        self.params = _cast_floats(self.init_params(self.config, seed) if params is None else params, self.dtype)
        self.module = video_module(self.config)
        self.programs = program_set(self.config, self.dtype)
        runtime.default_compile_cache()

    def warm_up(self, max_objects: int = 16, background: bool = True, max_conditioning_frames: int = 8):
        """Compile the programs a session of up to `max_objects` objects runs (`tracking.programs`), most needed
        first, so that clicks answer at once: on a background thread while the video loads (a `WarmUp`:
        `wait()`, `done`, `stop()`; a click that comes first compiles, or waits for, only its own program), or
        here with `background=False`. `max_conditioning_frames` is the sessions' (the default's)."""
        if isinstance(max_objects, bool) or not isinstance(max_objects, int) or max_objects < 1:
            raise ValueError(f"max_objects: expected an int >= 1, got {max_objects!r}")
        run = functools.partial(self.programs.warm_up, self.params, max_objects, max_conditioning_frames)
        if background:
            return WarmUp(run)
        run()
        return None

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
            chunk = order[pos:pos + self.programs.scan_length]
            outputs = (self._run_frames_scanned(session, chunk, reverse, order)
                       if len(chunk) == self.programs.scan_length else [])
            if not outputs:  # a prompted frame, a memory refill or the tail: one frame at a time
                outputs = [self._run_frame(session, order[pos], reverse, True, lookahead=order)]
            pos += len(outputs)
            yield from outputs

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
        `lookahead` (the propagation order; else the next frames of the video), so frames are encoded in
        batches ahead of the memory loop, always of one size (`programs.frames()`: one program)."""
        cache = session._vision_cache
        if frame_idx not in cache:
            size = self.programs.frames()
            if frame_idx in lookahead:
                pos = list(lookahead).index(frame_idx)
                batch = list(lookahead[pos:pos + size])
            else:
                last = frame_idx + 1 if session.streaming else min(frame_idx + size, session.num_frames)
                batch = [f for f in range(frame_idx, last) if f not in cache or f == frame_idx]
            frames = []
            for f in batch:
                try:
                    frames.append(self._pixel_values(session, f))
                except VideoError:
                    if f == frame_idx:
                        raise
                    break  # a damaged frame ahead: its error comes when tracking reaches it
            batch = batch[:len(frames)]
            frames += frames[-1:] * (size - len(batch))
            encoded = self.programs("encode", self.params, np.stack(frames))
            for f, features in zip(batch, encoded):
                cache[f] = features
            keep = max(session.max_vision_features_cache_size, len(batch))
            while len(cache) > keep:  # oldest first; the batch just encoded is the newest
                del cache[next(iter(cache))]
        return cache[frame_idx]

    def _pixel_values(self, session, frame_idx: int) -> np.ndarray:
        if session.streaming:
            return session.streamed_frames[frame_idx]
        pixels, _ = processing.preprocess_images(session.video[frame_idx], size=session.image_size)
        return np.asarray(pixels[0].transpose(1, 2, 0), self.dtype)

    def _run_frame(self, session, frame_idx: int, reverse: bool, run_mem_encoder: bool, lookahead=()):
        """transformers `forward` on one frame: its per-object state machine, then one batched jitted step."""
        plan = SessionPlan(self.config, session, self.dtype)
        steps = plan.plan_frame(frame_idx, reverse)
        features = self._features(session, frame_idx, lookahead)
        plan.ensure_bank()
        inputs = plan.step_inputs(frame_idx, steps, run_mem_encoder, refill=True)
        masks = mask_prompts(steps, session.image_size, len(inputs.use_memory))
        session._state, out = self.programs("step", self.params, session._state, features, inputs, masks)
        out = jax.tree_util.tree_map(np.asarray, out)
        plan.advance(frame_idx, steps)
        runtime.heap_trimmer.count(1)
        return self._output(session, frame_idx, *plan.record(frame_idx, steps, out))

    def _run_frames_scanned(self, session, frames: list[int], reverse: bool,
                            order=()) -> list[Sam2VideoSegmentationOutput]:
        """Tracked frames (no prompts, no memory refills) as one jitted `lax.scan` (same step, same numbers).

        Returns the outputs of the leading frames that qualified (possibly none)."""
        try:  # before planning, which advances the session's bookkeeping
            features = [self._features(session, f, order) for f in frames]
        except VideoError:
            return []  # a damaged frame ahead: frame by frame, so the frames before it are tracked
        plan = SessionPlan(self.config, session, self.dtype)
        plan.ensure_bank()
        planned = plan.plan_scan(frames, reverse)
        if not planned:
            return []
        # A scan is always `scan_length` frames (one program): a shorter one repeats its last frame, writing nothing.
        shape, pad = session._planner.shape, len(frames) - len(planned)
        last = planned[-1][2]
        idle = last._replace(write_cond_slot=np.full_like(last.write_cond_slot, shape.cond_capacity),
                             write_recent_slot=np.full_like(last.write_recent_slot, shape.ring))
        inputs = jax.tree_util.tree_map(lambda *xs: np.stack(xs),
                                        *[step_inputs for _, _, step_inputs in planned], *[idle] * pad)
        features = features[:len(planned)] + features[len(planned) - 1:len(planned)] * pad
        session._state, out = self.programs("scan", self.params, session._state, tuple(features), inputs)
        out = jax.tree_util.tree_map(np.asarray, out)
        runtime.heap_trimmer.count(len(planned))
        return [self._output(session, f, *plan.record(f, steps, jax.tree_util.tree_map(lambda x: x[t], out)))
                for t, (f, steps, _) in enumerate(planned)]

    @staticmethod
    def _output(session, frame_idx: int, pred_masks, scores) -> Sam2VideoSegmentationOutput:
        return Sam2VideoSegmentationOutput(  # shaped on the host and put on the device: no program of their own
            object_ids=session.obj_ids, pred_masks=jax.device_put(np.asarray(pred_masks)[:, None]),
            object_score_logits=jax.device_put(np.asarray(scores)[:, None]), frame_idx=frame_idx)


class EdgeTamVideoModel(Sam2VideoModel):
    """EdgeTAM video tracking, mirroring transformers `EdgeTamVideoModel`: `Sam2VideoModel` restricted to EdgeTAM
    configs and checkpoints (model_type "edgetam_video"). Sessions, processors and every flow are SAM 2's."""

    model_type = "edgetam_video"
    accepted_model_types = ()
    edgetam_accepted_model_types = ("edgetam_video",)
