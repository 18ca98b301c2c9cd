"""End to end: `sam2-jax segment` on a generated 96x128 image with the packaged model (128 px): --auto writes
the masks of `Sam2AutomaticMaskGenerator`, --point / --box the mask of `Sam2Model` + `Sam2Processor` called
directly, every format read back; every bad input a one-line error with exit status 1 and nothing written."""

from __future__ import annotations

import contextlib
import inspect
import io
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from sam2_jax import Sam2AutomaticMaskGenerator, Sam2Model, Sam2Processor
from sam2_jax.commands.demo import interior_point
from sam2_jax.commands.main import build_parser, main
from sam2_jax.commands.options import GENERATOR_DEFAULTS, generator_options
from sam2_jax.commands import segment
from sam2_jax.io.image_writers import CSV_HEADER, CocoRecordsWriter
from sam2_jax.io.clips import generate_clip

MODEL = "sam2-jax-shapes"
# Low thresholds, so that the packaged model keeps several masks of the small grid.
AUTO = dict(points_per_side=8, pred_iou_thresh=0.5, stability_score_thresh=0.5)
CLIP = generate_clip(3, 1, 96, 128, max_objects=3, min_objects=3)
CENTRES = [list(interior_point(mask)) for mask in CLIP.masks[0]]  # a click inside each shape
ys, xs = np.nonzero(CLIP.masks[0, 2])
BOX = [int(xs.min()) - 2, int(ys.min()) - 2, int(xs.max()) + 2, int(ys.max()) + 2]  # around shape 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools


def flags(options: dict) -> list[str]:
    return [arg for name, value in options.items() for arg in (f"--{name.replace('_', '-')}", str(value))]


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """One compilation cache for the module, every program kept: each run loads a model, whose programs are new
    jitted functions. JAX's settings are put back afterwards."""
    before = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> tuple[np.ndarray, Path]:
    """Frame 0 of a generated clip (96x128, three shapes), as an array and as img.png."""
    frame = CLIP.frames[0]
    path = tmp_path_factory.mktemp("image") / "img.png"
    Image.fromarray(frame).save(path)
    return frame, path


@pytest.fixture(scope="module")
def model():
    return Sam2Model.from_pretrained(MODEL), Sam2Processor.from_pretrained(MODEL)


@pytest.fixture(scope="module")
def auto_run(image, tmp_path_factory):
    """`segment --auto` in every format: its output folder and what it printed."""
    out = tmp_path_factory.mktemp("auto")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["segment", str(image[1]), "--model", MODEL, "--auto", *flags(AUTO),
                           "--format", "png,coco,overlay", "--out", str(out)])
    assert status == 0
    return out, stdout.getvalue()


def read_records(out: Path, name: str = "img") -> tuple[list[dict], list[np.ndarray], list[list[str]]]:
    """The coco records (RLE decoded), the PNG masks and the metadata.csv rows of one segment run."""
    records = json.loads((out / "coco" / f"{name}.json").read_text())
    for record in records:
        record["segmentation"] = coco_mask.decode(record["segmentation"]).astype(bool)
    folder = out / "png" / name
    rows = [line.split(",") for line in (folder / "metadata.csv").read_text().splitlines()]
    assert ",".join(rows[0]) == CSV_HEADER
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{i}.png" for i in range(len(records))]
                                                              + ["metadata.csv"])
    pngs = []
    for i in range(len(records)):
        png = np.asarray(Image.open(folder / f"{i}.png"))
        assert set(np.unique(png)) <= {0, 255}
        pngs.append(png == 255)
    return records, pngs, rows[1:]


def check_row(row: list[str], record: dict) -> None:
    """A metadata.csv row holds the record's numbers (point_input: its first point, empty if none)."""
    point = record["point_coords"][0] if record["point_coords"] else None
    expected = [record["area"], *record["bbox"], *(point or [None, None]), record["predicted_iou"],
                record["stability_score"], *record["crop_box"]]
    assert len(row) == 1 + len(expected)
    for text, value in zip(row[1:], expected):
        assert text == "" if value is None else float(text) == pytest.approx(value, rel=1e-6)


