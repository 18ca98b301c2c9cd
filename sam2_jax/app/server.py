"""The web annotator's server: FastAPI over the library's video sessions (no tracking code of its own).

One `Annotation` per browser tab (`annotation`) holds a video session, its prompts and masks; the model is
loaded and compiled once and shared by all tabs. Masks travel to the page as uncompressed COCO RLE counts
(column-major run lengths, 0s first), frames as JPEG.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel

from ..io.frames import IMAGE_SUFFIXES
from .annotation import EXPORTS, Annotation, AppError

STATIC = Path(__file__).parent / "static"
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".avi", ".mkv", ".m4v")


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
               idle_timeout: float = 1800.0, model_name: str = "", warmed: threading.Event | None = None) -> FastAPI:
    """The FastAPI app: the page and its JSON API, sessions for `model` and `processor` (loaded once, shared).

    root: the video file or folder whose videos the page may open (nothing else is served); None for uploads
      only. max_video_bytes: the largest video (file, frame folder, upload) accepted. idle_timeout: seconds
      without a request after which a tab's session is freed (closing the tab frees it at once). warmed: set
      when the model's programs are compiled (a warm-up in the background); until then the page says it is
      compiling (a click may wait for a compilation). None: nothing to wait for.
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

    def refine(sid: str, action) -> dict:
        """Run `action(annotation)`, a prompt given or taken back, which returns its frame and the propagation
        passes to run again (a tracked frame changed); reply with that frame's masks and the seconds it took,
        and start the passes (their thread takes over the annotation's lock)."""
        found = annotation(sid)
        found.check_idle()
        found.lock.acquire()
        handed = False  # to the propagation thread, which releases the lock when it ends
        try:
            began = time.perf_counter()
            frame, passes = action(found)
            reply = {**found.frame_masks(frame), "seconds": round(time.perf_counter() - began, 4),
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

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():  # the page links the same icon; this is for the JSON pages opened in a tab
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/api/videos")
    def videos():
        return {"videos": list_videos(root), "max_video_mb": max_video_bytes / 2**20, "model": model_name,
                "compiling": warmed is not None and not warmed.is_set()}

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
        return refine(sid, lambda a: (body.frame, a.add_prompt(body.frame, body.obj_id, body.point, body.label,
                                                                body.box)))

    @app.post("/api/sessions/{sid}/undo")
    def undo(sid: str):
        return refine(sid, Annotation.undo)

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
