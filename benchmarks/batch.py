"""Throughput of batched propagation (`sharding.propagate_videos`) over 1, 2, 4, 8 devices, and its overhead
against the session (`Sam2VideoModel`) on the same work.

    python -m benchmarks.batch [--config small|tiny|edgetam] [--image-size S] [--videos 8] [--frames 16]
        [--height 96] [--width 128] [--objects 2] [--devices 1,2,4,8] [--rounds 1] [--no-session]
        [--note TEXT] [--out benchmarks/results/]

The same randomised weights, `--videos` generated videos of one shape (moving discs, `common.moving_shapes`,
each starting at another time) and one click per object on frame 0. Each device count runs in a fresh
process with `XLA_FLAGS=--xla_force_host_platform_device_count=N` (CPU devices: they share the machine's
cores); where the default device is a GPU, one more process runs on the GPU(s). Each process calls
`propagate_videos` three times on all the videos: the first call compiles (one shape bucket: one program),
the best of the other two is the steady state. The 1-device CPU process and the GPU process also track the
same videos through the session, as a user drives it (`init_video_session`, `add_inputs_to_inference_session`,
`model(session, frame_idx=0)`, `propagate_in_video_iterator`), three times too, and compare its low-res
logits with the batched ones. `--rounds R` starts every process R times, in turn, and keeps the best steady
run of each place (the load of other processes evens out). frames/s counts the frames tracked (videos x
frames), masks brought back to the host.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import tempfile
import time

import numpy as np

from .common import config_named, describe, in_fresh_process, machine, markdown_table, moving_shapes, save

CONFIGS = {"small": "small", "tiny": "sam2.1-hiera-tiny", "edgetam": "edgetam"}


def _config(name: str, image_size: int | None):
    from sam2_jax.config import small_config

    if name == "small":
        return small_config(image_size=image_size or 256)
    if image_size is not None:
        raise ValueError(f"--image-size: only the small config takes one, got {image_size} with --config {name}")
    return config_named(CONFIGS[name])


def videos(count: int, frames: int, height: int, width: int, objects: int) -> list[tuple[np.ndarray, list]]:
    """`count` videos (frames (T, H, W, 3) uint8, one click [x, y] per object on frame 0), each a different
    stretch of the moving discs."""
    out = []
    for i in range(count):
        shots = [moving_shapes(t + 11 * i, height, width, objects) for t in range(frames)]
        out.append((np.stack([frame for frame, _ in shots]), shots[0][1]))
    return out


def measure(folder: str, spec: dict, session: bool) -> dict:
    """In a fresh process: the timings of `propagate_videos` on all the devices, and of the session on the
    same work when `session` (see `timed`)."""
    import jax

    from sam2_jax import functional, sharding
    from sam2_jax import Sam2VideoModel, Sam2VideoProcessor

    model = Sam2VideoModel.from_pretrained(folder)
    work = videos(**spec)
    batch = [(frames, functional.make_prompts([[{"frame": 0, "points": [c], "labels": [1]}] for c in clicks],
                                              *frames.shape[1:3])) for frames, clicks in work]
    mesh = sharding.make_mesh()
    params = sharding.replicate(model.params, mesh)
    total = sum(len(frames) for frames, _ in work)
    outputs, times = timed(lambda: sharding.propagate_videos(params, model.config, batch, mesh), total)
    device = jax.devices()[0]
    result = {"platform": device.platform, "device_kind": device.device_kind, "devices": len(jax.devices()),
              "mesh": dict(mesh.shape), **times}
    if session:
        processor = Sam2VideoProcessor(size=model.config.image_size)
        logits, result["session"] = timed(
            lambda: [track_in_session(model, processor, frames, clicks) for frames, clicks in work], total)
        result["max_abs_logit_difference"] = max(
            float(np.abs(ours["pred_masks"] - theirs).max()) for ours, theirs in zip(outputs, logits))
    return result


def timed(work, frames: int, steady_runs: int = 2):
    """work() once (compiling), then `steady_runs` times: its result and the seconds (steady: the best run,
    as other processes share the machine), compile seconds (first minus steady) and frames/s."""
    seconds = []
    for _ in range(1 + steady_runs):
        start = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - start)
    steady = min(seconds[1:])
    return result, {"first_s": seconds[0], "steady_runs_s": seconds[1:], "steady_s": steady,
                    "compile_s": seconds[0] - steady, "frames_per_second": frames / steady}


def track_in_session(model, processor, frames: np.ndarray, clicks: list) -> np.ndarray:
    """The session driven as `functional.propagate` stands for: low-res logits (T, N, 1, s, s) on the host."""
    session = processor.init_video_session(video=frames)
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=list(range(1, len(clicks) + 1)),
                                              input_points=[[[c] for c in clicks]],
                                              input_labels=[[[1] for _ in clicks]])
    model(inference_session=session, frame_idx=0)
    return np.stack([np.asarray(out.pred_masks) for out in model.propagate_in_video_iterator(session,
                                                                                              start_frame_idx=0)])


@contextlib.contextmanager
def environment(**values: str | None):
    """Environment variables set (None: removed) for the processes started inside, then put back."""
    before = {key: os.environ.get(key) for key in values}

    def apply(settings: dict) -> None:
        for key, value in settings.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    apply(values)
    try:
        yield
    finally:
        apply(before)


def run(args) -> dict:
    """Every device count (then the GPU) in its own process, `--rounds` times over."""
    import jax

    from sam2_jax import Sam2VideoModel

    spec = dict(count=args.videos, frames=args.frames, height=args.height, width=args.width, objects=args.objects)
    config = _config(args.config, args.image_size)
    results = {"command": "python -m benchmarks.batch " + shlex.join(sys.argv[1:]), "machine_before": machine(),
               "config": args.config, "image_size": config.image_size, "rounds": args.rounds,
               "work": f"{args.videos} videos x {args.frames} frames {args.height}x{args.width}, {args.objects} "
                       "object(s), one click each on frame 0"}
    places = [(f"{count} CPU device(s)", count == 1, dict(JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")) for count in args.devices]
    if jax.devices()[0].platform == "gpu":
        places.append(("GPU", True, dict(JAX_PLATFORMS=None, XLA_FLAGS=None)))
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        Sam2VideoModel.from_config(config, seed=args.seed).save_pretrained(folder)
        for round_ in range(args.rounds):
            for name, session, env in places:
                print(f"round {round_ + 1}: {name}...", file=sys.stderr, flush=True)
                with environment(**env):
                    run = in_fresh_process("benchmarks.batch", "measure", folder=folder, spec=spec,
                                           session=session and args.session)
                runs[name] = merge(runs.get(name), run, args.videos * args.frames)
    results.update(runs=list(runs.values()), machine_after=machine())
    return results


def merge(old: dict | None, new: dict, frames: int) -> dict:
    """One place measured in several rounds (processes): the steady runs of all, the first one's compilation."""
    if old is None:
        return new
    for before, after in [(old, new)] + ([(old["session"], new["session"])] if "session" in old else []):
        before["steady_runs_s"] += after["steady_runs_s"]
        before["steady_s"] = min(before["steady_runs_s"])
        before["compile_s"] = before["first_s"] - before["steady_s"]
        before["frames_per_second"] = frames / before["steady_s"]
    return old


