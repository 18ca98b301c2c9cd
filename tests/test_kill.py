"""`sam2-jax track` and `sam2-jax batch` stopped mid-run, as subprocesses (small random-weight checkpoint,
128 px, one compilation cache for the module): Ctrl-C (SIGINT) exits with status 130 and one line on
stderr, keeping no temporary output and no output under its final name that is not complete; SIGKILL
leaves only hidden temporary outputs (`.NAME.*.partial*`), which the rerun removes. The rerun finishes the
work with the same masks, bitwise, as a run that was not stopped."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from sam2_jax.commands.demo import interior_point
from sam2_jax.commands.outputs import lock_partial, open_output, output_paths, remove_stale_partials
from sam2_jax.io.clips import generate_clip
from sam2_jax.io.writers import make_writer
from sam2_jax import Sam2VideoModel
from test_cli import check_outputs, files
from test_threads import tiny_config

FORMATS = "davis,sav,coco,overlay"
FRAMES, BATCH_FRAMES, SIZE = 24, 16, (64, 96)  # track tracks its video for a second or two: time to stop it
VIDEOS = ("va", "vb", "vc")  # batch: three copies of one video, so each one's masks must equal the others'
SAM2_JAX = str(Path(sys.executable).with_name("sam2-jax"))
# These runs are about stopping and resuming, not speed: XLA's backend unoptimised compiles a quarter faster.
ENV = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()}
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A checkpoint, a compilation cache, clip.mp4 (FRAMES frames) with its prompts (a click per object),
    and manifest.jsonl listing VIDEOS (copies of the clip's first BATCH_FRAMES frames) with the same prompts."""
    root = tmp_path_factory.mktemp("kill")
    Sam2VideoModel.from_config(tiny_config(), seed=5).save_pretrained(root / "checkpoint")
    clip = generate_clip(3, FRAMES, *SIZE, max_objects=2, min_objects=2)
    for path, frames in ((root / "clip.mp4", clip.frames), (root / "va.mp4", clip.frames[:BATCH_FRAMES])):
        with make_writer("overlay", path, fps=8.0) as writer:
            for t, frame in enumerate(frames):
                writer.write(t, {}, frame=frame)
    prompts = [{"obj_id": obj_id, "points": [list(interior_point(mask))]}
               for obj_id, mask in zip(clip.obj_ids, clip.masks[0])]
    (root / "prompts.json").write_text(json.dumps(prompts))
    for name in VIDEOS[1:]:
        shutil.copy(root / "va.mp4", root / f"{name}.mp4")
    (root / "manifest.jsonl").write_text("".join(json.dumps({"video": f"{name}.mp4", "prompts": prompts}) + "\n"
                                                 for name in VIDEOS))
    (root / "cache").mkdir()
    return root


def _shell_sigint() -> None:
    """In the child: SIGINT handled, SIGINT and SIGTERM unblocked, as a shell starts a command. A child inherits
    an ignored or blocked SIGINT from its parent, and a test worker's may have been changed by other tests in it
    (seen in CI: both kill tests' runs went on to the end after SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


class Run:
    """`sam2-jax COMMAND ...` in a subprocess, its stdout and stderr in files (a pipe could fill and stall it)."""

    def __init__(self, root: Path, log: Path, command: str, *args):
        self.log = log
        self.log.mkdir(parents=True, exist_ok=True)
        with open(log / "out", "w") as out, open(log / "err", "w") as err:
            self.process = subprocess.Popen(
                [SAM2_JAX, command, *map(str, args), "--model", root / "checkpoint", "--format", FORMATS,
                 "--compile-cache", root / "cache"], stdout=out, stderr=err, env=ENV, preexec_fn=_shell_sigint)

    def wait_until(self, condition, timeout: float = 300) -> None:
        """Poll `condition()` until it holds; fail if the process ends first."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"it ended before it could be stopped:\n{self.stderr}"
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.005)

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=120)

    def finish(self) -> int:
        return self.process.wait(timeout=300)

    @property
    def stdout(self) -> str:
        return (self.log / "out").read_text()

    @property
    def stderr(self) -> str:
        return (self.log / "err").read_text()


def partials(out: Path) -> list[Path]:
    """The temporary outputs under `out` (hidden, `.NAME.*.partial*`)."""
    return sorted(p for p in out.rglob("*") if ".partial" in p.name)


def pngs_in_partials(out: Path, name: str) -> int:
    """PNG frames written so far in the temporary davis folders of `name` (0 once they are renamed)."""
    try:
        return sum(len(list(d.glob("*.png"))) for d in (out / "davis").glob(f".{name}.*.partial"))
    except OSError:  # renamed while listed
        return 0


def done(out: Path, name: str) -> bool:
    """All four outputs of `name` are under their final names."""
    return all(p.exists() for p in output_paths(out, name, FORMATS.split(",")).values())


