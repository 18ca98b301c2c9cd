"""`sam2-jax batch` beyond one process: on a local Ray cluster started here (2 CPUs, loopback only) and as
two `jax.distributed` processes on 127.0.0.1, on a manifest of 6 generated clips (and one missing video)
with the packaged model: the same outputs, bitwise, as one `batch` process; an actor killed mid-write is
replaced and its video retried; bad input is one line before any work. The Ray tests skip where the ray
extra is not installed."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from sam2_jax.commands.demo import interior_point
from sam2_jax.commands.main import main
from sam2_jax.io.clips import generate_clip
from test_cli import files

MODEL, FORMATS = "sam2-jax-shapes", "davis,coco"
CLIPS = [(f"clip_{i}", 4 + i % 3) for i in range(6)]  # (name, frames): 64x96 folders of PNGs
WORKER = "ray::MapWorker(MapBatches(RayWorker))"  # the process title of a tracking actor


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The clips, manifest.jsonl (their lines, with a missing video at line 6) and a compilation cache."""
    root = tmp_path_factory.mktemp("distributed")
    lines = []
    for i, (name, num_frames) in enumerate(CLIPS):
        clip = generate_clip(10 + i, num_frames, 64, 96, max_objects=2, min_objects=2)
        (root / name).mkdir()
        for t, frame in enumerate(clip.frames):
            Image.fromarray(frame).save(root / name / f"{t:05d}.png")
        prompts = [{"obj_id": obj_id, "points": [list(interior_point(mask))]}
                   for obj_id, mask in zip(clip.obj_ids, clip.masks[0])]
        lines.append(json.dumps({"video": name, "prompts": prompts}))
    lines.insert(5, json.dumps({"video": "missing", "prompts": [{"points": [[5, 5]]}]}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (root / "cache").mkdir()
    return root


def batch(root: Path, out: Path, *args) -> tuple[int, dict | None, str]:
    """`sam2-jax batch` on the manifest in this process: (exit status, printed summary, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["batch", str(root / "manifest.jsonl"), "--model", MODEL, "--out", str(out), "--format",
                           FORMATS, "--compile-cache", str(root / "cache"), *map(str, args)])
    return status, json.loads(stdout.getvalue()) if stdout.getvalue() else None, stderr.getvalue()


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    """The manifest tracked by one process: (out folder, summary)."""
    out = tmp_path_factory.mktemp("single")
    status, summary, err = batch(data, out)
    assert status == 1, err  # the missing video
    return out, summary


def same_outputs(out: Path, expected: Path) -> None:
    """Every output under `out` is there and equal, byte for byte, to the one-process run's."""
    ours = {p.relative_to(out): p.read_bytes() for p in files(out) if p.name != "batch_summary.json"}
    theirs = {p.relative_to(expected): p.read_bytes() for p in files(expected) if p.name != "batch_summary.json"}
    assert sorted(ours) == sorted(theirs) and len(ours) == sum(n for _, n in CLIPS) + len(CLIPS)
    assert [name for name in ours if ours[name] != theirs[name]] == []
    assert not [p for p in files(out) if ".partial" in p.name]


def outcomes(summary: dict) -> list[tuple]:
    return [(v["line"], v["name"], v["status"], v["frames"], v.get("error")) for v in summary["videos"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster of this machine (2 CPUs), started here for the module: its address."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, logging_level=logging.WARNING,
             log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_ray_outputs_equal_one_process_and_a_rerun_skips(cluster, data, single, tmp_path):
    out = tmp_path / "out"
    status, summary, err = batch(data, out, "--ray", cluster, "--actors", 2)
    assert status == 1, err
    same_outputs(out, single[0])
    assert outcomes(summary) == outcomes(single[1])
    assert summary["ray"] == {"address": cluster, "actors": 2, "per_actor": {"CPU": 1}, "max_retries": 3}
    assert json.loads((out / "batch_summary.json").read_text()) == summary
    assert "batch: 7/7 videos (1 failed)" in err

    status, summary, err = batch(data, out, "--ray", cluster)
    assert status == 1, err
    assert [v["status"] for v in summary["videos"]] == ["skipped"] * 5 + ["failed", "skipped"]


def test_an_actor_killed_mid_write_is_replaced_and_its_video_retried(cluster, data, single, tmp_path):
    """The actor that holds a temporary output open is killed (SIGKILL); its video is tracked again on a
    restarted actor, every output is complete and equal to the one-process run's, the summary says which
    video was retried."""
    out = tmp_path / "out"
    killed = {}

    def kill_a_writer():
        deadline = time.monotonic() + 600  # the actors start and compile first
        while not killed and time.monotonic() < deadline:
            for pid in ray_workers():
                if any(str(out) in target and ".partial" in target for target in open_files(pid)):
                    os.kill(pid, signal.SIGKILL)
                    killed.update(pid=pid, at=time.monotonic())
                    break
            time.sleep(0.005)

    thread = threading.Thread(target=kill_a_writer, daemon=True)
    thread.start()
    status, summary, err = batch(data, out, "--ray", cluster, "--actors", 2)
    recovered = time.monotonic()
    thread.join(timeout=1)
    assert killed, f"no actor was seen writing:\n{err}"
    print(f"killed {killed['pid']}; the run ended {recovered - killed['at']:.1f} s later")
    assert status == 1, err
    same_outputs(out, single[0])
    assert outcomes(summary) == outcomes(single[1])
    retried = [v["name"] for v in summary["videos"] if v.get("retries")]
    assert len(retried) == 1 and all(v["retries"] == 1 for v in summary["videos"] if v.get("retries")), summary


def ray_workers() -> list[int]:
    """The pids of the tracking actors on this machine."""
    pids = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if entry.isdigit() and Path(f"/proc/{entry}/cmdline").read_bytes().startswith(WORKER.encode()):
                pids.append(int(entry))
    return pids


def open_files(pid: int) -> list[str]:
    """What the process `pid` has open (empty when it is gone)."""
    with contextlib.suppress(OSError):
        return [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    return []


# ----------------------------------------------------------------------------------- multi-host JAX
def test_two_jax_processes_split_the_manifest(data, single, tmp_path):
    """Two processes of two devices each, joined by jax.distributed on 127.0.0.1, track on one mesh of the
    four devices, a video at a time each (--group-size 1): each reads every other line and runs its video
    on its own devices (process 1's third line is the missing video and it has no fourth: it takes part in
    those batches with a stand-in), and together they write what one process writes; process 0 writes the
    summary of all."""
    out, address = tmp_path / "out", f"127.0.0.1:{free_port()}"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    runs = []
    for index in range(2):
        log = tmp_path / f"process_{index}"
        runs.append((log, subprocess.Popen(
            [sys.executable, "-m", "sam2_jax.commands", "batch", str(data / "manifest.jsonl"), "--model", MODEL,
             "--out", str(out), "--format", FORMATS, "--compile-cache", str(data / "cache"), "--coordinator",
             address, "--num-processes", "2", "--process-id", str(index), "--coordinator-timeout", "60",
             "--group-size", "1"],
            stdout=open(f"{log}.out", "w"), stderr=open(f"{log}.err", "w"), env=env)))
    for log, process in runs:
        assert process.wait(timeout=300) == 1, Path(f"{log}.err").read_text()  # the missing video
    summaries = [json.loads(Path(f"{log}.out").read_text()) for log, _ in runs]
    same_outputs(out, single[0])
    for summary in summaries:
        assert outcomes(summary) == outcomes(single[1])
        assert summary["processes"] == 2 and summary["mesh"] == {"videos": 4, "objects": 1}
        assert len(set(summary["devices"])) == 4
    assert json.loads((out / "batch_summary.json").read_text()) == summaries[0]
    assert "batch: 4/4 videos," in Path(f"{runs[0][0]}.err").read_text()  # items 0, 2, 4, 6
    assert "batch: 3/3 videos (1 failed)" in Path(f"{runs[1][0]}.err").read_text()  # 1, 3, 5 (missing)


@pytest.mark.parametrize("sent", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_stopped_process_stops_the_others_with_one_line(data, single, tmp_path, sent):
    """Process 1 killed outright (SIGKILL) once its first video is written: process 0 stops at its next
    collective with one line and status 1 (not failed videos, a traceback and an abort by jax.distributed's
    heartbeat 100 s later). Sent SIGTERM (a scheduler's notice) instead: both stop at a common step, status
    143. Either way a rerun finishes the manifest with the outputs of one process."""
    out, address = tmp_path / "out", f"127.0.0.1:{free_port()}"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    errs = [tmp_path / f"process_{index}.err" for index in range(2)]
    processes = [subprocess.Popen(
        [sys.executable, "-m", "sam2_jax.commands", "batch", str(data / "manifest.jsonl"), "--model", MODEL, "--out",
         str(out), "--format", FORMATS, "--compile-cache", str(data / "cache"), "--coordinator", address,
         "--num-processes", "2", "--process-id", str(index), "--coordinator-timeout", "60", "--group-size", "1"],
        stdout=subprocess.DEVNULL, stderr=open(errs[index], "w"), env=env) for index in range(2)]
    deadline = time.monotonic() + 240
    while not (out / "davis" / "clip_1").exists():  # process 1's first video (line 1), complete once it is there
        assert time.monotonic() < deadline and processes[1].poll() is None, errs[1].read_text()
        time.sleep(0.05)
    processes[1].send_signal(sent)
    sent_at = time.monotonic()
    statuses = [process.wait(timeout=60) for process in processes]
    assert time.monotonic() - sent_at < 30
    last = [err.read_text().strip().splitlines()[-1] for err in errs]
    if sent == signal.SIGKILL:
        assert statuses[0] == 1, errs[0].read_text()
        assert last[0].startswith("sam2-jax batch: error: the multi-host run broke down (")
        assert "Process 0 stops with" in last[0]
    else:
        assert statuses == [143, 143], [err.read_text() for err in errs]
        assert last == ["sam2-jax batch: terminated; nothing unfinished was kept"] * 2
    assert not any(word in errs[0].read_text() for word in ("Traceback", "Check failure"))
    status, _, rerun_err = batch(data, out)
    assert status == 1, rerun_err  # the missing video
    same_outputs(out, single[0])


# -------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_one_line_before_any_work(data, tmp_path):
    (tmp_path / "a_file").write_text("")
    closed = f"127.0.0.1:{free_port()}"
    manifest = str(data / "manifest.jsonl")
    cases = {
        "unreachable Ray": ([manifest, "--ray", closed], f"--ray: cannot reach {closed} within 5 s"),
        "Ray, missing manifest": ([str(tmp_path / "nope.jsonl"), "--ray", closed], "nope.jsonl' does not exist"),
        "Ray, --out not writable": ([manifest, "--ray", closed, "--out", tmp_path / "a_file"],
                                    "--out: cannot write"),
        "Ray and multi-host": ([manifest, "--ray", "auto", "--coordinator", closed, "--num-processes", 2,
                                "--process-id", 0], "choose one"),
        "--actors without --ray": ([manifest, "--actors", 2], "--actors: only with --ray"),
        "half the multi-host options": ([manifest, "--coordinator", closed], "give all three"),
        "process id out of range": ([manifest, "--coordinator", closed, "--num-processes", 2, "--process-id", 2],
                                    "--process-id: expected 0..1, got 2"),
        "unreachable coordinator": ([manifest, "--coordinator", closed, "--num-processes", 2, "--process-id", 1,
                                     "--coordinator-timeout", 1], f"--coordinator: cannot reach {closed} within 1 s"),
        "coordinator not on this machine": ([manifest, "--coordinator", "203.0.113.7:1234", "--num-processes", 2,
                                             "--process-id", 0], "process 0 runs the coordinator but cannot listen"),
    }
    for name, (args, phrase) in cases.items():
        args = [*map(str, args)] + ([] if "--out" in args else ["--out", str(tmp_path / "out")])
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            assert main(["batch", *args, "--model", MODEL]) == 1, name
        err = stderr.getvalue()
        assert err.count("\n") == 1 and phrase in err, (name, err)
        assert not files(tmp_path / "out"), name


def test_the_extras_are_imported_only_when_asked_for():
    """Plain `batch` (and `sam2-jax --help`) import neither ray nor jax.distributed's collectives."""
    script = ("import sys; from sam2_jax.commands.main import build_parser; build_parser(); "
              "assert 'ray' not in sys.modules and 'jax.experimental.multihost_utils' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
