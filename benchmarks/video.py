"""Video tracking speed of sam2-jax and transformers (`Sam2VideoModel`, `EdgeTamVideoModel`) in one process.

    python -m benchmarks.video [--config small|sam2.1-hiera-tiny|sam2.1-hiera-small|edgetam] [--frames 64]
        [--height 480] [--width 854] [--objects 1,4] [--dtype float32,bfloat16] [--reference-dtype DTYPES]
        [--no-compile-times] [--cores N] [--json PATH] [--out benchmarks/results/]

`--config edgetam` is the released EdgeTAM at full size (1024 px; transformers' `EdgeTamVideoModel`, which needs
timm). Both get the same randomised weights, the same generated video (moving discs, `common.moving_shapes`) and
the same prompts (one click per object on frame 0). Each makes its session, runs the prompt frame with
`model(frame_idx=0)`, then advances `propagate_in_video_iterator` in chunks of `ProgramSet.scan_length`
frames; the implementations take turns chunk by chunk, so that load from other processes hits them alike.
Frames per second: the median over the chunks after the first (which holds frame 0 and the filling of the
memory bank; with one chunk, that one). sam2-jax tracks the first frames once beforehand, so compilation
stays out of its timings; its compile time is measured in fresh processes, first with an empty persistent
compilation cache (cold), then with the filled one (warm). FLOPs per frame are XLA's count
(`cost_analysis`) of the jitted encoder on one frame plus the jitted step on all objects (`--no-compile-times`
skips both: on a GPU each compilation can take minutes). Host memory: the
growth of this process's RSS during each implementation's own turns (`benchmarks.memory` measures each
alone, over long streams). sam2-jax runs float32 at "highest" matmul precision (its parity mode); transformers
float32 runs without TF32 (torch's default for matmuls). On CUDA, transformers also runs in bfloat16 by default
(`--reference-dtype`), and every run is compared with both. Progress goes to stderr; the table and the result
files are written after each object count, so that a run stopped early keeps the counts it finished.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import resource
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import numpy as np

from sam2_jax import Sam2VideoModel, Sam2VideoProcessor
from sam2_jax.tracking.programs import ProgramSet

from .common import MIB, config_named, describe, device_memory, in_fresh_process, machine, markdown_table, \
    moving_shapes, rss, save, use_cores



@dataclasses.dataclass
class Runner:
    """One implementation as the benchmark drives it."""

    model: Any
    processor: Any
    session_options: dict
    context: Callable[[], Any]  # a fresh context manager for its calls (no_grad, matmul precision)


def precision(dtype: str):
    """The context of sam2-jax's calls: float32 at "highest" matmul precision (its parity mode)."""
    return jax.default_matmul_precision("highest") if dtype == "float32" else contextlib.nullcontext()


def host(masks) -> np.ndarray:
    """Masks on the host (waiting for the device), from either implementation."""
    return masks.float().cpu().numpy() if hasattr(masks, "cpu") else np.asarray(masks)


def tracking(runner: Runner, video: list, clicks: list):
    """Yields once the session is made, then after the prompt frame, then after every propagated frame."""
    session = runner.processor.init_video_session(video=video, **runner.session_options)
    yield
    runner.processor.add_inputs_to_inference_session(
        session, frame_idx=0, obj_ids=list(range(1, len(clicks) + 1)),
        input_points=[[[c] for c in clicks]], input_labels=[[[1] for _ in clicks]])
    host(runner.model(inference_session=session, frame_idx=0).pred_masks)
    yield
    for out in runner.model.propagate_in_video_iterator(session, start_frame_idx=0):
        host(out.pred_masks)
        yield


def race(runners: dict[str, Runner], video: list, clicks: list, chunk: int) -> dict:
    """Every runner on the same video and clicks, taking turns (the first to go rotates); per runner: seconds
    of the session and of the prompt frame, (frames, seconds) of every chunk, RSS growth of its turns."""
    runs = {name: tracking(runner, video, clicks) for name, runner in runners.items()}
    stats = {name: {"chunks": [], "rss_growth": 0} for name in runners}

    def turn(name: str, steps: int) -> tuple[int, float]:
        before, start = rss(), time.perf_counter()
        with runners[name].context():
            done = sum(1 for _ in itertools.islice(runs[name], steps))
        seconds = time.perf_counter() - start
        stats[name]["rss_growth"] += rss() - before
        return done, seconds

    names = list(runners)
    for key in ("session_s", "prompt_s"):
        for name in names:
            stats[name][key] = turn(name, 1)[1]
    finished = set()
    for round_ in itertools.count():
        if len(finished) == len(names):
            return stats
        k = round_ % len(names)
        for name in names[k:] + names[:k]:
            if name not in finished:
                frames, seconds = turn(name, chunk)
                if frames:
                    stats[name]["chunks"].append((frames, seconds))
                else:
                    finished.add(name)


