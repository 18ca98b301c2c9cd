"""The web annotator's server: FastAPI over the library's video sessions (no tracking code of its own).

One `Annotation` per browser tab holds a `Sam2VideoInferenceSession` (made with
`add_all_frames_to_correct_as_cond=True`, so a correction on a tracked frame is kept), the prompts and the
masks shown on the page. The model is loaded and compiled once and shared by all tabs. Every change to an
annotation holds its lock; a propagation runs in a background thread that holds the lock until it ends,
and the requests that would change the annotation meanwhile are refused with a message (the page shows
it), so requests never interleave in a session. Masks travel to the page as uncompressed COCO RLE counts
(column-major run lengths, 0s first), frames as JPEG.
"""

from __future__ import annotations

import dataclasses
import io
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from PIL import Image
from pydantic import BaseModel

from ..video import IMAGE_SUFFIXES, PromptMark, make_writer, open_video, rle_counts

STATIC = Path(__file__).parent / "static"
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v")
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
        for masks in self.masks.values():
            masks.pop(obj_id, None)

    def clear_frame(self, frame: int) -> None:
        """Remove every object's prompts on a frame (the library's `clear_prompts_in_frame`) and the masks
        shown there, until the next click or propagation."""
        self._check_frame(frame)
        for f, obj_id in [key for key in self.prompts if key[0] == frame]:
            self.session.clear_prompts_in_frame(frame, obj_id)
            del self.prompts[f, obj_id]
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
        old = self.prompts.get((frame, obj_id), {"points": [], "labels": [], "box": None})
        new = {"points": old["points"] + ([list(point)] if point is not None else []),
               "labels": old["labels"] + ([int(label)] if point is not None else []),
               "box": list(box) if box is not None else old["box"]}
        inputs = {}
        if new["points"]:
            inputs.update(input_points=[[new["points"]]], input_labels=[[new["labels"]]])
        if new["box"] is not None:
            inputs["input_boxes"] = [[new["box"]]]
        self.processor.add_inputs_to_inference_session(self.session, frame_idx=frame, obj_ids=obj_id, **inputs)
        self.prompts[frame, obj_id] = new
        self._store(self.model(inference_session=self.session, frame_idx=frame))
        return [(frame, reverse) for reverse in self.directions] if frame in self.tracked else []

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


def list_videos(root: Path | None) -> list[str]:
    """What the page may open from `root`: the file itself, or in a folder its video files and the subfolders
    of frames ("." for the folder itself when it holds frames)."""
    if root is None:
        return []
    if root.is_file():
        return [root.name]
    names = ["."] if _has_frames(root) else []
    for path in sorted(root.iterdir()):
        if path.name.startswith("."):
            continue
        if (path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES) or (path.is_dir() and _has_frames(path)):
            names.append(path.name)
    return names


def _has_frames(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())


