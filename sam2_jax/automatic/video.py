"""Prompt-free video: objects found by the automatic mask generator, then tracked with memory.

`Sam2AutomaticVideoTracker` seeds objects from the automatic masks (`Sam2AutomaticMaskGenerator`) of the start
frame and tracks them forward with the session API. Every `auto_every` frames the generator runs again: a mask
whose IoU with every object's mask on that frame is below `new_object_iou` becomes a new object from that frame on
(a mask prompt, as `add_inputs_to_inference_session(input_masks=...)` adds it). Masks are taken best first (the
generator's order), each also compared with the ones taken before it, so one object is not seeded twice. Ids
count up from the session's largest and are never reused: an object that leaves the video keeps its id and
an empty mask.

Frames between two generator runs are tracked by `propagate_in_video_iterator` in one call, so they run in the
model's jitted scans. A frame where new objects appear is tracked once more with them (`model(session,
frame_idx=...)`): the objects already there get the same masks again.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import jax.numpy as jnp
import numpy as np

from ..transformers_api.image import Sam2Model
from .masks import Sam2AutomaticMaskGenerator, _check_int, _check_number
from ..transformers_api.video_model import Sam2VideoModel, Sam2VideoSegmentationOutput
from ..transformers_api.video_processor import Sam2VideoProcessor
from ..transformers_api.video_session import Sam2VideoInferenceSession


def image_model(model: Sam2VideoModel) -> Sam2Model:
    """The image model inside a video model: the same weights (no copy), without the memory modules."""
    names = Sam2Model.abstract_params(model.config)
    return Sam2Model(model.config, {name: model.params[name] for name in names}, model.dtype)


@dataclasses.dataclass(frozen=True)
class Seed:
    """Where a prompt-free object came from: the frame and the generator's record (its mask as a bool array)."""

    obj_id: int
    frame_idx: int
    record: dict