def finals(out: Path) -> list[str]:
    """The outputs under their final names: 'format/NAME' for each (temporary outputs are hidden)."""
    return sorted(f"{p.parent.name}/{p.name}" for p in out.glob("*/*") if not p.name.startswith("."))


def check_interrupted(run: Run, command: str, status: int, how: str = "interrupted") -> None:
    """Ctrl-C (or SIGTERM): exit status 130 (143), one line that says so at the end of stderr (after the
    progress line), no traceback."""
    assert status == {"interrupted": 130, "terminated": 143}[how], run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    last = re.split(r"[\r\n]+", run.stderr.strip())[-1]
    assert last == f"sam2-jax {command}: {how}; nothing unfinished was kept", run.stderr


def same_masks(out: Path, name: str, reference: Path, reference_name: str) -> None:
    """The mask outputs (davis, sav, coco) of `name` under `out` hold the same files with the same bytes as
    those of `reference_name` under `reference`. (The overlay is not compared: x264's multithreaded
    encoding differs from run to run; `check_outputs` counts its frames.)"""
    paths = output_paths(out, name, ("davis", "sav", "coco")).values()
    references = output_paths(reference, reference_name, ("davis", "sav", "coco")).values()
    for ours, theirs in zip(paths, references):
        if theirs.is_file():
            assert ours.read_bytes() == theirs.read_bytes(), ours
            continue
        names = sorted(p.relative_to(theirs) for p in files(theirs))
        assert names and sorted(p.relative_to(ours) for p in files(ours)) == names, ours
        for file in names:
            assert (ours / file).read_bytes() == (theirs / file).read_bytes(), ours / file


def check_outputs_of(out: Path, name: str, format: str) -> None:
    """One output of `name`, read back: all BATCH_FRAMES frames are in it."""
    path = output_paths(out, name, [format])[format]
    if format == "davis":
        assert len(list(path.glob("*.png"))) == BATCH_FRAMES
    elif format == "sav":
        assert [len(list(d.glob("*.png"))) for d in sorted(path.iterdir())] == [BATCH_FRAMES] * 2
    elif format == "coco":
        assert len(json.loads(path.read_text())) == BATCH_FRAMES * 2
    else:
        with av.open(str(path)) as container:
            assert sum(1 for _ in container.decode(video=0)) == BATCH_FRAMES


def test_only_unlocked_partials_are_stale(tmp_path):
    """A run holds a lock on each temporary output it writes (`open_output`); `remove_stale_partials`
    deletes those of the output's name that nobody holds, and nothing else."""
    davis, coco = tmp_path / "davis", tmp_path / "coco"
    stale, live, other = davis / ".clip.k1ll3d00.partial", davis / ".clip.runn1ng0.partial", davis / ".clip2.x.partial"
    for folder in (stale, live, other):
        folder.mkdir(parents=True)
        (folder / "00000.png").write_bytes(b"")
    coco.mkdir()
    (coco / ".clip.json.k1ll3d00.partial.json").write_text("[")
    (coco / "clip.json").write_text("[]")
    held = lock_partial(live)  # as a live run holds it (flock: another open of the file is another holder)
    try:
        remove_stale_partials(davis / "clip")
        remove_stale_partials(coco / "clip.json")
        assert sorted(p.name for p in davis.iterdir()) == sorted([other.name, live.name])
        assert [p.name for p in coco.iterdir()] == ["clip.json"]
        with open_output("davis", davis / "clip") as writer:  # its own temporary output is held too
            assert writer._tmp.is_dir() and lock_partial(writer._tmp) is None
            remove_stale_partials(davis / "clip")
            assert writer._tmp.is_dir() and live.is_dir()
    finally:
        os.close(held)


# ---------------------------------------------------------------------------------------------
# track
# ---------------------------------------------------------------------------------------------


def track(data: Path, out: Path, log: Path) -> Run:
    return Run(data, log, "track", data / "clip.mp4", "--prompts", data / "prompts.json", "--out", out)


@pytest.fixture(scope="module")
def track_sigint(data, tmp_path_factory):
    """`track` stopped by SIGINT once a few frames are written, then run again to the end in the same
    folder: (out folder, the stopped run, its exit status, the files it left)."""
    out, logs = tmp_path_factory.mktemp("track_sigint"), tmp_path_factory.mktemp("logs")
    run = track(data, out, logs / "stopped")
    run.wait_until(lambda: pngs_in_partials(out, "clip") >= 2)
    status = run.stop(signal.SIGINT)
    left = sorted(p.relative_to(out) for p in out.rglob("*"))
    rerun = track(data, out, logs / "rerun")
    assert rerun.finish() == 0, rerun.stderr
    return out, run, status, left