def test_flag_defaults_are_the_generators():
    defaults = {name: p.default for name, p in inspect.signature(Sam2AutomaticMaskGenerator).parameters.items()}
    assert GENERATOR_DEFAULTS == {name: defaults[name] for name in GENERATOR_DEFAULTS}
    for command in (["segment", "x.png", "--auto"], ["track", "x.mp4", "--auto"]):
        args = build_parser().parse_args([*command, "--model", MODEL])
        assert generator_options(args) == GENERATOR_DEFAULTS


def test_auto_writes_the_generators_masks(image, model, auto_run):
    out, printed = auto_run
    expected = Sam2AutomaticMaskGenerator(model[0], **AUTO).generate(image[0])
    assert len(expected) > 3
    records, pngs, rows = read_records(out)
    assert len(records) == len(pngs) == len(rows) == len(expected)
    for record, png, row, want in zip(records, pngs, rows, expected):
        np.testing.assert_array_equal(record["segmentation"], want["segmentation"])
        np.testing.assert_array_equal(png, want["segmentation"])
        assert {k: v for k, v in record.items() if k != "segmentation"} == \
            {k: v for k, v in want.items() if k != "segmentation"}
        check_row(row, want)
    assert f"segmented {len(expected)} mask(s) in " in printed
    for path in (out / "png" / "img", out / "coco" / "img.json", out / "overlay" / "img.png"):
        assert str(path) in printed


def test_overlay_shows_the_masks(image, auto_run):
    frame, _ = image
    overlay = np.asarray(Image.open(auto_run[0] / "overlay" / "img.png"))
    assert overlay.shape == frame.shape and overlay.dtype == np.uint8
    masks, _, _ = read_records(auto_run[0])
    covered = np.any([r["segmentation"] for r in masks], axis=0)
    changed = np.any(overlay != frame, axis=-1)
    assert changed[covered].mean() > 0.9