def frames_per_second(chunks: list[tuple[int, float]]) -> float:
    return statistics.median(frames / seconds for frames, seconds in (chunks[1:] or chunks))


def warm_up(runner: Runner, video: list, clicks: list) -> tuple[float, list]:
    """Track `video` once, compiling what a run of this shape needs: seconds, and the distinct calls of the
    model's jitted functions as (name, argument shapes) in first-call order."""
    programs, calls = runner.model.programs, {}
    original = programs.compiled

    def recorder(name, params, *args):  # the programs (name, argument shapes, weights left out) it runs
        shapes = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), args)
        key = (name, jax.tree_util.tree_structure(shapes), tuple(jax.tree_util.tree_leaves(shapes)))
        calls.setdefault(key, (name, shapes))
        return original(name, params, *args)

    start = time.perf_counter()
    programs.compiled = recorder
    try:
        with runner.context():
            for _ in tracking(runner, video, clicks):
                pass
    finally:
        del programs.compiled
    return time.perf_counter() - start, list(calls.values())


def per_frame_step(calls: list) -> tuple[str, tuple]:
    """The `step` call of one frame as the scan runs it: the scan's arguments less their frame axis."""
    state, frame_features, inputs = next(args for name, args in reversed(calls) if name == "scan")
    drop = lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype)  # noqa: E731
    size = 4 * frame_features[0][0][0].shape[1]  # s0 is at a quarter of the input size
    masks = jax.ShapeDtypeStruct((state.cond_pointers.shape[0], size, size, 1), bool)
    return "step", (state, frame_features[0], jax.tree_util.tree_map(drop, inputs), masks)


def compile_calls(folder: str, dtype: str, calls: list, cache_dir: str) -> list[dict]:
    """Run in a fresh process: compile each (name, argument shapes) program of sam2-jax's session with the
    persistent compilation cache in `cache_dir`; the seconds and XLA's FLOPs of each."""
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    model = Sam2VideoModel.from_pretrained(folder, dtype=dtype)
    out = []
    for name, args in calls:
        with precision(dtype):
            start = time.perf_counter()
            compiled = model.programs.compiled(name, model.params, *args)
            out.append({"function": name, "seconds": time.perf_counter() - start,
                        "flops": compiled.cost_analysis()["flops"]})
    return out


STARTED = time.perf_counter()