def _size(path: Path) -> int:
    """Bytes of a file, or of the frames of a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class Prompt(BaseModel):
    """A prompt from the page: a point (x, y) with its label (1 positive, 0 negative), or a box."""

    frame: int
    obj_id: int
    point: tuple[float, float] | None = None
    label: int = 1
    box: tuple[float, float, float, float] | None = None


class Direction(BaseModel):
    """The direction of a propagation: forward, backward or both."""

    direction: str = "forward"


class OpenVideo(BaseModel):
    """A video to open from the served folder, by its name in the listing."""

    name: str


def create_app(model, processor, root: Path | None = None, max_video_bytes: int = 500 * 2**20,
               idle_timeout: float = 1800.0, model_name: str = "") -> FastAPI:
    """The FastAPI app: the page and its JSON API, sessions for `model` and `processor` (loaded once, shared).

    root: the video file or folder whose videos the page may open (nothing else is served); None for uploads
      only. max_video_bytes: the largest video (file, frame folder, upload) accepted. idle_timeout: seconds
      without a request after which a tab's session is freed (closing the tab frees it at once).
    """
    root = None if root is None else Path(root).resolve()
    sessions: dict[str, Annotation] = {}
    registry_lock = threading.Lock()
    upload_root = Path(tempfile.mkdtemp(prefix="sam2-jax-app-"))
    stopping = threading.Event()

    def reap_idle() -> None:
        """Close the sessions idle for longer than `idle_timeout` (not while they propagate)."""
        now = time.monotonic()
        with registry_lock:
            idle = [sid for sid, a in sessions.items()
                    if now - a.last_seen > idle_timeout and not (a.job and a.job.running)]
            closing = [sessions.pop(sid) for sid in idle]
        for annotation in closing:
            annotation.close()

    def reap() -> None:
        while not stopping.wait(min(30.0, idle_timeout / 4)):
            reap_idle()

    async def lifespan(app):
        reaper = threading.Thread(target=reap, daemon=True, name="sam2-jax app reaper")
        reaper.start()
        yield
        stopping.set()
        with registry_lock:
            closing = list(sessions.values())
            sessions.clear()
        for annotation in closing:
            annotation.close()
        shutil.rmtree(upload_root, ignore_errors=True)

    app = FastAPI(title="sam2-jax annotator", lifespan=lifespan)
    app.state.sessions = sessions
    app.state.upload_root = upload_root
    app.state.reap_idle = reap_idle
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(AppError)
    async def app_error(request: Request, err: AppError):
        return JSONResponse({"detail": str(err)}, status_code=err.status)

    def annotation(sid: str) -> Annotation:
        with registry_lock:
            found = sessions.get(sid)
        if found is None:
            raise AppError("this session is closed or expired; open the video again", 404)
        found.last_seen = time.monotonic()
        return found

    def start(name: str, path: Path, upload_dir: Path | None = None) -> dict:
        size = _size(path)
        if size > max_video_bytes:
            raise AppError(f"{name} is {size / 2**20:.1f} MB, over the limit of {max_video_bytes / 2**20:.1f} MB "
                           "(--max-video-mb)", 413)
        try:
            opened = Annotation(name, path, model, processor, upload_dir)
        except (ValueError, TypeError, OSError) as err:
            raise AppError(f"{name} cannot be opened as a video: {err}") from err
        sid = secrets.token_urlsafe(16)
        with registry_lock:
            sessions[sid] = opened
        return {"session": sid, **opened.info()}

    def change(sid: str, action):
        """Run `action(annotation)` under the annotation's lock, refused while a propagation runs."""
        found = annotation(sid)
        found.check_idle()
        with found.lock:
            try:
                return action(found)
            except (ValueError, TypeError) as err:  # the library's checks: the session is unchanged
                raise AppError(str(err)) from err

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/videos")
    def videos():
        return {"videos": list_videos(root), "max_video_mb": max_video_bytes / 2**20, "model": model_name}

    @app.post("/api/sessions")
    def open_listed(body: OpenVideo):
        if body.name not in list_videos(root):
            raise AppError(f"{body.name!r} is not among the videos served here", 404)
        return start(body.name, root if root.is_file() or body.name == "." else root / body.name)

    @app.post("/api/sessions/upload")
    async def upload(request: Request, filename: str):
        folder = Path(tempfile.mkdtemp(dir=upload_root))
        path = folder / (Path(filename).name or "upload")
        written = 0
        try:
            with open(path, "wb") as file:
                async for chunk in request.stream():
                    written += len(chunk)
                    if written > max_video_bytes:
                        raise AppError(f"{path.name} is over the limit of {max_video_bytes / 2**20:.1f} MB "
                                       "(--max-video-mb)", 413)
                    file.write(chunk)
            return await run_in_threadpool(start, path.name, path, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    @app.post("/api/sessions/{sid}/close")
    def close(sid: str):
        with registry_lock:
            found = sessions.pop(sid, None)
        if found is not None:
            found.close()
        return {"closed": found is not None}

    @app.get("/api/sessions/{sid}/frames/{frame}")
    def frame_image(sid: str, frame: int):
        return Response(annotation(sid).frame_jpeg(frame), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/sessions/{sid}/frames/{frame}/masks")
    def frame_masks(sid: str, frame: int):
        return annotation(sid).frame_masks(frame)

    @app.post("/api/sessions/{sid}/objects")
    def add_object(sid: str):
        return {"obj_id": change(sid, Annotation.add_object)}

    @app.delete("/api/sessions/{sid}/objects/{obj_id}")
    def remove_object(sid: str, obj_id: int):
        change(sid, lambda a: a.remove_object(obj_id))
        return {"objects": annotation(sid).objects}

    @app.delete("/api/sessions/{sid}/frames/{frame}/prompts")
    def clear_frame(sid: str, frame: int):
        change(sid, lambda a: a.clear_frame(frame))
        return annotation(sid).frame_masks(frame)

    @app.post("/api/sessions/{sid}/prompts")
    def add_prompt(sid: str, body: Prompt):
        if (body.point is None) == (body.box is None):
            raise AppError("expected a point or a box")
        if body.label not in (0, 1):
            raise AppError(f"label: expected 1 (positive) or 0 (negative), got {body.label}")
        found = annotation(sid)
        found.check_idle()
        found.lock.acquire()
        handed = False  # to the propagation thread, which releases the lock when it ends
        try:
            began = time.perf_counter()
            passes = found.add_prompt(body.frame, body.obj_id, body.point, body.label, body.box)
            reply = {**found.frame_masks(body.frame), "seconds": round(time.perf_counter() - began, 4),
                     "propagating": bool(passes)}
            if passes:
                found.propagate(passes)
                handed = True
            return reply
        except (ValueError, TypeError) as err:  # the library's checks: the session is unchanged
            raise AppError(str(err)) from err
        finally:
            if not handed:
                found.lock.release()

    @app.post("/api/sessions/{sid}/propagate")
    def propagate(sid: str, body: Direction):
        if body.direction not in ("forward", "backward", "both"):
            raise AppError(f"direction: expected forward, backward or both, got {body.direction!r}")
        found = annotation(sid)
        found.check_idle()
        found.lock.acquire()
        try:
            found.propagate(found.passes(body.direction))  # the propagation thread releases the lock
        except BaseException:
            found.lock.release()
            raise
        return found.progress()

    @app.post("/api/sessions/{sid}/stop")
    def stop(sid: str):
        found = annotation(sid)
        found.stop()
        return found.progress()

    @app.get("/api/sessions/{sid}/progress")
    def progress(sid: str):
        return annotation(sid).progress()

    @app.get("/api/sessions/{sid}/export/{format}")
    def export(sid: str, format: str):
        if format not in EXPORTS:
            raise AppError(f"format: expected one of {', '.join(EXPORTS)}, got {format!r}")
        found = annotation(sid)
        data = change(sid, lambda a: a.export(format))
        suffix, media_type = EXPORTS[format]
        filename = f"{Path(found.name).stem or 'video'}{suffix}"
        return Response(data, media_type=media_type,
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    return app


def warm_up(model, processor, thorough: bool = False, stop: threading.Event | None = None) -> None:
    """Compile the model's programs on a generated clip, so that clicks on the page answer at once: a click
    and a propagation; with `thorough` also what later clicks need (programs are compiled per number of
    objects, of points on a frame (1, 2, 4, 8...) and of corrected frames): more points, a correction on a
    tracked frame and a second object. `sam2-jax app` runs the thorough one in the background, and sets
    `stop` to end it after the step in progress."""
    from ..data import generate_clip

    clip = generate_clip(0, 12, 64, 64)
    session = processor.init_video_session(video=clip.frames, add_all_frames_to_correct_as_cond=True)

    def click(frame: int, obj_id: int, points: list) -> None:
        processor.add_inputs_to_inference_session(session, frame_idx=frame, obj_ids=obj_id, input_points=[[points]],
                                                  input_labels=[[[1] * len(points)]])
        processor.post_process_masks([model(inference_session=session, frame_idx=frame).pred_masks], [(64, 64)])

    def propagate(start: int) -> None:
        for _ in model.propagate_in_video_iterator(session, start_frame_idx=start):
            pass

    points = [[32, 32], [30, 30], [34, 34]]
    steps = [(click, 0, 1, points[:1]), (propagate, 0)]
    if thorough:
        for frame in (0, 5):  # the first prompted frame, then a correction (with memory)
            steps += [(click, frame, 1, points[:n]) for n in (1, 2, 3)]
        steps += [(propagate, 5), (click, 0, 2, [[10, 10]]), (propagate, 0)]
    for step, *args in steps:
        if stop is not None and stop.is_set():
            return
        step(*args)
