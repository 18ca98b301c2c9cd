"""End to end: `sam2-jax track` and `sam2-jax demo` on generated clips with a small random-weight checkpoint
(128 px), every output format read back, and every bad input a one-line error with exit status 1 and no
output left behind."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import jax
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from sam2_jax.commands.demo import interior_point
from sam2_jax.commands.main import main
from sam2_jax.commands.progress import progress_bar
from sam2_jax.io.clips import generate_clip
from sam2_jax.io.writers import make_writer

FRAMES = 8
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One compilation cache for the module's runs (each run builds new jitted functions); JAX's setting is
    put back afterwards."""
    before = jax.config.jax_compilation_cache_dir
    yield str(tmp_path_factory.mktemp("jax_cache"))
    jax.config.update("jax_compilation_cache_dir", before)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, cache):
    """`sam2-jax demo` with random weights at 128 px: its output folder (whose checkpoint the other tests
    use) and what it printed."""
    out = tmp_path_factory.mktemp("demo")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        status = main(["demo", "--out", str(out), "--frames", str(FRAMES), "--image-size", "128",
                           "--random-weights", "--compile-cache", cache])
    assert status == 0
    return out, stdout.getvalue()


@pytest.fixture(scope="module")
def clip_video(tmp_path_factory):
    """A generated clip of 8 frames (96x128) as an mp4 file and as a folder of PNG frames."""
    clip = generate_clip(3, FRAMES, 96, 128, max_objects=2, min_objects=2)
    root = tmp_path_factory.mktemp("clip")
    with make_writer("overlay", root / "clip.mp4", fps=8.0) as writer:
        for t, frame in enumerate(clip.frames):
            writer.write(t, {}, frame=frame)
    (root / "frames").mkdir()
    for t, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(root / "frames" / f"{t:05d}.png")
    return clip, root


def track(*args, cache: str, **kwargs) -> int:
    return main(["track", *map(str, args), "--compile-cache", cache])


def clicks(clip, frame: int = 0) -> list[str]:
    """One click per object at its centre on `frame`: --frame F --obj 1 --point x,y --obj 2 ..."""
    argv = ["--frame", str(frame)]
    for obj_id, mask in zip(clip.obj_ids, clip.masks[frame]):
        argv += ["--obj", str(obj_id), "--point", "{},{}".format(*interior_point(mask))]
    return argv


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def davis_frames(folder: Path) -> list[int]:
    return [int(p.stem) for p in sorted(folder.glob("*.png"))]


def read_sav(folder: Path) -> dict[int, np.ndarray]:
    """{obj_id: (T, H, W) bool} from an SA-V folder, checking each PNG is indexed with values 0/1."""
    out = {}
    for obj in sorted(folder.iterdir()):
        masks = []
        for png in sorted(obj.glob("*.png")):
            with Image.open(png) as image:
                assert image.mode == "P"
                values = np.asarray(image)
            assert set(np.unique(values)) <= {0, 1}
            masks.append(values == 1)
        out[int(obj.name)] = np.stack(masks)
    return out


def check_outputs(out: Path, name: str, frames: list[int], obj_ids: tuple, size: tuple[int, int]):
    """Every format under `out`, read back, holds the same masks for `frames` and `obj_ids` at `size`."""
    davis = out / "davis" / name
    assert davis_frames(davis) == frames
    sav = read_sav(out / "sav" / name)
    assert sorted(sav) == list(obj_ids)
    expected_labels = np.zeros((len(frames), *size), np.uint8)
    for obj_id in sorted(obj_ids, reverse=True):  # lower ids win where masks overlap
        assert sav[obj_id].shape == (len(frames), *size)
        expected_labels[sav[obj_id]] = obj_id
    for i, frame in enumerate(frames):
        with Image.open(davis / f"{frame:05d}.png") as image:
            assert image.mode == "P" and image.size == (size[1], size[0])
            labels = np.asarray(image)
        assert set(np.unique(labels)) <= {0, *obj_ids}
        np.testing.assert_array_equal(labels, expected_labels[i])
    entries = json.loads((out / "coco" / f"{name}.json").read_text())
    assert len(entries) == len(frames) * len(obj_ids)
    for entry in entries:
        decoded = coco_mask.decode(entry["segmentation"]).astype(bool)
        np.testing.assert_array_equal(decoded, sav[entry["obj_id"]][frames.index(entry["frame_idx"])])
    with av.open(str(out / "overlay" / f"{name}.mp4")) as container:
        decoded = [f for f in container.decode(video=0)]
    assert len(decoded) == len(frames)
    assert (decoded[0].height, decoded[0].width) == size
    assert not [p for p in files(out) if ".partial" in p.name]