@pytest.mark.parametrize("prompt", [
    {"points": [CENTRES[0]], "labels": [1]},  # one click: the best of three masks
    {"points": [CENTRES[0], CENTRES[1]], "labels": [1, 0]},
    {"box": BOX},
    {"points": [CENTRES[2]], "labels": [1], "box": BOX},
], ids=["one click", "two clicks", "box", "box and click"])
def test_point_and_box_write_the_librarys_mask(image, model, prompt, tmp_path, capsys):
    frame, path = image
    sam, processor = model
    argv = [arg for (x, y), label in zip(prompt.get("points", []), prompt.get("labels", []))
            for arg in ("--point", f"{x},{y},{label}")]
    argv += ["--box", ",".join(map(str, prompt["box"]))] if "box" in prompt else []
    assert main(["segment", str(path), "--model", MODEL, *argv, "--format", "png,coco,overlay",
                     "--out", str(tmp_path)]) == 0
    assert "segmented 1 mask(s) in " in capsys.readouterr().out

    multimask = "box" not in prompt and len(prompt["points"]) == 1
    inputs = processor(images=frame, input_points=[[prompt["points"]]] if "points" in prompt else None,
                       input_labels=[[prompt["labels"]]] if "points" in prompt else None,
                       input_boxes=[[prompt["box"]]] if "box" in prompt else None)
    outputs = sam(**inputs, multimask_output=multimask)
    masks = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])[0][0]
    best = int(np.argmax(outputs.iou_scores[0, 0]))
    assert len(masks) == (3 if multimask else 1)

    records, pngs, rows = read_records(tmp_path)
    assert len(records) == 1
    record = records[0]
    np.testing.assert_array_equal(record["segmentation"], masks[best])
    np.testing.assert_array_equal(pngs[0], masks[best])
    assert record["area"] == int(masks[best].sum()) > 0
    assert record["predicted_iou"] == float(outputs.iou_scores[0, 0, best])
    assert record["point_coords"] == [[float(x), float(y)] for x, y in prompt.get("points", [])]
    assert record["crop_box"] == [0, 0, 128, 96]
    ys, xs = np.nonzero(masks[best])
    assert record["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]  # amg's boxes
    assert 0 <= record["stability_score"] <= 1
    check_row(rows[0], record)
    overlay = np.asarray(Image.open(tmp_path / "overlay" / "img.png"))
    assert overlay.shape == frame.shape and np.any(overlay != frame, axis=-1)[masks[best]].all()


def test_bad_input_is_one_line_and_leaves_nothing(image, tmp_path, capsys):
    _, path = image
    (tmp_path / "text.png").write_text("not an image")
    auto = [str(path), "--auto"]
    cases = {
        "missing image": ([str(tmp_path / "missing.png"), "--auto"], "IMAGE: "),
        "not an image": ([str(tmp_path / "text.png"), "--auto"], "IMAGE: "),
        "a folder": ([str(tmp_path), "--auto"], "IMAGE: "),
        "auto and point": ([*auto, "--point", "5,5"], "--auto, --point, --box: "),
        "auto and box": ([*auto, "--box", "5,5,9,9"], "--auto, --point, --box: "),
        "neither": ([str(path)], "--auto, --point, --box: "),
        "point outside": ([str(path), "--point", "129,5"], "--point 129,5: "),
        "box outside": ([str(path), "--box", "5,5,9,97"], "--box 5,5,9,97: "),
        "two boxes": ([str(path), "--box", "5,5,9,9", "--box", "1,1,2,2"], "--box: "),
        "malformed point": ([str(path), "--point", "5"], "argument --point: "),
        "pred-iou-thresh": ([*auto, "--pred-iou-thresh", "1.5"], "argument --pred-iou-thresh: "),
        "stability-score-thresh": ([*auto, "--stability-score-thresh", "-0.1"],
                                   "argument --stability-score-thresh: "),
        "box-nms-thresh": ([*auto, "--box-nms-thresh", "nan"], "argument --box-nms-thresh: "),
        "points-per-side": ([*auto, "--points-per-side", "0"], "argument --points-per-side: "),
        "crop-n-layers": ([*auto, "--crop-n-layers", "-1"], "argument --crop-n-layers: "),
        "min-mask-region-area": ([*auto, "--min-mask-region-area", "-3"], "argument --min-mask-region-area: "),
        "unknown format": ([*auto, "--format", "png,davis"], "--format: unknown format 'davis'"),
        "unknown model": ([*auto, "--model", str(tmp_path / "no_model")], "--model: "),
    }
    out = tmp_path / "out"
    for name, (args, phrase) in cases.items():
        argv = ["segment", *args, "--out", str(out), "--format", "png,coco,overlay"]
        argv += [] if "--model" in args else ["--model", MODEL]
        assert main(argv) == 1, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("sam2-jax segment: error: "), (name, err)
        assert phrase in err, (name, err)
        assert not out.exists(), name


def test_existing_output_is_refused_without_overwrite(image, auto_run, capsys):
    out, _ = auto_run
    before = {p: p.stat().st_mtime_ns for p in files(out)}
    argv = ["segment", str(image[1]), "--model", MODEL, "--auto", *flags(AUTO), "--out", str(out)]
    for formats in ("coco", "png", "overlay"):
        assert main([*argv, "--format", formats]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "already exists" in err, err
    assert {p: p.stat().st_mtime_ns for p in files(out)} == before
    assert main([*argv, "--format", "coco", "--overwrite"]) == 0
    assert (out / "coco" / "img.json").stat().st_mtime_ns != before[out / "coco" / "img.json"]
    assert set(files(out)) == set(before)  # replaced, nothing left beside it


def test_a_nan_score_is_null_in_the_coco_json(tmp_path):
    """The stability of a prompted mask with no pixel above -offset is NaN, as the generator's; the COCO file
    stays strict JSON (null), which any parser reads."""
    empty = np.zeros((4, 6), bool)
    assert np.isnan(segment.stability_score(np.full((4, 6), -5.0, np.float32)))
    record = {"segmentation": empty, "area": 0, "bbox": [0.0, 0.0, 0.0, 0.0], "predicted_iou": 0.25,
              "point_coords": [[1.0, 2.0]], "stability_score": float("nan"), "crop_box": [0.0, 0.0, 6.0, 4.0]}
    path = tmp_path / "img.json"
    with CocoRecordsWriter(path) as writer:
        writer.save(np.zeros((4, 6, 3), np.uint8), [record])

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    (entry,) = json.loads(path.read_text(), parse_constant=refuse)
    assert entry["stability_score"] is None and entry["predicted_iou"] == 0.25
    assert coco_mask.decode(entry["segmentation"]).sum() == 0
