"""Soaks: a long stream and a long video through `Sam2VideoModel`, checking that nothing grows or recompiles.

    python -m benchmarks.soak [--frames 10000] [--offline-frames 2000] [--offline-size 256] [--rerun-frames 100]
        [--image-size 256] [--objects 2] [--warm-up 200] [--cores N] [--json PATH] [--out benchmarks/results/]

`small_config` at --image-size, random weights:
- streaming: a fresh streaming session, one click per object on frame 0, then --frames generated frames
  (`common.moving_shapes` at the model's size, made one at a time) through
  `model(inference_session=session, frame=...)`. At frames 100, 1,000, 10,000 and every 1/50 of the stream: the
  process's RSS (its highest reading, taken after every frame, since the previous sample: RSS swings by some
  MiB as transient buffers come and go), the device memory (JAX's statistics where the device reports them; on
  the CPU, which reports none, the bytes of all live jax arrays), the session's `nbytes` and the compilations so
  far (JAX's backend-compile events). Checks: RSS and device memory less than 5% above their level at --warm-up
  (the highest reading between half of it and it), and no compilation after it. Sessions give the C heap's free
  pages back every 100 frames (`release_free_host_memory`): the first time, at frame 100, RSS drops by what
  compilation left free, so the default warm-up of 200 frames starts after it;
- reruns: --rerun-frames of the stream twice, fresh sessions on the same model: every mask bitwise the same;
- offline, each in a fresh process (no memory freed by earlier work to reuse): a --offline-frames video of
  --offline-size pixels held as one (T, H, W, 3) uint8 array, one click per object on frame 0,
  `propagate_in_video_iterator` over it, outputs dropped. The model is first compiled on a short video of the
  same size, and RSS is counted from before the video is made (the heap's free pages given back first, so that
  they cannot hide what the session keeps). Check: host memory stays within the video's size
  plus a constant, i.e. the highest RSS grows by less than 5% of the video's size after the first tenth of the
  frames. Run as sessions run by default (`keep_memory_archive`, on for whole videos: every tracked frame's
  memory is archived on the host, so that propagation can restart anywhere) and without the archive.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import sys
import time

import jax
import numpy as np

from sam2_jax import Sam2VideoInferenceSession, Sam2VideoModel, Sam2VideoProcessor
from sam2_jax.config import small_config
from sam2_jax.runtime import release_free_host_memory

from .common import MIB, describe, device_memory, in_fresh_process, machine, markdown_table, moving_shapes, rss, \
    save, use_cores
from .video import progress

MARKS = (100, 1000, 10000)
TOLERANCE = 0.05  # flat: at most 5% of growth after warm-up


@contextlib.contextmanager
def counting_compilations():
    """A list that gets the name of every program XLA compiles (or loads from the persistent cache) meanwhile."""
    names = []

    def listen(event: str, seconds: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def device_bytes() -> tuple[int, str]:
    """Device memory in use and where the number comes from: JAX's statistics, or (on the CPU, which has none)
    the bytes of all live jax arrays."""
    stats = device_memory()
    if stats and "bytes_in_use" in stats:
        return stats["bytes_in_use"], "memory_stats bytes_in_use"
    return sum(a.nbytes for a in jax.live_arrays()), "live jax arrays"


def growth(samples: list[dict], key: str, warm_up: int) -> float:
    """The rise of samples[key] after frame `warm_up` over its level in the window ending there (the highest
    readings of each), as a fraction of that level."""
    base = next(s[key] for s in samples if s["frames"] == warm_up)
    return max(s[key] for s in samples if s["frames"] >= warm_up) / base - 1


def stream(model: Sam2VideoModel, frames: int, objects: int = 2, warm_up: int = 200, **session_options) -> dict:
    """Stream `frames` generated frames through a fresh session; readings at the marks, checks after `warm_up`."""
    size = model.config.image_size
    processor = Sam2VideoProcessor(size=size)
    session = processor.init_video_session(**session_options)
    every = max(frames // 50, 1)
    marks = {warm_up // 2, warm_up, frames, *(m for m in MARKS if m <= frames), *range(every, frames + 1, every)}
    digest, samples, peak, start = hashlib.sha256(), [], 0, time.perf_counter()
    with counting_compilations() as compiled:
        for t in range(frames):
            frame, clicks = moving_shapes(t, size, size, objects)
            inputs = processor(images=frame)
            if t == 0:
                processor.add_inputs_to_inference_session(
                    session, frame_idx=0, obj_ids=list(range(1, objects + 1)), input_points=[[[c] for c in clicks]],
                    input_labels=[[[1]] * objects], original_size=(size, size))
            out = model(inference_session=session, frame=inputs["pixel_values"][0])
            digest.update(np.asarray(out.pred_masks).tobytes())
            peak = max(peak, rss())
            if t + 1 in marks:
                in_use, source = device_bytes()
                samples.append({"frames": t + 1, "seconds": round(time.perf_counter() - start, 1), "rss": peak,
                                "device": in_use, "session_nbytes": session.nbytes, "compilations": len(compiled)})
                peak = 0
    at_warm_up = next(s for s in samples if s["frames"] == warm_up)
    return {"frames": frames, "objects": objects, "image_size": size, "warm_up": warm_up, "device_source": source,
            "samples": samples, "masks_sha256": digest.hexdigest(),
            "rss_growth": growth(samples, "rss", warm_up), "device_growth": growth(samples, "device", warm_up),
            "session_growth": growth(samples, "session_nbytes", warm_up),
            "compilations_after_warm_up": samples[-1]["compilations"] - at_warm_up["compilations"],
            "compiled": list(compiled)}


def stream_checks(run: dict, tolerance: float = TOLERANCE) -> dict:
    """Pass/fail of a streaming soak: flat RSS and device memory after warm-up, no compilation after it."""
    return {"rss_flat": run["rss_growth"] < tolerance, "device_flat": run["device_growth"] < tolerance,
            "no_compilation_after_warm_up": run["compilations_after_warm_up"] == 0}


def track_video(model: Sam2VideoModel, video: np.ndarray, objects: int, on_frame=lambda t: None,
                **session_options) -> tuple[Sam2VideoInferenceSession, str]:
    """Track every object of `video` from one click on frame 0, dropping the outputs; `on_frame(t)` after each
    frame. Returns the session and the hash of all masks."""
    processor = Sam2VideoProcessor(size=model.config.image_size)
    session = processor.init_video_session(video=video, **session_options)
    _, clicks = moving_shapes(0, video.shape[1], video.shape[2], objects)
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=list(range(1, objects + 1)),
                                              input_points=[[[c] for c in clicks]], input_labels=[[[1]] * objects])
    digest = hashlib.sha256()
    for t, out in enumerate(model.propagate_in_video_iterator(session, start_frame_idx=0)):
        digest.update(np.asarray(out.pred_masks).tobytes())
        on_frame(t + 1)
    return session, digest.hexdigest()


def generated_video(frames: int, size: int, objects: int) -> np.ndarray:
    """The generated video as one (T, size, size, 3) uint8 array, written in place (no second copy)."""
    video = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        video[t] = moving_shapes(t, size, size, objects)[0]
    return video


def offline(model: Sam2VideoModel, frames: int, size: int = 256, objects: int = 1, **session_options) -> dict:
    """Track a generated `frames`-frame video held as one uint8 array; the process's RSS above its level before
    the video was made, read after every frame: the highest reading of each twentieth of the frames."""
    track_video(model, generated_video(24, size, objects), objects, **session_options)  # compiles all it runs
    gc.collect()
    release_free_host_memory()
    before, start = rss(), time.perf_counter()
    video = generated_video(frames, size, objects)
    every, samples, peak = max(frames // 20, 1), [], [0]

    def on_frame(t: int) -> None:
        peak[0] = max(peak[0], rss())
        if t % every == 0 or t == frames:
            samples.append({"frames": t, "rss_growth": peak[0] - before, "device": device_bytes()[0]})
            peak[0] = 0

    with counting_compilations() as compiled:
        session, masks_sha256 = track_video(model, video, objects, on_frame, **session_options)
    early = max(s["rss_growth"] for s in samples if s["frames"] <= max(frames // 10, every))
    highest = max(s["rss_growth"] for s in samples)
    return {"frames": frames, "size": size, "objects": objects, "keep_memory_archive": session.keep_memory_archive,
            "video_bytes": video.nbytes, "rss_before_video": before, "peak_growth": highest,
            "constant": early - video.nbytes, "growth_after_early": highest - early,
            "session_nbytes": session.nbytes, "samples": samples, "compilations": len(compiled),
            "seconds": round(time.perf_counter() - start, 1), "masks_sha256": masks_sha256}


def offline_run(image_size: int, seed: int, frames: int, size: int, **session_options) -> dict:
    """`offline` on a new model (run it in a fresh process: no memory freed by earlier work to reuse)."""
    return offline(Sam2VideoModel.from_config(small_config(image_size=image_size), seed=seed), frames, size,
                   **session_options)


def offline_checks(run: dict, tolerance: float = TOLERANCE) -> dict:
    """Pass/fail of an offline soak: host memory within the video's size plus a constant, i.e. RSS grows by less
    than `tolerance` of the video's size after the first tenth of the frames."""
    return {"host_within_video_plus_constant": run["growth_after_early"] < tolerance * run["video_bytes"],
            "no_compilation": run["compilations"] == 0}