def report(results: dict) -> str:
    rows = []
    for run in results["runs"]:
        where = f"{run['devices']} {run['platform'].upper()} ({run['device_kind']})"
        rows.append([where, "propagate_videos", f"{run['frames_per_second']:.2f}", f"{run['compile_s']:.1f}",
                     f"{run['steady_s']:.2f}", "-"])
        if "session" in run:
            s = run["session"]
            rows.append([where, "Sam2VideoModel session", f"{s['frames_per_second']:.2f}", f"{s['compile_s']:.1f}",
                         f"{s['steady_s']:.2f}", f"{run['frames_per_second'] / s['frames_per_second']:.2f}"])
    table = markdown_table(["devices", "path", "frames/s", "compile s", "steady s", "batched / session"], rows)
    differences = [f"{run['max_abs_logit_difference']:.1e} ({run['platform']})" for run in results["runs"]
                   if "max_abs_logit_difference" in run]
    notes = ("frames/s: frames tracked (all videos) over the steady seconds (the best call after the first, "
             f"two per process, over {results['rounds']} round(s) of processes); compile s: the first call's "
             "seconds minus those (tracing, compilation, the first run). Forced host devices add no hardware: they "
             "split this machine's cores, and the rows show how well the split uses them. batched / session: "
             "frames/s of propagate_videos on one device over the session's on the same videos and prompts. "
             "Largest |difference| of their low-res logits: "
             + (", ".join(differences) or "not measured") + ".")
    return "\n".join([f"## batch: {results['config']} ({results['image_size']} px), {results['work']}", "",
                      f"`{results['command']}`", "",
                      f"Machine: {describe(results['machine_before'], results['machine_after'])}.", "", table, "",
                      notes] + ([f"\n{results['note']}"] if results.get("note") else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small",
                        help="small (9 M parameters), tiny (sam2.1-hiera-tiny, 1024 px) or edgetam (the released "
                             "EdgeTAM, 1024 px)")
    parser.add_argument("--image-size", type=int, help="input size of the small config (default: 256)")
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16,
                        help="per video; a multiple of 16 (the shape buckets' step) wastes no padded frames")
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--devices", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2, 4, 8],
                        help="CPU device counts, comma-separated (default: 1,2,4,8)")
    parser.add_argument("--session", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the session on the same work (1 CPU device, and the GPU)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every device count this many times, in turn, keeping the best steady run "
                        "(evens out the load of other processes)")
    parser.add_argument("--seed", type=int, default=0, help="of the random weights")
    parser.add_argument("--note", help="a line added to the results (e.g. what else ran on the machine)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for <device>-batch-<config>-<date>.*")
    args = parser.parse_args()
    results = run(args)
    results["note"] = args.note
    text = report(results)
    print(text)
    print("wrote", *save(args.out, f"batch-{args.config}", results, text))


if __name__ == "__main__":
    main()