def test_track_sigint_keeps_nothing_and_the_rerun_finishes(track_sigint):
    out, run, status, left = track_sigint
    check_interrupted(run, "track", status)
    assert f"{FRAMES} frames" in run.stdout  # it had started: the video was read, the model loaded
    assert all(p.name in FORMATS.split(",") for p in left), left  # only the (empty) format folders
    check_outputs(out, "clip", list(range(FRAMES)), (1, 2), SIZE)  # the rerun: every frame, every format


def test_track_sigterm_is_a_clean_stop(data, tmp_path):
    """SIGTERM (`kill`, a job scheduler) stops as Ctrl-C does: status 143, one line, no unfinished output."""
    out = tmp_path / "out"
    run = track(data, out, tmp_path / "terminated")
    run.wait_until(lambda: pngs_in_partials(out, "clip") >= 2)
    status = run.stop(signal.SIGTERM)
    check_interrupted(run, "track", status, "terminated")
    assert all(p.name in FORMATS.split(",") for p in out.rglob("*")), list(out.rglob("*"))


def test_track_sigkill_leaves_hidden_partials_that_the_rerun_removes(data, track_sigint, tmp_path):
    """SIGKILL mid-run: no output under a final name, hidden temporary outputs of every format; the rerun
    removes them and writes what the run after SIGINT wrote (an uninterrupted run, from an empty folder)."""
    reference = track_sigint[0]
    out = tmp_path / "out"
    run = track(data, out, tmp_path / "killed")
    run.wait_until(lambda: pngs_in_partials(out, "clip") >= 2)
    assert run.stop(signal.SIGKILL) == -signal.SIGKILL
    assert finals(out) == []
    left = partials(out)
    assert sorted(p.parent.name for p in left) == sorted(FORMATS.split(",")), left
    assert all(p.name.startswith(".clip.") for p in left)

    rerun = track(data, out, tmp_path / "rerun")
    assert rerun.finish() == 0, rerun.stderr
    check_outputs(out, "clip", list(range(FRAMES)), (1, 2), SIZE)
    assert partials(out) == []
    same_masks(out, "clip", reference, "clip")


# ---------------------------------------------------------------------------------------------
# batch
# ---------------------------------------------------------------------------------------------


def batch(data: Path, out: Path, log: Path) -> Run:
    return Run(data, log, "batch", data / "manifest.jsonl", "--out", out, "--group-size", "1")


@pytest.fixture(scope="module")
def batch_sigint(data, tmp_path_factory):
    """`batch` (one video at a time) stopped by SIGINT once the first video is done: (out folder, the run,
    its exit status, the outputs under final names and the partials it left)."""
    out = tmp_path_factory.mktemp("batch")
    run = batch(data, out, tmp_path_factory.mktemp("logs") / "batch_stopped")
    run.wait_until(lambda: done(out, "va"))
    status = run.stop(signal.SIGINT)
    return out, run, status, finals(out), partials(out)


def test_batch_sigint_keeps_the_videos_done(batch_sigint):
    out, run, status, kept, left = batch_sigint
    check_interrupted(run, "batch", status)
    assert kept == [f"{f}/{name}" for f, name in (("coco", "va.json"), ("davis", "va"), ("overlay", "va.mp4"),
                                                  ("sav", "va"))]
    assert left == [] and not (out / "batch_summary.json").exists()


def test_batch_sigkill_then_the_rerun_finishes(data, batch_sigint, tmp_path):
    """The rerun after SIGINT skips va; SIGKILL while it writes vb (or, if vb is written first, while it
    tracks vc); the next rerun removes what the kill left, writes what is missing, and says so. vb and vc
    (tracked one per run, after interruptions) equal va (tracked before any), bitwise."""
    out = batch_sigint[0]
    run = batch(data, out, tmp_path / "killed")
    run.wait_until(lambda: pngs_in_partials(out, "vb") >= 1 or done(out, "vb"))
    assert run.stop(signal.SIGKILL) == -signal.SIGKILL
    vb_done = done(out, "vb")
    for name in VIDEOS:  # whatever is under a final name is complete
        for f, path in output_paths(out, name, FORMATS.split(",")).items():
            if path.exists():
                check_outputs_of(out, name, f)
    left = partials(out)
    assert all(p.name.startswith((".vb.", ".vc.", ".batch_summary.json.")) for p in left), left
    assert not (out / "batch_summary.json").exists() and not done(out, "vc")

    rerun = batch(data, out, tmp_path / "rerun")
    assert rerun.finish() == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert [(v["name"], v["status"]) for v in summary["videos"]] == [
        ("va", "skipped"), ("vb", "skipped" if vb_done else "done"), ("vc", "done")]
    assert partials(out) == []
    for name in VIDEOS:
        check_outputs(out, name, list(range(BATCH_FRAMES)), (1, 2), SIZE)
    for name in VIDEOS[1:]:
        same_masks(out, name, out, "va")

