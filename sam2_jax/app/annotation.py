"""One annotation of the browser annotator: a video session, its prompts and masks, its propagation in the
background, its exports.

One `Annotation` per browser tab holds a `Sam2VideoInferenceSession` (made with
`add_all_frames_to_correct_as_cond=True`, so a correction on a tracked frame is kept), the prompts and the
masks shown on the page. Every change to an annotation holds its lock; a propagation runs in a background
thread that holds the lock until it ends, and the requests that would change the annotation meanwhile are
refused with a message (the page shows it), so requests never interleave in a session.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..io.frames import open_video
from ..io.writers import PromptMark, make_writer, rle_counts

EXPORTS = {"davis": ("_davis.zip", "application/zip"), "coco": ("_coco.json", "application/json"),
           "overlay": ("_overlay.mp4", "video/mp4")}

class AppError(Exception):
    """A request the page cannot have: `message` is shown on the page, `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Job:
    """A propagation running in the background, as the page polls it."""

    total: int
    started: float = dataclasses.field(default_factory=time.perf_counter)
    done: int = 0
    frame: int | None = None  # the frame tracked last
    fps: float = 0.0
    running: bool = True
    cancel: bool = False
    error: str | None = None

    def report(self) -> dict:
        """The progress the page shows."""
        return {"running": self.running, "done": self.done, "total": self.total, "frame": self.frame,
                "fps": round(self.fps, 2), "error": self.error, "stopped": self.cancel}


class Annotation:
    """One tab's video: the library's session, the page's objects and prompts, and the masks of every frame
    the model has given (post-processed to the video's size, kept as packed bits)."""

    def __init__(self, name: str, path: Path, model, processor, upload_dir: Path | None = None):
        self.name, self.model, self.processor, self.upload_dir = name, model, processor, upload_dir
        self.session = processor.init_video_session(video=str(path), add_all_frames_to_correct_as_cond=True)
        self.display = open_video(str(path))  # the page's own reader: the session's is busy while propagating
        self.display_lock = threading.Lock()
        self.lock = threading.Lock()
        self.height, self.width = self.session.video_height, self.session.video_width
        self.num_frames = self.session.num_frames
        self.fps = self.display.fps or 24.0
        self.objects: list[int] = []  # ids, in the order they were added on the page
        self.next_id = 1
        self.prompts: dict[tuple[int, int], dict] = {}  # (frame, obj_id) -> {"points", "labels", "box"}
        self.history: list[tuple[int, int, dict]] = []  # each prompt given, in order: (frame, obj_id, {"point",
        # "label", "box"}); folding it with `_merged` gives `prompts`, and undo takes its last one back
        self.masks: dict[int, dict[int, np.ndarray]] = {}  # frame -> {obj_id: packed bits of its mask}
        self.tracked: set[int] = set()  # frames a propagation reached
        self.directions = [False]  # the `reverse` of each pass of the last propagation
        self.job: Job | None = None
        self.last_seen = time.monotonic()

    # ------------------------------------------------------------------------------------ reading
    def info(self) -> dict:
        """What the page needs to show the video."""
        return {"name": self.name, "num_frames": self.num_frames, "width": self.width, "height": self.height,
                "fps": self.fps, "objects": self.objects}

    def frame_jpeg(self, frame: int) -> bytes:
        """Frame `frame` as a JPEG."""
        self._check_frame(frame)
        with self.display_lock:
            pixels = self.display[frame]
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()

    def frame_masks(self, frame: int) -> dict:
        """The masks of a frame as RLE counts, and its prompts."""
        self._check_frame(frame)
        masks = list(self.masks.get(frame, {}).items())  # a copy: a propagation may be changing them
        return {"frame": frame,
                "masks": [{"obj_id": obj_id, "counts": rle_counts(self._unpack(bits))} for obj_id, bits in masks],
                "prompts": [{"obj_id": obj_id, **prompt} for (f, obj_id), prompt in list(self.prompts.items())
                            if f == frame]}

    def progress(self) -> dict:
        """The propagation's progress (nothing running if none ever ran)."""
        if self.job is None:
            return Job(0, running=False).report()
        return self.job.report()

    # ----------------------------------------------------------------------------------- changing
    def check_idle(self) -> None:
        """Refuse a change while a propagation runs."""
        job = self.job
        if job is not None and job.running:
            raise AppError(f"propagation is running ({job.done}/{job.total} frames); wait for it or press Stop",
                           409)

    def add_object(self) -> int:
        """A new object id (ids of removed objects are not reused, as in the library)."""
        obj_id = self.next_id
        self.next_id += 1
        self.objects.append(obj_id)
        return obj_id

    def remove_object(self, obj_id: int) -> None:
        """Forget an object, its prompts and its masks."""
        self._check_object(obj_id)
        if obj_id in self.session.obj_ids:
            self.session.remove_object(obj_id)
        self.objects.remove(obj_id)
        self.prompts = {key: p for key, p in self.prompts.items() if key[1] != obj_id}
        self.history = [step for step in self.history if step[1] != obj_id]
        for masks in self.masks.values():
            masks.pop(obj_id, None)

    def clear_frame(self, frame: int) -> None:
        """Remove every object's prompts on a frame (the library's `clear_prompts_in_frame`) and the masks
        shown there, until the next click or propagation."""
        self._check_frame(frame)
        for f, obj_id in [key for key in self.prompts if key[0] == frame]:
            self.session.clear_prompts_in_frame(frame, obj_id)
            del self.prompts[f, obj_id]
        self.history = [step for step in self.history if step[0] != frame]
        self.masks.pop(frame, None)

    def add_prompt(self, frame: int, obj_id: int, point=None, label: int = 1, box=None) -> list[tuple[int, bool]]:
        """Add a point (x, y) or set the box (x1, y1, x2, y2) of an object on a frame and run the model on that
        frame (all objects' masks). Returns the propagation passes (start, reverse) to run again when the frame
        had been tracked (a correction), else none."""
        self._check_frame(frame)
        self._check_object(obj_id)
        for x, y in ([point] if point is not None else []) + ([box[:2], box[2:]] if box is not None else []):
            if not (0 <= x <= self.width and 0 <= y <= self.height):
                raise AppError(f"({x:g}, {y:g}) is outside the frame ({self.width}x{self.height} px)")
        if box is not None and not (box[0] < box[2] and box[1] < box[3]):
            raise AppError(f"box: expected x1 < x2 and y1 < y2, got {box}")
        given = {"point": point, "label": label, "box": box}
        self._give(frame, obj_id, _merged(self.prompts.get((frame, obj_id)), **given))
        self.history.append((frame, obj_id, given))
        return self._again(frame)

    def undo(self) -> tuple[int, list[tuple[int, bool]]]:
        """Take back the last prompt, leaving the session as if it had never been given: the object's earlier
        prompts on that frame replace its prompts there (`clear_prompts_in_frame`, then given again) and the frame
        is run again; if it had none there, the session is made again from the prompts left, because the library
        keeps an object's conditioning output on a frame whose prompts are cleared. Returns the frame and the
        propagation passes (start, reverse) to run again when frames had been tracked."""
        if not self.history:
            raise AppError("nothing to undo")
        frame, obj_id, _ = self.history[-1]
        before = None
        for f, o, given in self.history[:-1]:
            if (f, o) == (frame, obj_id):
                before = _merged(before, **given)
        if before is not None:
            self.session.clear_prompts_in_frame(frame, obj_id)
            self._give(frame, obj_id, before)
            self.history.pop()
            return frame, self._again(frame)
        tracked = bool(self.tracked)
        self.history.pop()
        self._replay()
        if not (tracked and self.prompts):
            return frame, []
        start = min(f for f, _ in self.prompts)
        return frame, [(start, reverse) for reverse in self.directions]

    def passes(self, direction: str) -> list[tuple[int, bool]]:
        """The propagation passes (start, reverse) of a direction, from the first prompted frame."""
        if not self.prompts:
            raise AppError("nothing to propagate: add an object and click on it first")
        start = min(frame for frame, _ in self.prompts)
        return {"forward": [(start, False)], "backward": [(start, True)],
                "both": [(start, False), (start, True)]}[direction]

    def propagate(self, passes: list[tuple[int, bool]]) -> None:
        """Run `passes` (start, reverse) in a background thread that owns the lock (held by the caller) until
        it ends; the page polls `progress`."""
        # frames each pass visits (the library's: backward from frame 0 visits none)
        total = sum((start + 1 if start else 0) if reverse else self.num_frames - start for start, reverse in passes)
        self.job = Job(total)
        self.directions = [reverse for _, reverse in passes]
        threading.Thread(target=self._propagate, args=(self.job, passes), daemon=True,
                         name=f"propagate {self.name}").start()

    def stop(self) -> None:
        """Ask a running propagation to stop after the frames in flight."""
        if self.job is not None:
            self.job.cancel = True

    def export(self, format: str) -> bytes:
        """The masks of every frame in `format` (davis: a zip of the PNGs; coco: the JSON; overlay: the mp4
        of every frame, prompts drawn)."""
        if not any(self.masks.values()):
            raise AppError("nothing to export yet: click an object (and propagate) first")
        with tempfile.TemporaryDirectory(prefix="sam2-jax-export-") as tmp:
            out = Path(tmp) / ("masks" if format == "davis" else "masks" + Path(EXPORTS[format][0]).suffix)
            options = {}
            if format == "overlay":
                options = {"fps": self.fps, "prompts": [
                    PromptMark(frame, obj_id, p["points"], p["labels"], p["box"])
                    for (frame, obj_id), p in self.prompts.items()]}
            frames = range(self.num_frames) if format == "overlay" else sorted(self.masks)
            with make_writer(format, out, **options) as writer:
                for frame in frames:
                    masks = self.masks.get(frame, {})
                    stack = np.stack([self._unpack(b) for b in masks.values()]) if masks else np.zeros(
                        (0, self.height, self.width), bool)
                    pixels = None
                    if format == "overlay":
                        with self.display_lock:
                            pixels = self.display[frame]
                    writer.write(frame, stack, list(masks), frame=pixels)
            if format != "davis":
                return out.read_bytes()
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                for png in sorted(out.iterdir()):
                    archive.write(png, png.name)
            return buffer.getvalue()

    def close(self) -> None:
        """Stop any propagation, free the session and delete the upload."""
        self.stop()
        with self.lock:  # waits for a running propagation to stop
            self.session = None
            self.masks.clear()
            with self.display_lock:  # and for a frame being read: closing PyAV's container under it segfaults
                self.display.close()
        if self.upload_dir is not None:
            shutil.rmtree(self.upload_dir, ignore_errors=True)

    # ---------------------------------------------------------------------------------- internals
    def _give(self, frame: int, obj_id: int, prompt: dict) -> None:
        """Give the session every prompt of an object on a frame ({"points", "labels", "box"}, replacing the ones
        given there before) and run the model on that frame."""
        inputs = {}
        if prompt["points"]:
            inputs.update(input_points=[[prompt["points"]]], input_labels=[[prompt["labels"]]])
        if prompt["box"] is not None:
            inputs["input_boxes"] = [[prompt["box"]]]
        self.processor.add_inputs_to_inference_session(self.session, frame_idx=frame, obj_ids=obj_id, **inputs)
        self.prompts[frame, obj_id] = prompt
        self._store(self.model(inference_session=self.session, frame_idx=frame))

    def _replay(self) -> None:
        """Make the session again from `history`: its tracking data reset (the frames' features kept), then each
        prompt given in order, its frame run. Frames tracked before lose their masks until the next propagation."""
        self.session.reset_tracking_data()
        self.prompts, self.masks, self.tracked = {}, {}, set()
        for frame, obj_id, given in self.history:
            self._give(frame, obj_id, _merged(self.prompts.get((frame, obj_id)), **given))

    def _again(self, frame: int) -> list[tuple[int, bool]]:
        """The passes of the last propagation, from `frame`, if a propagation had reached it (a correction)."""
        return [(frame, reverse) for reverse in self.directions] if frame in self.tracked else []

    def _propagate(self, job: Job, passes) -> None:
        try:
            for start, reverse in passes:
                for out in self.model.propagate_in_video_iterator(self.session, start_frame_idx=start,
                                                                  reverse=reverse):
                    self._store(out)
                    self.tracked.add(out.frame_idx)
                    job.done += 1
                    job.frame = out.frame_idx
                    job.fps = job.done / (time.perf_counter() - job.started)
                    self.last_seen = time.monotonic()
                    if job.cancel:
                        return
        except Exception as err:  # shown on the page; the session keeps the frames tracked before it
            job.error = str(err)
        finally:
            job.running = False
            self.lock.release()

    def _store(self, out) -> None:
        """Keep the post-processed masks of one output (all objects on one frame)."""
        masks = self.processor.post_process_masks([out.pred_masks], [(self.height, self.width)])[0][:, 0]
        self.masks[out.frame_idx] = {int(obj_id): np.packbits(mask) for obj_id, mask in zip(out.object_ids, masks)}

    def _unpack(self, bits: np.ndarray) -> np.ndarray:
        return np.unpackbits(bits, count=self.height * self.width).reshape(self.height, self.width).astype(bool)

    def _check_frame(self, frame: int) -> None:
        if not 0 <= frame < self.num_frames:
            raise AppError(f"frame {frame} is not in the video (frames 0 to {self.num_frames - 1})", 404)

    def _check_object(self, obj_id: int) -> None:
        if obj_id not in self.objects:
            raise AppError(f"object {obj_id} is not in this session (objects: {self.objects})", 404)


def _merged(prompt: dict | None, point=None, label: int = 1, box=None) -> dict:
    """An object's prompts on a frame ({"points", "labels", "box"}, or None for none) with a point added or the box
    set (a box replaces the one before; points stay)."""
    old = prompt or {"points": [], "labels": [], "box": None}
    return {"points": old["points"] + ([list(point)] if point is not None else []),
            "labels": old["labels"] + ([int(label)] if point is not None else []),
            "box": list(box) if box is not None else old["box"]}