def progress(message: str) -> None:
    """A line on stderr with the seconds since the benchmark started: a long run shows where it is."""
    print(f"[{time.perf_counter() - STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


def measure(args, config, publish: Callable[[dict], None]) -> None:
    """Warm up, race, then compile in fresh processes, for each object count in turn; `publish` gets the results
    so far after each count, so that a run stopped early keeps the counts it finished."""
    chunk = ProgramSet.scan_length
    counts = [int(n) for n in args.objects.split(",")]
    dtypes = args.dtype.split(",")
    reference_dtypes = args.reference_dtype.split(",")
    video = [moving_shapes(t, args.height, args.width, max(counts))[0] for t in range(args.frames)]
    clicks = moving_shapes(0, args.height, args.width, max(counts))[1]
    warm_frames = chunk + args.frames % chunk  # the same scans, tail and encoder batches as the full run
    from . import reference  # torch only here: the fresh sam2-jax processes never import it

    results = {"command": "python -m benchmarks.video " + " ".join(sys.argv[1:]), "machine_before": machine(),
               "torch_threads": reference.torch.get_num_threads(), "config": args.config,
               "image_size": config.image_size, "video": f"{args.frames} frames {args.height}x{args.width}",
               "chunk": chunk, "runs": []}
    with tempfile.TemporaryDirectory() as folder:
        size = config.image_size
        reference_model = reference.randomised_model(config, folder, args.seed)
        runners = {f"transformers {dtype}": Runner(
            reference.in_dtype(reference_model, dtype), reference.processor(size),
            {"inference_device": reference.DEVICE, "dtype": getattr(reference.torch, dtype)}, reference.no_grad)
            for dtype in reference_dtypes}
        progress("transformers ready")
        for dtype in dtypes:
            runners[f"sam2-jax {dtype}"] = Runner(Sam2VideoModel.from_pretrained(folder, dtype=dtype),
                                                  Sam2VideoProcessor(size=size), {"dtype": dtype},
                                                  lambda dtype=dtype: precision(dtype))
        for n in counts:
            warm_s, calls = {}, {}
            for dtype in dtypes:
                warm_s[dtype], calls[dtype] = warm_up(runners[f"sam2-jax {dtype}"], video[:warm_frames], clicks[:n])
                progress(f"{n} object(s): sam2-jax {dtype} warmed up (compiled) in {warm_s[dtype]:.1f} s")
            stats = race(runners, video, clicks[:n], chunk)
            progress(f"{n} object(s): raced")
            reference_fps = {dtype: frames_per_second(stats[f"transformers {dtype}"]["chunks"])
                             for dtype in reference_dtypes}
            for name, s in stats.items():
                run = {"implementation": name, "objects": n, "frames_per_second": frames_per_second(s["chunks"]),
                       "session_s": s["session_s"], "prompt_frame_s": s["prompt_s"],
                       "chunks_frames_seconds": s["chunks"], "host_rss_growth_mib": s["rss_growth"] / MIB}
                run["ratio_to_transformers"] = {dtype: run["frames_per_second"] / fps
                                                for dtype, fps in reference_fps.items()}
                if name.startswith("sam2-jax"):
                    dtype = name.split()[1]
                    run["warm_up_s"] = warm_s[dtype]
                    run["programs"] = len(calls[dtype])  # distinct (function, shapes): one compile each
                results["runs"].append(run)
            results.update(extra_object_s=extra_object_cost(results["runs"]), machine_after=machine(),
                           device_memory=device_memory(), torch_peak_memory=reference.peak_memory(),
                           process_peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            publish(results)  # the speeds first: compiling below may outlast a time limit
            for run in results["runs"][-len(stats):]:
                if args.compile_times and run["implementation"].startswith("sam2-jax"):
                    dtype = run["implementation"].split()[1]
                    run.update(compile_and_count(folder, dtype, calls[dtype]))
                    run["achieved_gflops_per_s"] = run["gflops_per_frame"]["total"] * run["frames_per_second"]
                    progress(f"{n} object(s): {run['implementation']} compiled cold in {run['compile_cold_s']:.1f} s, "
                             f"warm in {run['compile_warm_s']:.1f} s")
                    publish(results)


def extra_object_cost(runs: list[dict]) -> dict[str, float]:
    """Seconds a frame that each extra object adds, per implementation: the slope between the fewest and the
    most objects measured."""
    out = {}
    for name in dict.fromkeys(run["implementation"] for run in runs):
        points = sorted((run["objects"], 1 / run["frames_per_second"]) for run in runs if run["implementation"] == name)
        if len(points) > 1 and points[-1][0] > points[0][0]:
            (n0, s0), (n1, s1) = points[0], points[-1]
            out[name] = (s1 - s0) / (n1 - n0)
    return out


def compile_and_count(folder: str, dtype: str, calls: list) -> dict:
    """Compile times of the recorded calls in fresh processes (cold: an empty persistent cache; warm: the one
    cold filled), and XLA's FLOPs of one frame: the encoder on one frame plus the scan's step."""
    calls = calls + [per_frame_step(calls)]  # compiled last, for its FLOPs only
    with tempfile.TemporaryDirectory() as cache:
        options = dict(folder=folder, dtype=dtype, calls=calls, cache_dir=cache)
        cold = in_fresh_process("benchmarks.video", "compile_calls", **options)
        warm = in_fresh_process("benchmarks.video", "compile_calls", **options)
    encode = next(c["flops"] / args[0].shape[0] for c, (name, args) in zip(cold, calls) if name == "encode")
    step = cold[-1]["flops"]
    return {"compile_cold_s": sum(c["seconds"] for c in cold[:-1]),
            "compile_warm_s": sum(c["seconds"] for c in warm[:-1]),
            "compiled": [f"{c['function']} {c['seconds']:.2f} s" for c in cold[:-1]],
            "gflops_per_frame": {"encode": encode / 1e9, "step": step / 1e9, "total": (encode + step) / 1e9}}


def report(results: dict) -> str:
    """The markdown: heading, command, machine, table, notes."""
    rows, reference_dtypes = [], list(results["runs"][0]["ratio_to_transformers"])
    for run in results["runs"]:
        flops = run.get("gflops_per_frame")
        compiled = flops is not None  # sam2-jax with --compile-times
        rows.append([run["implementation"], run["objects"], f"{run['frames_per_second']:.2f}",
                     *(f"{run['ratio_to_transformers'][dtype]:.2f}" for dtype in reference_dtypes),
                     f"{run['prompt_frame_s']:.2f}", f"{run['session_s']:.2f}",
                     f"{run['warm_up_s']:.1f}" if "warm_up_s" in run else "-", run.get("programs", "-"),
                     f"{run['compile_cold_s']:.1f} / {run['compile_warm_s']:.1f}" if compiled else "-",
                     f"{flops['encode']:.2f} + {flops['step']:.2f}" if compiled else "-",
                     f"{run['achieved_gflops_per_s']:.1f}" if compiled else "-", f"{run['host_rss_growth_mib']:.0f}"])
    table = markdown_table(["implementation", "objects", "frames/s",
                            *(f"x transformers {dtype}" for dtype in reference_dtypes), "prompt frame s", "session s",
                            "warm-up s", "programs", "compile cold / warm s", "GFLOP/frame encode + step", "GFLOP/s",
                            "host RSS growth MiB"], rows)
    before, device, torch_peak = results["machine_before"], results["device_memory"], results["torch_peak_memory"]
    notes = (f"frames/s: median over chunks of {results['chunk']} frames after the first. session s: transformers "
             "preprocesses the whole video there, sam2-jax each frame as it tracks it. warm-up: sam2-jax's first "
             f"run over {results['chunk']}+ frames, compilation included. compile: sam2-jax's jitted "
             "functions in fresh processes, empty / filled persistent cache. Process peak RSS "
             f"{results['process_peak_rss_mib']:.0f} MiB; device memory peak "
             + (f"{device['peak_bytes_in_use'] / MIB:.0f} MiB (sam2-jax), " if device else "n/a (CPU).")
             + (f"{torch_peak / MIB:.0f} MiB (transformers)." if torch_peak else "")
             + (" On CPU, bfloat16 is emulated by XLA: not a speed mode there." if before["device"] == "cpu" else ""))
    extra = results.get("extra_object_s")
    if extra:
        notes += " Each extra object costs " + ", ".join(f"{name} {s:.3f} s" for name, s in extra.items()) + \
            " a frame (the slope from the fewest to the most objects)."
    return "\n".join([f"## {results['config']} ({results['image_size']} px), {results['video']}, one click per object",
                      "", f"`{results['command']}`", "", f"Machine: {describe(before, results['machine_after'])}.",
                      "", table, "", notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", help="small (256 px, for a quick run), a preset name, "
                        "e.g. sam2.1-hiera-tiny, or edgetam (the released EdgeTAM, 1024 px)")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--objects", default="1,4", help="object counts to run, comma-separated")
    parser.add_argument("--dtype", default="float32,bfloat16", help="sam2-jax dtypes (transformers: --reference-dtype)")
    parser.add_argument("--reference-dtype", help="transformers dtypes (default: float32,bfloat16 on CUDA, float32 "
                        "elsewhere)")
    parser.add_argument("--seed", type=int, default=0, help="of the random weights")
    parser.add_argument("--cores", type=int, help="run on this many cores (default: all); 1 on a loaded machine")
    parser.add_argument("--compile-times", action=argparse.BooleanOptionalAction, default=True,
                        help="measure sam2-jax's compile times and FLOPs in fresh processes (two compilations "
                        "per dtype and object count)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--out", default="benchmarks/results", help="folder for <device>-<config>-<date>.json/.md")
    args = parser.parse_args()
    if args.frames < ProgramSet.scan_length:
        parser.error(f"--frames: expected at least {ProgramSet.scan_length} (one scan of sam2-jax), "
                     f"got {args.frames}")
    use_cores(args.cores)
    if args.reference_dtype is None:
        from .reference import DEVICE

        args.reference_dtype = "float32,bfloat16" if DEVICE == "cuda" else "float32"

    written = []  # the files of the first publish, rewritten by the later ones

    def publish(results: dict) -> None:
        text = report(results)
        print(text, flush=True)
        written[:] = save(args.out, args.config, results, text, written)
        print("wrote", *written, flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)

    measure(args, config_named(args.config), publish)


if __name__ == "__main__":
    main()
