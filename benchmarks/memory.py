"""Memory while streaming a long video: sam2-jax and transformers `Sam2VideoModel`, each alone in a fresh process.

    python -m benchmarks.memory [--config small] [--frames 1000] [--height 480] [--width 854] [--objects 1]
        [--dtype float32] [--reference-frames N] [--keep-free-gib 4] [--cores N] [--json PATH]
        [--out benchmarks/results/]

Both get the same randomised weights and the same generated frames (`common.moving_shapes`, made one at a time),
one click per object on frame 0, then every frame through `model(inference_session=session, frame=pixel_values)`
(streaming). At frames 10, 100, 500, 1000 and the last: the process's RSS above its level after loading the model,
the device memory in use (JAX's statistics where it reports them, torch's CUDA allocator), and sam2-jax's
session's `nbytes`. transformers' streaming session keeps every frame and every output, so its memory grows with
the stream: it stops after --reference-frames, or early when the machine has less than --keep-free-gib
available, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

from sam2_jax import Sam2VideoModel, Sam2VideoProcessor

from .common import MIB, available_memory, config_named, describe, device_memory, in_fresh_process, machine, \
    markdown_table, moving_shapes, rss, save, use_cores
from .video import host, precision

MARKS = (10, 100, 500, 1000)


def stream(implementation: str, folder: str, config: str, frames: int, height: int, width: int, objects: int,
           dtype: str, keep_free: int) -> dict:
    """Run in a fresh process: stream generated frames through one implementation; memory at each mark."""
    size = config_named(config).image_size
    if implementation == "transformers":
        from . import reference

        model, processor = reference.load(folder), reference.processor(size)
        session = processor.init_video_session(inference_device=reference.DEVICE)
        tensors, context, device_in_use = "pt", reference.no_grad, reference.allocated_memory
    else:
        model, processor = Sam2VideoModel.from_pretrained(folder, dtype=dtype), Sam2VideoProcessor(size=size)
        session = processor.init_video_session(dtype=dtype)
        tensors, context = "jax", lambda: precision(dtype)

        def device_in_use() -> int | None:
            return (device_memory() or {}).get("bytes_in_use")

    base, start, samples, stopped = rss(), time.perf_counter(), [], None
    with context():
        for t in range(frames):
            frame, clicks = moving_shapes(t, height, width, objects)
            inputs = processor(images=frame, return_tensors=tensors)
            if t == 0:
                processor.add_inputs_to_inference_session(
                    session, frame_idx=0, obj_ids=list(range(1, objects + 1)), input_points=[[[c] for c in clicks]],
                    input_labels=[[[1]] * objects], original_size=inputs["original_sizes"][0])
            host(model(inference_session=session, frame=inputs["pixel_values"][0]).pred_masks)
            if available_memory() < keep_free:
                stopped = f"stopped after {t + 1} frames: less than {keep_free / 2**30:.0f} GiB left on the machine"
            if t + 1 in MARKS or t + 1 == frames or stopped:
                in_use = device_in_use()
                samples.append({"frames": t + 1, "seconds": time.perf_counter() - start, "rss_mib": rss() / MIB,
                                "rss_growth_mib": (rss() - base) / MIB,
                                "device_mib": in_use / MIB if in_use is not None else None,
                                "session_mib": session.nbytes / MIB if implementation != "transformers" else None})
            if stopped:
                break
    return {"samples": samples, "stopped": stopped, "rss_after_load_mib": base / MIB}


def measure(args) -> dict:
    """Each implementation alone, in its own fresh process, on the same weights and frames."""
    from . import reference  # torch only here: the fresh sam2-jax process never imports it

    results = {"command": "python -m benchmarks.memory " + " ".join(sys.argv[1:]), "machine_before": machine(),
               "config": args.config, "video": f"{args.frames} frames {args.height}x{args.width} streamed",
               "objects": args.objects, "runs": {}}
    options = dict(config=args.config, height=args.height, width=args.width, objects=args.objects, dtype=args.dtype,
                   keep_free=int(args.keep_free_gib * 2**30))
    with tempfile.TemporaryDirectory() as folder:
        reference.randomised_model(config_named(args.config), folder, args.seed)
        results["runs"]["transformers float32"] = in_fresh_process(
            "benchmarks.memory", "stream", implementation="transformers", folder=folder,
            frames=args.reference_frames or args.frames, **options)
        results["runs"][f"sam2-jax {args.dtype}"] = in_fresh_process(
            "benchmarks.memory", "stream", implementation="sam2-jax", folder=folder, frames=args.frames, **options)
    results["machine_after"] = machine()
    for run in results["runs"].values():
        first, last = run["samples"][0], run["samples"][-1]
        run["rss_growth_per_frame_mib"] = ((last["rss_growth_mib"] - first["rss_growth_mib"])
                                           / max(last["frames"] - first["frames"], 1))
    return results


def report(results: dict) -> str:
    """The markdown: heading, command, machine, memory at each mark, growth per frame."""
    names = list(results["runs"])
    ours = names[1]
    by_frames = {}
    for name, run in results["runs"].items():
        for sample in run["samples"]:
            by_frames.setdefault(sample["frames"], {})[name] = sample

    def device(sample: dict) -> str:
        return f"{sample['device_mib']:.0f}" if sample["device_mib"] is not None else "n/a"

    rows = []
    for frames, samples in sorted(by_frames.items()):
        mine = samples.get(ours)
        rows.append([frames] + [f"{samples[n]['rss_growth_mib']:.0f}" if n in samples else "-" for n in names]
                    + [device(samples[n]) if n in samples else "-" for n in names]
                    + [f"{mine['session_mib']:.1f}" if mine else "-"])
    table = markdown_table(["frames"] + [f"{n} RSS growth MiB" for n in names]
                           + [f"{n} device MiB in use" for n in names] + [f"{ours} session nbytes MiB"], rows)
    lines = []
    for name, run in results["runs"].items():
        first, last = run["samples"][0], run["samples"][-1]
        lines.append(f"- {name}: {run['rss_growth_per_frame_mib']:.3f} MiB per frame from frame {first['frames']} to "
                     f"{last['frames']}, {last['frames'] / last['seconds']:.1f} frames/s overall, RSS after loading "
                     f"{run['rss_after_load_mib']:.0f} MiB" + (f"; {run['stopped']}" if run["stopped"] else ""))
    return "\n".join([f"## Streaming memory: {results['config']}, {results['video']}, {results['objects']} object(s)",
                      "", f"`{results['command']}`", "",
                      f"Machine: {describe(results['machine_before'], results['machine_after'])}.", "", table, ""]
                     + lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="small", help="small (256 px) or a preset name, e.g. sam2.1-hiera-tiny")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--dtype", default="float32", help="of sam2-jax (transformers: float32)")
    parser.add_argument("--reference-frames", type=int, help="stream only this many frames through transformers")
    parser.add_argument("--keep-free-gib", type=float, default=4.0,
                        help="stop transformers when the machine has less memory available than this")
    parser.add_argument("--seed", type=int, default=0, help="of the random weights")
    parser.add_argument("--cores", type=int, help="run on this many cores (default: all); 1 on a loaded machine")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--out", default="benchmarks/results", help="folder for <device>-memory-<config>-<date>.*")
    args = parser.parse_args()
    use_cores(args.cores)
    results = measure(args)
    text = report(results)
    print(text)
    print("wrote", *save(args.out, f"memory-{args.config}", results, text))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
