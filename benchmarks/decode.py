"""Decode speed and memory of sam2_jax.video.VideoFile on a generated clip.

    python -m benchmarks.decode [--frames 1000] [--height 480] [--width 854] [--json out.json]

Generates an H.264 mp4 of moving shapes in a temporary folder (a keyframe every `--gop`
frames), then measures: opening (the packet-index pass), sequential iteration, `video[i]` in
increasing order, `video[i]` at random indices (each seeks to its keyframe and decodes on), and
the memory of a full sequential read in a fresh process (peak RSS above the level after opening;
PyAV's frame buffers are invisible to tracemalloc). Linux only (reads /proc/self/statm).
"""

import argparse
import json
import os
import multiprocessing
import resource
import tempfile

import av
import numpy as np

from sam2_jax.io.frames import VideoFile

from .common import best_seconds


def make_clip(path: str, frames: int, height: int, width: int, gop: int, fps: int = 24) -> None:
    """An mp4 (libx264, yuv420p, a keyframe every `gop` frames) of a moving disk on a gradient."""
    yy, xx = np.mgrid[:height, :width]
    background = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 90)], -1).astype(np.uint8)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        stream.codec_context.gop_size = gop
        for t in range(frames):
            frame = background.copy()
            cy, cx = height // 2 + int(height / 3 * np.sin(t / 20)), (5 * t) % width
            frame[(yy - cy) ** 2 + (xx - cx) ** 2 < (height // 8) ** 2] = (250, 220, 30)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def rss() -> int:
    """Resident memory of this process in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def read_memory(path: str) -> tuple[float, float]:
    """(peak RSS growth while reading every frame, peak RSS of the process), in MiB; run in a
    fresh process so that earlier allocations do not hide the growth."""
    video = VideoFile(path)
    before, growth = rss(), 0
    for _ in video:
        growth = max(growth, rss() - before)
    return growth / 2**20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--gop", type=int, default=250, help="frames between keyframes (ffmpeg's default)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    n, h, w = args.frames, args.height, args.width

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "clip.mp4")
        encode_s = best_seconds(lambda: make_clip(path, n, h, w, args.gop))
        open_s = best_seconds(lambda: VideoFile(path).close(), repeat=3)
        video = VideoFile(path)
        assert video.num_frames == n, video.num_frames
        iterate_s = best_seconds(lambda: sum(1 for _ in video), repeat=3)
        forward_s = best_seconds(lambda: (video.close(), sum(video[i].shape[0] for i in range(n))), repeat=3)
        indices = np.random.default_rng(0).integers(0, n, 30).tolist()
        random_s = best_seconds(lambda: (video.close(), sum(video[i].shape[0] for i in indices)), repeat=2)
        video.close()
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            growth_mib, process_peak_mib = pool.apply(read_memory, (path,))
        size_mib = os.path.getsize(path) / 2**20

    mib = 2**20
    results = {
        "clip": f"{n} frames {h}x{w} H.264 mp4, gop {args.gop}, {size_mib:.1f} MiB", "cpu_count": os.cpu_count(),
        "encode_fps": n / encode_s, "open_s": open_s, "iterate_fps": n / iterate_s,
        "getitem_in_order_fps": n / forward_s, "getitem_random_fps": len(indices) / random_s,
        "read_peak_rss_growth_mib": growth_mib, "read_process_peak_rss_mib": process_peak_mib,
        "all_frames_uint8_mib": n * h * w * 3 / mib, "all_frames_1024_float32_mib": n * 1024 * 1024 * 3 * 4 / mib,
    }
    rows = [
        ("clip", results["clip"]),
        ("cpu cores", f"{os.cpu_count()}"),
        ("open (packet index pass)", f"{open_s * 1e3:.0f} ms"),
        ("iterate (best of 3)", f"{results['iterate_fps']:.0f} frames/s"),
        ("video[i], i increasing", f"{results['getitem_in_order_fps']:.0f} frames/s"),
        (f"video[i], {len(indices)} random i", f"{results['getitem_random_fps']:.1f} frames/s"),
        ("read all: peak RSS growth", f"{growth_mib:.1f} MiB"),
        ("read all: process peak RSS", f"{process_peak_mib:.0f} MiB (python, numpy, PyAV included)"),
        ("for scale: all frames uint8", f"{results['all_frames_uint8_mib']:.0f} MiB"),
        ("for scale: all at 1024^2 f32", f"{results['all_frames_1024_float32_mib']:.0f} MiB (original predictor)"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