class Sam2AutomaticVideoTracker:
    """Track every object of a video without prompts.

    model: a `Sam2VideoModel`; generator: the `Sam2AutomaticMaskGenerator` that finds objects (default: one with
    the original's defaults on the video model's weights; its output_mode must be "binary_mask");
    auto_every: run the generator again every this many frames (None: on the start frame only);
    max_objects: at most this many objects in the session (None: no limit); new_object_iou: a mask whose IoU with
    every object is below this is a new object; processor: turns tracked logits into masks at the video's size
    for that comparison (default: `Sam2VideoProcessor` at the model's input size).
    """

    def __init__(self, model: Sam2VideoModel, generator: Sam2AutomaticMaskGenerator | None = None,
                 auto_every: int | None = None, max_objects: int | None = None, new_object_iou: float = 0.5,
                 processor: Sam2VideoProcessor | None = None):
        if not isinstance(model, Sam2VideoModel):
            raise TypeError(f"model: expected a sam2_jax.Sam2VideoModel, got {type(model).__name__}")
        if generator is None:
            generator = Sam2AutomaticMaskGenerator(image_model(model))
        if not isinstance(generator, Sam2AutomaticMaskGenerator):
            raise TypeError(f"generator: expected a sam2_jax.Sam2AutomaticMaskGenerator, got "
                            f"{type(generator).__name__}")
        if generator.output_mode != "binary_mask":
            raise ValueError(f"generator: expected output_mode 'binary_mask' (masks become prompts), got "
                             f"{generator.output_mode!r}")
        if auto_every is not None:
            _check_int("auto_every", auto_every, 1)
        if max_objects is not None:
            _check_int("max_objects", max_objects, 1)
        _check_number("new_object_iou", new_object_iou, 0.0, 1.0)
        size = model.config.prompt_encoder_config.image_size
        if processor is None:
            processor = Sam2VideoProcessor(size=size)
        if not isinstance(processor, Sam2VideoProcessor):
            raise TypeError(f"processor: expected a sam2_jax.Sam2VideoProcessor, got {type(processor).__name__}")
        self.model, self.generator, self.processor = model, generator, processor
        self.auto_every, self.max_objects, self.new_object_iou = auto_every, max_objects, float(new_object_iou)
        self.seeds: list[Seed] = []

    def propagate(self, inference_session: Sam2VideoInferenceSession, start_frame_idx: int = 0,
                  max_frame_num_to_track: int | None = None) -> Iterator[Sam2VideoSegmentationOutput]:
        """Yield one output per frame, forward from `start_frame_idx`, as `propagate_in_video_iterator` does;
        `object_ids` grows as objects are found (`self.seeds` says where each came from). A frame before the
        first object has an output with no objects. The session may already hold prompted objects: they are
        tracked too, and found masks that match them are not added again."""
        session = self.model._check_session(inference_session)
        if session.streaming:
            raise ValueError("inference_session: prompt-free tracking needs a whole video (a session made with "
                             "init_video_session(video=...))")
        start = session._check_frame_idx(start_frame_idx, "start_frame_idx")
        if max_frame_num_to_track is not None:
            _check_int("max_frame_num_to_track", max_frame_num_to_track, 0)
        last = session.num_frames - 1 if max_frame_num_to_track is None else min(
            start + max_frame_num_to_track, session.num_frames - 1)
        step = self.auto_every or session.num_frames

        frame = start
        held = self.model(session, frame_idx=frame) if session.get_obj_num() else None
        while True:
            if (frame - start) % step == 0:
                held = self._add_new_objects(session, frame, held)
            yield held if held is not None else self._empty(session, frame)
            if frame == last:
                return
            stop = min(frame + step - (frame - start) % step, last)  # the next generator frame, or the end
            if session.get_obj_num() == 0:
                for empty in range(frame + 1, stop):
                    yield self._empty(session, empty)
                frame, held = stop, None
                continue
            outputs = list(self.model.propagate_in_video_iterator(session, start_frame_idx=frame + 1,
                                                                 max_frame_num_to_track=stop - frame - 1))
            yield from outputs[:-1]
            frame, held = stop, outputs[-1]

    # ------------------------------------------------------------------------------------- internals
    def _add_new_objects(self, session, frame_idx: int, tracked: Sam2VideoSegmentationOutput | None):
        """Run the generator on the frame; add its masks that match no object; the frame's output with them."""
        room = None if self.max_objects is None else self.max_objects - session.get_obj_num()
        if room is not None and room <= 0:
            return tracked
        size = (session.video_height, session.video_width)
        taken = [] if tracked is None else [_Region(mask) for mask in self._masks(tracked, size)]
        new = []
        for record in self.generator.generate(session.video[frame_idx]):
            region = _Region(record["segmentation"])
            if all(region.iou(other) < self.new_object_iou for other in taken):
                taken.append(region)
                new.append(record)
                if room is not None and len(new) == room:
                    break
        if not new:
            return tracked
        first_id = max((int(i) for i in session.obj_ids), default=0) + 1
        ids = list(range(first_id, first_id + len(new)))
        self.processor.add_inputs_to_inference_session(session, frame_idx=frame_idx, obj_ids=ids,
                                                       input_masks=[r["segmentation"] for r in new])
        self.seeds += [Seed(obj_id, frame_idx, record) for obj_id, record in zip(ids, new)]
        return self.model(session, frame_idx=frame_idx)

    def _masks(self, output: Sam2VideoSegmentationOutput, size: tuple[int, int]) -> np.ndarray:
        """The output's masks at the video's size, (N, H, W) bool."""
        return np.asarray(self.processor.post_process_masks([output.pred_masks], [size], binarize=True)[0][:, 0])

    def _empty(self, session, frame_idx: int) -> Sam2VideoSegmentationOutput:
        low_res = self.model.config.prompt_encoder_config.image_size // 4
        return Sam2VideoSegmentationOutput(object_ids=[], pred_masks=jnp.zeros((0, 1, low_res, low_res)),
                                           object_score_logits=jnp.zeros((0, 1)), frame_idx=frame_idx)


class _Region:
    """A mask with its bounding box and area, for IoU counted inside the boxes' overlap only."""

    def __init__(self, mask: np.ndarray):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        self.mask, self.area = mask, int(mask.sum())
        self.box = (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) if self.area else (0, 0, 0, 0)

    def iou(self, other: _Region) -> float:
        y0, x0 = max(self.box[0], other.box[0]), max(self.box[2], other.box[2])
        y1, x1 = min(self.box[1], other.box[1]), min(self.box[3], other.box[3])
        inter = int((self.mask[y0:y1, x0:x1] & other.mask[y0:y1, x0:x1]).sum()) if y0 < y1 and x0 < x1 else 0
        union = self.area + other.area - inter
        return inter / union if union else 0.0