def rerun(model: Sam2VideoModel, frames: int, objects: int = 2) -> dict:
    """The stream's first `frames` twice, in fresh sessions: the hashes of all masks of each."""
    hashes = [stream(model, frames, objects, warm_up=frames)["masks_sha256"] for _ in range(2)]
    return {"frames": frames, "objects": objects, "masks_sha256": hashes, "identical": hashes[0] == hashes[1]}


def measure(args) -> dict:
    """The three soaks on one model (the offline runs in fresh processes) and their checks."""
    config = small_config(image_size=args.image_size)
    model = Sam2VideoModel.from_config(config, seed=args.seed)
    results = {"command": "python -m benchmarks.soak " + " ".join(sys.argv[1:]), "machine_before": machine(),
               "config": f"small (image size {args.image_size})", "tolerance": TOLERANCE}
    progress(f"streaming {args.frames} frames")
    results["stream"] = stream(model, args.frames, args.objects, args.warm_up)
    progress(f"rerun of {args.rerun_frames} frames, twice")
    results["rerun"] = rerun(model, args.rerun_frames, args.objects)
    results["offline"] = {}
    for archive in (None, False):
        progress(f"offline {args.offline_frames} frames, keep_memory_archive={archive}")
        results["offline"]["default" if archive is None else "no archive"] = in_fresh_process(
            "benchmarks.soak", "offline_run", image_size=args.image_size, seed=args.seed, frames=args.offline_frames,
            size=args.offline_size, keep_memory_archive=archive)
    results["checks"] = {"stream": stream_checks(results["stream"]), "rerun_identical": results["rerun"]["identical"],
                         **{f"offline ({name})": offline_checks(run) for name, run in results["offline"].items()}}
    results["machine_after"] = machine()
    return results