# ---------------------------------------------------------------------------------------------
# demo and track
# ---------------------------------------------------------------------------------------------


def test_demo_tracks_scores_and_writes_every_format(demo):
    out, printed = demo
    assert (out / "clip.mp4").is_file() and (out / "checkpoint" / "config.json").is_file()
    assert "random-weight" in printed and "sam2-jax track" in printed
    assert "J&F" in printed and "copying the first mask" in printed
    clip = generate_clip(0, FRAMES, 240, 320, max_objects=3)
    check_outputs(out, "clip", list(range(FRAMES)), clip.obj_ids, (240, 320))
    assert davis_frames(out / "ground_truth" / "Annotations" / "480p" / "clip") == list(range(FRAMES))


def test_demo_tracks_with_the_packaged_model(tmp_path, capsys, cache):
    """Without --random-weights the demo tracks with the trained sam2-jax-shapes, named on the command line."""
    assert main(["demo", "--out", str(tmp_path), "--frames", str(FRAMES), "--compile-cache", cache]) == 0
    printed = capsys.readouterr().out
    assert "--model sam2-jax-shapes" in printed and not (tmp_path / "checkpoint").exists()
    tracked, copied = (float(v) for v in re.search(r"tracked ([\d.]+) .*first mask ([\d.]+)", printed).groups())
    assert tracked > 0.8 and tracked > copied + 0.3, printed


def test_track_video_file_every_format(demo, clip_video, tmp_path, capsys, cache):
    clip, root = clip_video
    status = track(root / "clip.mp4", "--model", demo[0] / "checkpoint", *clicks(clip), "--out", tmp_path,
                   "--format", "davis,sav", "--format", "coco", "--format", "overlay", cache=cache)
    assert status == 0
    captured = capsys.readouterr()
    assert f"tracked {FRAMES} frames (0 to {FRAMES - 1}) x 2 object(s)" in captured.out
    assert "frames/s" in captured.out and str(tmp_path / "davis" / "clip") in captured.out
    assert "frame/s" in captured.err  # the progress bar
    check_outputs(tmp_path, "clip", list(range(FRAMES)), clip.obj_ids, (96, 128))
    # an existing output is kept unless --overwrite
    argv = [root / "clip.mp4", "--model", demo[0] / "checkpoint", *clicks(clip), "--out", tmp_path]
    assert track(*argv, cache=cache) == 1
    assert "already exists" in capsys.readouterr().err
    assert track(*argv, "--overwrite", "--max-frames", "2", cache=cache) == 0
    assert davis_frames(tmp_path / "davis" / "clip") == [0, 1]


def test_track_prompts_json_with_points_box_and_mask(demo, clip_video, tmp_path, cache):
    clip, root = clip_video
    Image.fromarray((clip.masks[2, 1] * 255).astype(np.uint8)).save(tmp_path / "obj2.png")
    ys, xs = np.nonzero(clip.masks[0, 0])
    prompts = [
        {"obj_id": 1, "points": [list(interior_point(clip.masks[0, 0]))], "labels": [1]},
        {"frame": 0, "obj_id": 1, "box": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]},
        {"frame": 2, "obj_id": 2, "mask": "obj2.png"},
    ]
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    out = tmp_path / "out"
    status = track(root / "frames", "--model", demo[0] / "checkpoint", "--prompts", tmp_path / "prompts.json",
                   "--out", out, "--format", "sav,davis,coco,overlay", "--non-overlap", "--fill-holes", "4",
                   "--remove-sprinkles", "4", cache=cache)
    assert status == 0
    check_outputs(out, "frames", list(range(FRAMES)), (1, 2), (96, 128))
    sav = read_sav(out / "sav" / "frames")
    assert not (sav[1] & sav[2]).any()  # --non-overlap


