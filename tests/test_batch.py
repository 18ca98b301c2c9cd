"""End to end: `sam2-jax batch` on a manifest of generated videos with a small random-weight checkpoint
(128 px): every format written, the same masks as `sam2-jax track` on each video, a rerun that skips what
is done, bad lines reported as failed videos while the good ones are done, and bad input before any work
a one-line error."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from sam2_jax.commands.demo import interior_point
from sam2_jax.commands.main import main
from sam2_jax.config import small_config
from sam2_jax.io.clips import generate_clip
from sam2_jax.io.writers import make_writer
from sam2_jax import Sam2VideoModel
from test_cli import cache, check_outputs, davis_frames, files  # noqa: F401 (cache is a fixture)

FORMATS = "davis,sav,coco,overlay"
# (name, frames, height, width): two sizes, three lengths; "frames_b" is a folder of PNGs, the others mp4.
VIDEOS = [("clip_a", 8, 96, 128), ("frames_b", 6, 96, 128), ("clip_c", 5, 64, 96)]
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A checkpoint (seed 5: random weights whose masks cover part of the frame, not all or nothing), the
    three videos, a mask PNG and the prompts of each (clicks and a box on frame 0, a mask on frame 2), and
    manifest.jsonl listing them."""
    root = tmp_path_factory.mktemp("batch")
    Sam2VideoModel.from_config(small_config(image_size=128), seed=5).save_pretrained(root / "checkpoint")
    lines, prompts = [], {}
    for i, (name, num_frames, height, width) in enumerate(VIDEOS):
        clip = generate_clip(i, num_frames, height, width, max_objects=2, min_objects=2)
        if name.startswith("frames"):
            (root / name).mkdir()
            for t, frame in enumerate(clip.frames):
                Image.fromarray(frame).save(root / name / f"{t:05d}.png")
            video = name
        else:
            video = f"{name}.mp4"
            with make_writer("overlay", root / video, fps=8.0) as writer:
                for t, frame in enumerate(clip.frames):
                    writer.write(t, {}, frame=frame)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray((clip.masks[2, 1] * 255).astype(np.uint8)).save(root / "masks" / f"{name}.png")
        ys, xs = np.nonzero(clip.masks[0, 0])
        prompts[name] = [
            {"obj_id": 1, "points": [list(interior_point(clip.masks[0, 0])), [2, 2]], "labels": [1, 0]},
            {"frame": 0, "obj_id": 1, "box": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]},
            {"frame": 2, "obj_id": 2, "mask": f"masks/{name}.png"}]
        lines.append(json.dumps({"video": video, "prompts": prompts[name]}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root, prompts


def batch(*args, cache: str) -> int:
    return main(["batch", *map(str, args), "--compile-cache", cache])


@pytest.fixture(scope="module")
def first_run(data, cache, tmp_path_factory):
    """The manifest tracked once in every format: (out folder, printed summary, stderr). (A module fixture
    cannot use capsys, hence the redirection.)"""
    root, _ = data
    out = tmp_path_factory.mktemp("out")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = batch(root / "manifest.jsonl", "--model", root / "checkpoint", "--out", out, "--format", FORMATS,
                       cache=cache)
    assert status == 0, stderr.getvalue()
    return out, json.loads(stdout.getvalue()), stderr.getvalue()


def test_batch_writes_every_format_and_a_summary(first_run):
    out, summary, err = first_run
    for name, num_frames, height, width in VIDEOS:
        check_outputs(out, name, list(range(num_frames)), (1, 2), (height, width))
    assert json.loads((out / "batch_summary.json").read_text()) == summary
    assert [(v["line"], v["name"], v["status"], v["frames"]) for v in summary["videos"]] == [
        (i + 1, name, "done", num_frames) for i, (name, num_frames, _, _) in enumerate(VIDEOS)]
    assert all(v["seconds"] > 0 for v in summary["videos"])
    totals = summary["totals"]
    assert (totals["videos"], totals["done"], totals["skipped"], totals["failed"]) == (3, 3, 0, 0)
    assert totals["frames"] == 19 and totals["frames_per_second"] > 0
    assert summary["mesh"] == {"videos": 1, "objects": 1}
    assert "batch: 3/3 videos, 19 frames" in err and "frames/s" in err  # the progress line


def test_batch_masks_equal_track(data, first_run, tmp_path, cache):
    """The functional path and the session agree to ~1e-7 in the logits, so the binarised masks are equal but
    for pixels whose logit is that close to the threshold (one in 12,288 on clip_a's frame 0 with jax 0.10.2)."""
    root, prompts = data
    out = first_run[0]
    for name, num_frames, _, _ in VIDEOS:
        (root / f"{name}.json").write_text(json.dumps(prompts[name]))
        video = root / name if name.startswith("frames") else root / f"{name}.mp4"
        assert main(["track", str(video), "--model", str(root / "checkpoint"), "--prompts",
                         str(root / f"{name}.json"), "--out", str(tmp_path), "--compile-cache", cache]) == 0
        assert davis_frames(tmp_path / "davis" / name) == list(range(num_frames))
        for t in range(num_frames):
            with Image.open(out / "davis" / name / f"{t:05d}.png") as ours, \
                    Image.open(tmp_path / "davis" / name / f"{t:05d}.png") as theirs:
                labels = np.asarray(ours)
                assert (labels != np.asarray(theirs)).mean() <= 5e-4, f"{name} frame {t}"
            if t != 2:  # not the mask prompt: the masks are the model's, neither empty nor everything
                assert 0 < (labels > 0).mean() < 1, (name, t)


def test_rerun_skips_what_is_done_and_writes_missing_formats(data, first_run, capsys, cache):
    root, _ = data
    out = first_run[0]
    before = {p: p.stat().st_mtime_ns for p in files(out) if p.name != "batch_summary.json"}
    argv = [root / "manifest.jsonl", "--model", root / "checkpoint", "--out", out, "--format", FORMATS]
    assert batch(*argv, cache=cache) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [v["status"] for v in summary["videos"]] == ["skipped"] * 3
    assert summary["totals"]["skipped"] == 3 and summary["totals"]["frames"] == 0
    assert {p: p.stat().st_mtime_ns for p in files(out) if p.name != "batch_summary.json"} == before

    (out / "coco" / "clip_c.json").unlink()  # as if stopped before that output was finished
    assert batch(*argv, cache=cache) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [v["status"] for v in summary["videos"]] == ["skipped", "skipped", "done"]
    assert (out / "coco" / "clip_c.json").is_file()
    del before[out / "coco" / "clip_c.json"]
    assert {p: p.stat().st_mtime_ns for p in files(out) if p in before} == before  # the others untouched


def test_bad_lines_fail_alone(data, tmp_path, capsys, cache):
    """A missing video, a line that is not JSON, one without prompts and a prompt past a video's end are
    failed videos naming their line; the good videos around them are done; the exit status is 1."""
    root, prompts = data
    lines = [
        json.dumps({"video": "clip_a.mp4", "prompts": prompts["clip_a"]}),
        json.dumps({"video": "missing.mp4", "prompts": prompts["clip_a"]}),
        '{"video": "clip_c.mp4", "prompts": [',
        json.dumps({"video": "clip_c.mp4"}),
        json.dumps({"video": "frames_b", "prompts": [{"frame": 6, "obj_id": 1, "points": [[5, 5]]}]}),
        "",
        json.dumps({"video": "clip_c.mp4", "prompts": prompts["clip_c"]}),
    ]
    manifest = root / "bad.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert batch(manifest, "--model", root / "checkpoint", "--out", out, "--format", "davis,coco", cache=cache) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    status = {v["line"]: (v["status"], v.get("error", "")) for v in summary["videos"]}
    assert sorted(status) == [1, 2, 3, 4, 5, 7]
    assert status[1][0] == status[7][0] == "done"
    for line, phrase in ((2, "missing.mp4', which does not exist"), (3, "not valid JSON"),
                         (4, 'expected an object {"video": PATH, "prompts": [...]}'),
                         (5, "prompts[0]: frame 6 is past the end of the video (6 frames")):
        assert status[line][0] == "failed" and status[line][1].startswith(f"{manifest}:{line}: "), status[line]
        assert phrase in status[line][1], status[line]
        assert f"sam2-jax batch: {status[line][1]}\n" in captured.err
    assert summary["totals"] == {**summary["totals"], "videos": 6, "done": 2, "skipped": 0, "failed": 4, "frames": 13}
    assert sorted(p.relative_to(out).parts[:2] for p in files(out) if p.suffix == ".json") == [
        ("batch_summary.json",), ("coco", "clip_a.json"), ("coco", "clip_c.json")]
    assert not (out / "davis" / "frames_b").exists() and not (out / "davis" / "missing").exists()


def test_bad_input_before_any_work_is_one_line(data, tmp_path, capsys, cache):
    root, _ = data
    (tmp_path / "a_file").write_text("")
    (tmp_path / "empty.jsonl").write_text("\n")
    model = root / "checkpoint"
    cases = {
        "missing manifest": ([tmp_path / "nope.jsonl", "--out", tmp_path / "out"], "nope.jsonl' does not exist"),
        "empty manifest": ([tmp_path / "empty.jsonl", "--out", tmp_path / "out"], "got none"),
        "--out not writable": ([root / "manifest.jsonl", "--out", tmp_path / "a_file"], "--out: cannot write"),
        "too many object shards": ([root / "manifest.jsonl", "--out", tmp_path / "out", "--object-shards", "2"],
                                   "--object-shards: expected a divisor of the 1 devices, got 2"),
        "both directions and reverse": ([root / "manifest.jsonl", "--reverse", "--both-directions"],
                                        "not allowed with argument"),
    }
    for name, (args, phrase) in cases.items():
        assert batch(*args, "--model", model, cache=cache) == 1, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and phrase in err, (name, err)
        assert not files(tmp_path / "out"), name


def test_help_documents_the_manifest(capsys):
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    text = capsys.readouterr().out
    for phrase in ('"video"', '"prompts"', "relative to the manifest", "--object-shards", "--both-directions",
                   "batch_summary.json", "Exit status: 1 when any video failed"):
        assert phrase in text, phrase