def report(results: dict) -> str:
    """The markdown: heading, command, machine, the stream's readings, the offline runs, the checks."""
    s = results["stream"]
    rows = [[x["frames"], x["seconds"], f"{x['rss'] / MIB:.1f}", f"{x['device'] / MIB:.2f}",
             f"{x['session_nbytes'] / MIB:.2f}", x["compilations"]]
            for x in s["samples"] if x["frames"] in (*MARKS, s["warm_up"], s["frames"])]
    stream_table = markdown_table(["frames", "seconds", "RSS MiB (peak since the last reading)",
                                   f"device MiB ({s['device_source']})", "session nbytes MiB", "compilations so far"],
                                  rows)
    offline_rows = [[name, r["frames"], f"{r['size']}x{r['size']}", r["keep_memory_archive"],
                     f"{r['video_bytes'] / MIB:.1f}", f"{r['peak_growth'] / MIB:.1f}", f"{r['constant'] / MIB:.1f}",
                     f"{r['growth_after_early'] / MIB:.1f}", f"{r['session_nbytes'] / MIB:.1f}", r["compilations"]]
                    for name, r in results["offline"].items()]
    offline_table = markdown_table(["session", "frames", "size", "archive", "video MiB", "peak RSS growth MiB",
                                    "constant MiB", "growth after first tenth MiB", "session nbytes MiB",
                                    "compilations"], offline_rows)
    r = results["rerun"]
    return "\n".join([
        f"## Soak: {results['config']}, {s['frames']} streamed frames ({s['objects']} objects)", "",
        f"`{results['command']}`", "", f"Machine: {describe(results['machine_before'], results['machine_after'])}.",
        "", "Streaming:", "", stream_table, "",
        f"After warm-up (frame {s['warm_up']}): RSS {s['rss_growth']:+.2%}, device {s['device_growth']:+.2%}, "
        f"session {s['session_growth']:+.2%}, {s['compilations_after_warm_up']} compilation(s) "
        f"({len(s['compiled'])} in all).", "", "Offline (RSS growth from before the video was made; constant: the "
        f"growth at the first tenth of the frames less the video):", "", offline_table, "",
        f"Reruns of {r['frames']} streamed frames: masks {'bitwise identical' if r['identical'] else 'DIFFER'}.", "",
        f"Checks: `{json.dumps(results['checks'])}`"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10000, help="streamed frames")
    parser.add_argument("--offline-frames", type=int, default=2000)
    parser.add_argument("--offline-size", type=int, default=256, help="height and width of the offline video")
    parser.add_argument("--rerun-frames", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=256, help="of small_config (its default: 256)")
    parser.add_argument("--objects", type=int, default=2, help="streamed objects (offline: one)")
    parser.add_argument("--warm-up", type=int, default=200, help="frame from which the stream must stay flat")
    parser.add_argument("--seed", type=int, default=0, help="of the random weights")
    parser.add_argument("--cores", type=int, help="run on this many cores (default: all)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--out", default="benchmarks/results", help="folder for <device>-soak-small-<date>.json/.md")
    args = parser.parse_args()
    use_cores(args.cores)
    results = measure(args)
    text = report(results)
    print(text)
    print("wrote", *save(args.out, "soak-small", results, text))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
