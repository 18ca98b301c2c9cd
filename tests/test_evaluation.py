"""J&F of sam2_jax/evaluation.py: hand-computed cases, properties, folders and the eval command."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from sam2_jax.io.clips import generate_clip, write_clip_davis
from sam2_jax.io.evaluation import EvalResult, boundary_f_measure, boundary_map, bound_radius, evaluate_folder, evaluate_sequence, format_table, region_similarity
from sam2_jax.commands.main import main as sam2_jax_main
from sam2_jax.io.writers import DavisWriter, SavWriter


def square(shift=0, size=20):
    """A 10x10 square at rows 5..14, columns 5+shift..14+shift of a size x size frame."""
    mask = np.zeros((size, size), bool)
    mask[5:15, 5 + shift:15 + shift] = True
    return mask


def test_boundary_map_by_hand():
    # Each pixel that differs from its right, lower or lower-right neighbour: the ring of the
    # square grown by one pixel up and left (half a pixel towards the origin).
    mask = np.zeros((6, 6), bool)
    mask[2:5, 2:5] = True
    expected = np.array([[0, 0, 0, 0, 0, 0],
                         [0, 1, 1, 1, 1, 0],
                         [0, 1, 0, 0, 1, 0],
                         [0, 1, 0, 0, 1, 0],
                         [0, 1, 1, 1, 1, 0],
                         [0, 0, 0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(boundary_map(mask), expected)
    # The frame's own edge is no boundary: a full mask has none, a mask on the right edge only
    # its left side and its bottom row.
    assert not boundary_map(np.ones((5, 7), bool)).any()
    edge = np.zeros((4, 5), bool)
    edge[1:3, 3:] = True
    np.testing.assert_array_equal(boundary_map(edge), [[0, 0, 1, 1, 1],
                                                       [0, 0, 1, 0, 0],
                                                       [0, 0, 1, 1, 1],
                                                       [0, 0, 0, 0, 0]])
    stacked = boundary_map(np.stack([mask, ~mask]))
    np.testing.assert_array_equal(stacked[0], expected)


def test_bound_radius():
    assert bound_radius(0.008, 20, 20) == 1  # ceil(0.008 * 28.3) = ceil(0.23)
    assert bound_radius(0.008, 128, 128) == 2  # ceil(1.45)
    assert bound_radius(0.008, 480, 854) == 8  # ceil(7.84): DAVIS 480p
    assert bound_radius(3, 10, 10) == 3  # >= 1: pixels
    for bad in (0, -0.1, 1.5, True, "0.008"):
        with pytest.raises(ValueError, match="bound_th"):
            bound_radius(bad, 10, 10)


def test_square_shifted_by_one_pixel():
    # J: the squares share 10x9 of their 10x10 pixels, union 10x11: 90 / 110.
    # F: each boundary is the other shifted by 1 px, within the 1 px tolerance of a 20x20 frame.
    gt, pred = square(), square(shift=1)
    assert region_similarity(pred, gt) == pytest.approx(90 / 110)
    assert boundary_f_measure(pred, gt) == 1.0


def test_square_shifted_by_two_pixels():
    # J: 10x8 shared, union 10x12: 80 / 120.
    # F, tolerance 1 px (the disk is a plus sign): each boundary is an 11x11 ring of 40 pixels
    # (rows 4..14; columns 4..14 for gt, 6..16 for pred). A pred ring pixel is matched where it
    # lies on gt's ring or one step from it: its top and bottom rows from column 6 to 15 (2 x 10),
    # plus the left column's pixels next to those rows (rows 5 and 13): 22 of 40. By symmetry
    # recall is 22 / 40 as well, so F = 0.55.
    gt, pred = square(), square(shift=2)
    assert region_similarity(pred, gt) == pytest.approx(80 / 120)
    assert boundary_f_measure(pred, gt) == pytest.approx(0.55)
    assert boundary_f_measure(pred, gt, bound_th=2) == 1.0  # a 2 px tolerance matches them all


def test_empty_masks():
    empty, gt = np.zeros((20, 20), bool), square()
    assert region_similarity(empty, empty) == 1.0 and boundary_f_measure(empty, empty) == 1.0
    assert region_similarity(empty, gt) == 0.0 and boundary_f_measure(empty, gt) == 0.0
    assert region_similarity(gt, empty) == 0.0 and boundary_f_measure(gt, empty) == 0.0


def test_batched_scores_are_per_mask():
    pred, gt = np.stack([square(1), square(2), square()]), np.stack([square()] * 3)
    np.testing.assert_allclose(region_similarity(pred, gt), [90 / 110, 80 / 120, 1.0])
    np.testing.assert_allclose(boundary_f_measure(pred, gt), [1.0, 0.55, 1.0])
    assert boundary_f_measure(pred[None], gt[None]).shape == (1, 3)


@pytest.mark.parametrize("pred, gt, error, match", [
    (np.zeros((4, 4)), np.zeros((4, 4), bool), TypeError, "pred: expected a bool numpy array"),
    (np.zeros((4, 4), bool), [[True]], TypeError, "gt: expected a bool numpy array"),
    (np.zeros((4, 4), bool), np.zeros((4, 5), bool), ValueError, "pred: expected the shape of gt"),
    (np.zeros(4, bool), np.zeros(4, bool), ValueError, r"pred: expected masks of shape \(..., H, W\)"),
])
def test_bad_masks(pred, gt, error, match):
    for score in (region_similarity, boundary_f_measure):
        with pytest.raises(error, match=match):
            score(pred, gt)


masks = arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12)))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_region_similarity_properties(data):
    a = data.draw(masks)
    b = data.draw(arrays(bool, a.shape))
    j = region_similarity(a, b)
    assert 0.0 <= j <= 1.0 and j == region_similarity(b, a)
    assert (j == 1.0) == np.array_equal(a, b)
    assert region_similarity(a, a) == 1.0


def reference_f(pred, gt, radius):
    """The boundary F-measure written as the toolkit describes it: literal disk dilations."""
    grid = np.arange(-radius, radius + 1)
    disk = grid[:, None] ** 2 + grid[None, :] ** 2 <= radius ** 2
    pb, gb = boundary_map(pred), boundary_map(gt)
    pd, gd = ndimage.binary_dilation(pb, disk), ndimage.binary_dilation(gb, disk)
    precision = 1.0 if pb.sum() == 0 else (pb & gd).sum() / pb.sum()
    recall = 1.0 if gb.sum() == 0 else (gb & pd).sum() / gb.sum()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(1, 4))
def test_boundary_f_properties(data, radius):
    a = data.draw(masks)
    b = data.draw(arrays(bool, a.shape))
    f = boundary_f_measure(a, b, bound_th=radius)
    assert 0.0 <= f <= 1.0 and f == pytest.approx(boundary_f_measure(b, a, bound_th=radius))
    assert f == pytest.approx(reference_f(a, b, radius))
    assert boundary_f_measure(a, a) == 1.0 and boundary_f_measure(b, b, bound_th=radius) == 1.0


def sequence_masks(num_frames=5):
    """(T, 2, 20, 20): two squares that move right by a pixel per frame."""
    gt = np.zeros((num_frames, 2, 20, 20), bool)
    for t in range(num_frames):
        gt[t, 0, 2:8, 2 + t:8 + t] = True
        gt[t, 1, 10:18, 8 + t:16 + t] = True
    return gt


def test_perfect_prediction_scores_one():
    gt = sequence_masks()
    scores = evaluate_sequence(gt.copy(), gt)
    assert scores["J"] == scores["F"] == scores["J&F"] == 1.0
    assert scores["num_frames"] == 3 and [o["obj_id"] for o in scores["objects"]] == [1, 2]


def test_first_and_last_frames_are_not_scored():
    gt = sequence_masks()
    pred = gt.copy()
    pred[0] = pred[-1] = False
    assert evaluate_sequence(pred, gt)["J&F"] == 1.0
    pred[2, 1] = False  # object 2 lost on one of the three scored frames: J and F 0 there
    scores = evaluate_sequence(pred, gt)
    assert [o["J"] for o in scores["objects"]] == pytest.approx([1.0, 2 / 3])
    assert [o["F"] for o in scores["objects"]] == pytest.approx([1.0, 2 / 3])
    assert scores["J"] == pytest.approx((1 + 2 / 3) / 2)  # sequence: the mean over objects


def test_evaluate_sequence_checks_its_input():
    gt = sequence_masks(num_frames=2)
    with pytest.raises(ValueError, match="gt_masks: expected .* T >= 3"):
        evaluate_sequence(gt, gt)
    with pytest.raises(ValueError, match="gt_masks: expected"):
        evaluate_sequence(gt[0], gt[0])


def write_davis(root, name, masks):
    """Write bool masks (T, N, H, W) of objects 1..N as DAVIS PNGs in root/name."""
    with DavisWriter(root / name) as writer:
        for t, frame in enumerate(masks):
            writer.write(t, frame, list(range(1, len(frame) + 1)))


def test_global_means_are_over_objects_not_sequences(tmp_path):
    gt = sequence_masks()
    write_davis(tmp_path / "gt", "one", gt[:, :1])
    write_davis(tmp_path / "pred", "one", gt[:, :1])  # 1 object, perfect
    lost = gt.copy()
    lost[:, 1] = False
    write_davis(tmp_path / "gt", "two", gt)
    write_davis(tmp_path / "pred", "two", lost)  # 2 objects, one never found (J = F = 0)
    result = evaluate_folder(tmp_path / "pred", tmp_path / "gt")
    assert isinstance(result, EvalResult)
    summary = result.to_dict()
    assert [s["name"] for s in summary["sequences"]] == ["one", "two"]
    assert [s["J&F"] for s in summary["sequences"]] == [1.0, 0.5]
    assert summary["num_objects"] == 3
    assert summary["J"] == summary["F"] == summary["J&F"] == pytest.approx(2 / 3)  # not 0.75

    table = format_table(result)
    assert "global" in table and "0.667" in table and "two" in table
    assert len(table.splitlines()) == 2 + 1 + 3 + 2 + 1  # header, rule; 3 objects, 1 mean; rule, global; note


def test_generated_clips_scored_against_themselves_and_a_copy_of_frame_zero(tmp_path):
    gt = tmp_path / "DAVIS"
    clips = {f"clip_{s}": generate_clip(s, num_frames=6) for s in (1, 2)}
    for name, clip in clips.items():
        write_clip_davis(clip, gt, name, split="val")
        write_davis(tmp_path / "perfect", name, clip.masks)
        write_davis(tmp_path / "copy", name, np.repeat(clip.masks[:1], 6, axis=0))
    assert evaluate_folder(tmp_path / "perfect", gt, split="val").to_dict()["J&F"] == 1.0
    copied = evaluate_folder(tmp_path / "copy", gt).to_dict()
    expected = []
    for name, clip in clips.items():
        per_object = evaluate_sequence(np.repeat(clip.masks[:1], 6, axis=0), clip.masks)["objects"]
        expected += [o["J&F"] for o in per_object]
        assert [s for s in copied["sequences"] if s["name"] == name][0]["objects"] == per_object
    assert copied["J&F"] == pytest.approx(np.mean(expected)) and copied["J&F"] < 0.9


def test_missing_and_extra_predictions(tmp_path):
    gt = sequence_masks()
    write_davis(tmp_path / "gt", "seq", gt)
    write_davis(tmp_path / "pred", "seq", gt[:, :1])  # object 2 never predicted: empty masks
    assert [o["J"] for o in evaluate_folder(tmp_path / "pred", tmp_path / "gt").to_dict()
            ["sequences"][0]["objects"]] == [1.0, 0.0]
    (tmp_path / "pred" / "seq" / "00002.png").unlink()
    with pytest.raises(ValueError, match="pred_root: sequence 'seq' has no prediction for annotated frame 2"):
        evaluate_folder(tmp_path / "pred", tmp_path / "gt")
    (tmp_path / "pred" / "seq").rename(tmp_path / "pred" / "other")
    with pytest.raises(ValueError, match="pred_root: no predictions for sequence 'seq'"):
        evaluate_folder(tmp_path / "pred", tmp_path / "gt")
    three = np.concatenate([gt, np.zeros_like(gt[:, :1])], axis=1)
    three[3, 2, 0, 0] = True
    write_davis(tmp_path / "pred3", "seq", three)  # an object id the ground truth lacks, on frame 3
    with pytest.raises(ValueError, match=r"object ids \[3\] that the ground truth lacks"):
        evaluate_folder(tmp_path / "pred3", tmp_path / "gt")
    with pytest.raises(ValueError, match="format"):
        evaluate_folder(tmp_path / "pred3", tmp_path / "gt", format="coco")
    with pytest.raises(ValueError, match="gt_root: expected a folder, got .*does not exist"):
        evaluate_folder(tmp_path / "pred3", tmp_path / "nowhere")


def write_sav(root, name, masks, obj_ids):
    with SavWriter(root / name) as writer:
        for t, frame in enumerate(masks):
            writer.write(t, frame, obj_ids)


def test_sav_format_scores_overlapping_objects_and_ignores_extra_ones(tmp_path):
    gt = sequence_masks()
    gt[:, 1, 2:8, :] = True  # object 7 overlaps object 3
    write_sav(tmp_path / "gt", "vid", gt, [3, 7])
    pred = np.concatenate([gt, gt[:, :1]], axis=1)
    pred[2, 1] = False
    write_sav(tmp_path / "pred", "vid", pred, [3, 7, 9])  # object 9: not in the ground truth, ignored
    (objects,) = [s["objects"] for s in evaluate_folder(tmp_path / "pred", tmp_path / "gt", "sav").to_dict()
                  ["sequences"]]
    assert [o["obj_id"] for o in objects] == [3, 7]
    assert [o["J"] for o in objects] == pytest.approx([1.0, 2 / 3])


def test_main_prints_the_table_and_writes_json(tmp_path, capsys):
    gt = sequence_masks()
    write_sav(tmp_path / "gt", "vid", gt, [1, 2])
    write_sav(tmp_path / "pred", "vid", gt, [1, 2])
    out = tmp_path / "scores.json"
    assert sam2_jax_main(["eval", str(tmp_path / "pred"), str(tmp_path / "gt"), "--format", "sav", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "vid" in printed and "global" in printed and "1.000" in printed
    assert json.loads(out.read_text())["J&F"] == 1.0


def test_main_reports_a_missing_folder_in_one_line(tmp_path, capsys):
    assert sam2_jax_main(["eval", str(tmp_path / "missing"), str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("sam2-jax eval: error: pred_root: expected a folder")
    assert "does not exist" in captured.err