@pytest.mark.parametrize("options, frames", [
    (["--reverse"], [0, 1, 2, 3, 4, 5]),
    (["--both-directions", "--max-frames", "3"], [3, 4, 5, 6, 7]),
    (["--reverse", "--both-directions", "--start-frame", "4", "--max-frames", "2"], [3, 4, 5]),
])
def test_track_direction_and_range(demo, clip_video, tmp_path, options, frames, cache):
    """Prompts on frame 5 of 8; the overlay needs frames in order, so passes that go backward are written
    at the end, in order."""
    clip, root = clip_video
    status = track(root / "clip.mp4", "--model", demo[0] / "checkpoint", *clicks(clip, 5), *options,
                   "--out", tmp_path, "--format", "davis,overlay", cache=cache)
    assert status == 0
    assert davis_frames(tmp_path / "davis" / "clip") == frames
    with av.open(str(tmp_path / "overlay" / "clip.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == len(frames)


# ---------------------------------------------------------------------------------------------
# bad input: one line on stderr, exit status 1, no output file left
# ---------------------------------------------------------------------------------------------


def _faststart_mp4(path: Path, frames: np.ndarray) -> None:
    """An mp4 whose index (moov) comes before the frames."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.height, stream.width, stream.pix_fmt = *frames.shape[1:3], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _bad_inputs(root: Path, model: Path, clip) -> dict[str, tuple[list, str]]:
    """name -> (track arguments, a phrase the error must contain); files made under `root`."""
    (root / "not_video.mp4").write_text("hello, I am text")
    (root / "empty").mkdir()
    (root / "mixed").mkdir()
    Image.fromarray(clip.frames[0]).save(root / "mixed" / "00000.png")
    Image.fromarray(clip.frames[1][:64]).save(root / "mixed" / "00001.png")
    (root / "a_file").write_text("")
    (root / "bad.json").write_text('[{"frame": 0, "points": [[10, 10]]}]')
    (root / "no_weights").mkdir()
    shutil.copy(model / "config.json", root / "no_weights" / "config.json")
    video = root / "video.mp4"
    return {
        "missing file": ([root / "missing.mp4"], "does not exist"),
        "not a video": ([root / "not_video.mp4"], "not a readable video"),
        "cut-off video": ([root / "cut.mp4"], "not a readable video"),
        "truncated video": ([root / "truncated.mp4"], "the file is truncated"),
        "empty folder": ([root / "empty"], "found none"),
        "frames of mixed sizes": ([root / "mixed"], "00001.png"),
        "prompt past the end": ([video, "--frame", "8", "--point", "5,5"], "past the end of the video (8 frames"),
        "two boxes for one object": ([video, "--box", "1,1,9,9", "--point", "3,3", "--box", "2,2,5,5"],
                                     "object 1 is given twice inconsistently on frame 0"),
        "mask beside points": ([video, "--point", "3,3", "--prompts", root / "mask.json"],
                               "given twice inconsistently"),
        "output folder not writable": ([video, "--point", "3,3", "--out", root / "a_file" / "out"],
                                       "cannot write"),
        "unknown format": ([video, "--point", "3,3", "--format", "davis,png"], "unknown format 'png'"),
        "model folder missing": ([video, "--point", "3,3", "--model", root / "no_model"],
                                 "--model: expected a checkpoint folder"),
        "checkpoint without weights": ([video, "--point", "3,3", "--model", root / "no_weights"],
                                       "model.safetensors"),
        "image size mismatch": ([video, "--point", "3,3", "--image-size", "256"], "does not match"),
        "no prompts": ([video], "no prompts"),
        "point outside the frame": ([video, "--point", "500,5"], "inside the frame"),
        "malformed point": ([video, "--point", "5"], "argument --point: expected x,y or x,y,label"),
        "bad label": ([video, "--point", "5,5,2"], "label must be 1"),
        "bad object id": ([video, "--obj", "0", "--point", "5,5"], "an object id in 1..254"),
        "bad JSON entry": ([video, "--prompts", root / "bad.json"], "bad.json[0]: expected an object with obj_id"),
        "reverse from frame 0": ([video, "--point", "5,5", "--reverse"], "visits no frame"),
    }


def test_bad_input_is_one_line_and_leaves_nothing(demo, clip_video, tmp_path, capsys, cache):
    clip, root = clip_video
    model = demo[0] / "checkpoint"
    shutil.copy(root / "clip.mp4", tmp_path / "video.mp4")
    data = (root / "clip.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) // 2])  # its index (at the end) is gone
    _faststart_mp4(tmp_path / "whole.mp4", clip.frames)  # index first: cut, it still opens
    data = (tmp_path / "whole.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[:len(data) * 2 // 3])
    Image.fromarray(clip.masks[0, 0]).save(tmp_path / "mask.png")
    (tmp_path / "mask.json").write_text('[{"obj_id": 1, "mask": "mask.png"}]')
    cases = _bad_inputs(tmp_path, model, clip)
    for name, (args, phrase) in cases.items():
        out = tmp_path / "out"
        argv = [*args, "--out", out] if "--out" not in args else args
        argv = [*argv, "--model", model] if "--model" not in args else argv
        assert track(*argv, "--format", "davis,sav,coco,overlay", cache=cache) == 1, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("sam2-jax track: error: "), (name, err)
        assert phrase in err, (name, err)
        assert not files(out), (name, files(out))


def test_frame_that_fails_to_decode_mid_run_leaves_nothing(demo, clip_video, tmp_path, capsys, cache):
    clip, root = clip_video
    shutil.copytree(root / "frames", tmp_path / "frames")
    data = (tmp_path / "frames" / "00005.png").read_bytes()
    (tmp_path / "frames" / "00005.png").write_bytes(data[:len(data) // 3])  # header intact, pixels cut
    out = tmp_path / "out"
    status = track(tmp_path / "frames", "--model", demo[0] / "checkpoint", *clicks(clip), "--out", out,
                   "--format", "davis,sav,coco,overlay", cache=cache)
    assert status == 1
    err = capsys.readouterr().err
    assert "frame 5" in err and err.strip().splitlines()[-1].startswith("sam2-jax track: error: ")
    assert not files(out)


# ---------------------------------------------------------------------------------------------
# the command itself
# ---------------------------------------------------------------------------------------------


def test_console_script(demo, tmp_path):
    model = demo[0] / "checkpoint"
    done = subprocess.run(["sam2-jax", "info", "--model", str(model)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "device: cpu" in done.stdout and "image size 128" in done.stdout
    done = subprocess.run(["sam2-jax", "track", str(tmp_path / "missing.mp4"), "--model", str(model),
                           "--point", "1,1", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "does not exist" in done.stderr
    assert not (tmp_path / "out").exists()


def test_help_documents_prompts_and_formats(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["track", "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    for phrase in ("--point X,Y[,LABEL]", "--prompts FILE.json", '"obj_id"', "davis", "sav", "coco", "overlay",
                   "--both-directions", "--fill-holes", "--non-overlap"):
        assert phrase in text


def test_usage_errors_exit_1(capsys):
    assert main(["track"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "required" in err
    assert main(["nonsense"]) == 1


def test_progress_line_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    bar = progress_bar(3)
    for _ in range(3):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "\rtracking: 3/3 frames" in err and "frames/s" in err
