"""`sam2-jax app`: serve the browser annotator (`sam2_jax.app`, docs/app.md) until Ctrl-C.

Only the command line lives here, so that `sam2-jax` works without the `app` extra (FastAPI and uvicorn,
imported when the command runs).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .. import runtime
from .options import int_type, model_config, positive

MAX_OBJECTS = 16  # the warm-up compiles what a session of up to this many objects runs; more compile on first use

EPILOG = """\
The page: open a video (from the folder given, or an upload); add an object and click on it (left click:
positive point, right or shift click: negative point, drag: box; Ctrl+Z undoes the last one); propagate
forward, backward or both; a click on a tracked frame refines it and propagates again from there; export
DAVIS PNGs, COCO RLE JSON or the overlay mp4. Its keys are listed on it. See docs/app.md.

example:
  sam2-jax app clips/ --model sam2-jax-shapes          # then open http://127.0.0.1:7860
"""


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a size in MB > 0, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `sam2-jax app`."""
    p.description = "Annotate videos in the browser: click objects, propagate, correct, export."
    p.epilog, p.formatter_class = EPILOG, argparse.RawDescriptionHelpFormatter
    p.add_argument("video", nargs="?", metavar="VIDEO_OR_FOLDER",
                   help="a video file, a folder of frames, or a folder of videos and frame folders that the page "
                        "may open (only these are served; without it, videos are uploaded)")
    p.add_argument("--model", required=True, metavar="DIR", help="a video checkpoint folder (config.json and "
                                                                 "model.safetensors) or sam2-jax-shapes")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: %(default)s, this "
                                                       "machine only)")
    p.add_argument("--port", type=int_type(lambda v: 0 <= v < 65536, "a port in 0..65535"), default=7860,
                   help="(default: %(default)s)")
    p.add_argument("--max-video-mb", type=_megabytes, default=500.0, metavar="MB",
                   help="refuse videos (files, frame folders, uploads) larger than this (default: %(default)s)")
    p.add_argument("--idle-timeout", type=positive, default=1800, metavar="S",
                   help="free a tab's session after S seconds without requests (default: %(default)s)")
    p.add_argument("--compile-cache", metavar="DIR", default=str(runtime.DEFAULT_COMPILE_CACHE),
                   help="as for track (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Load the model once, compile it, then serve the page until Ctrl-C; returns the exit status."""
    try:
        import uvicorn

        from ..app import server
    except ImportError as err:
        raise ValueError(f"the app needs its extra ({err}): pip install 'sam2-jax[app]'") from None
    from ..transformers_api.video_model import Sam2VideoModel
    from ..transformers_api.video_processor import Sam2VideoProcessor

    root = None if args.video is None else Path(args.video)
    if root is not None and not root.exists():
        raise ValueError(f"VIDEO_OR_FOLDER: {args.video!r} does not exist")
    model_config(args.model)  # a clear error for a bad --model
    runtime.enable_compile_cache(args.compile_cache)
    print(f"model: {args.model}: loading...", flush=True)
    model = Sam2VideoModel.from_pretrained(args.model)
    processor = Sam2VideoProcessor.from_pretrained(args.model)
    warming = model.warm_up(max_objects=MAX_OBJECTS)  # the page says "compiling" until it has finished
    app = server.create_app(model, processor, root=root, max_video_bytes=int(args.max_video_mb * 2**20),
                            idle_timeout=args.idle_timeout, model_name=args.model, warmed=warming.finished)
    print(f"open http://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        warming.stop()
        warming.finished.wait()  # the program being compiled, then the process may end
    return 0
