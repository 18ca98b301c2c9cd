"""Video object segmentation scores: J&F by the DAVIS 2017 semi-supervised rules.

- J, region similarity: the IoU of predicted and true masks; 1 where both are empty.
- F, boundary F-measure: both masks' boundaries (`boundary_map`, the toolkit's `_seg2bmap`) are
  matched within a disk of radius r = ceil(bound_th * image diagonal) (bound_th < 1) or
  r = bound_th pixels (bound_th >= 1): a boundary pixel counts as matched where the other mask's
  boundary dilated by the disk {x^2 + y^2 <= r^2} covers it. Precision and recall are the
  matched fractions of the predicted and true boundary pixels (1 where that boundary is
  empty), and F = 2PR / (P + R), 0 where P + R = 0.
- Scoring a sequence leaves out its first and last annotated frames (the first is the prompt).
  Each object's J and F are means over the remaining frames; a sequence's J and F are the means
  over its objects; the global J and F are the means over all objects of all sequences, not over
  sequences (davis2017-evaluation and sav_evaluator both do so); J&F = (J + F) / 2.

`evaluate_folder` scores a folder of predictions against a folder of ground truth in the DAVIS
or SA-V layout (see `datasets.DavisDataset`, `datasets.SavDataset`), by these rules in both layouts.
- The objects are the ground truth's: every id in a DAVIS sequence's masks (the toolkit takes
  1..the largest id of the first frame: the same on DAVIS 2017), every object folder in SA-V.
  Each is scored on every scored frame. sav_evaluator differs only for an object absent from
  the first scored frames: it counts that object's frames from its first appearance in the
  ground truth or the prediction, where the empty-vs-empty frames before it score 1 here.
- Like both official evaluators, a sequence or annotated frame without a prediction file is an
  error, not an empty mask. An object missing from a prediction frame is an empty mask.
- Predicted objects that the ground truth lacks are an error in the DAVIS layout (the DAVIS
  toolkit aborts on them) and ignored in the SA-V layout (sav_evaluator reads only the ground
  truth's object folders).
- Void pixels (255 in DAVIS masks) count as background, as the DAVIS semi-supervised
  evaluation does.
The `sam2-jax eval` command is `sam2_jax.commands.eval`.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .datasets import DavisDataset, SavDataset


def _check_pair(pred, gt) -> None:
    for name, value in (("pred", pred), ("gt", gt)):
        if not isinstance(value, np.ndarray) or value.dtype != bool:
            got = f"array of dtype {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
            raise TypeError(f"{name}: expected a bool numpy array (..., H, W), got {got}")
        if value.ndim < 2 or 0 in value.shape[-2:]:
            raise ValueError(f"{name}: expected masks of shape (..., H, W) with H, W >= 1, got {value.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred: expected the shape of gt {gt.shape}, got {pred.shape}")


def _scalar_or_array(values: np.ndarray):
    return float(values) if values.ndim == 0 else values


def region_similarity(pred: np.ndarray, gt: np.ndarray):
    """J: IoU of bool masks (..., H, W) -> float, or (...) float64; 1 where both are empty."""
    _check_pair(pred, gt)
    intersection = (pred & gt).sum(axis=(-2, -1))
    union = (pred | gt).sum(axis=(-2, -1))
    return _scalar_or_array(np.where(union == 0, 1.0, intersection / np.maximum(union, 1)))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """(..., H, W) bool: the DAVIS boundary of bool masks (..., H, W).

    A pixel is on the boundary where it differs from its right, lower or lower-right neighbour
    (pixels past the edge count as background), so the boundary lies half a pixel towards the
    origin. On the last row only the right neighbour is compared, on the last column only the
    lower one, and the bottom-right pixel is never on it.
    """
    right, down, diagonal = (np.zeros_like(mask) for _ in range(3))
    right[..., :, :-1] = mask[..., :, 1:]
    down[..., :-1, :] = mask[..., 1:, :]
    diagonal[..., :-1, :-1] = mask[..., 1:, 1:]
    boundary = (mask ^ right) | (mask ^ down) | (mask ^ diagonal)
    boundary[..., -1, :] = mask[..., -1, :] ^ right[..., -1, :]
    boundary[..., :, -1] = mask[..., :, -1] ^ down[..., :, -1]
    boundary[..., -1, -1] = False
    return boundary


def bound_radius(bound_th: float, height: int, width: int) -> int:
    """The match radius in pixels: ceil(bound_th * diagonal) for bound_th < 1, else bound_th."""
    if isinstance(bound_th, bool) or not isinstance(bound_th, numbers.Real) or not (
            0 < bound_th < 1 or (bound_th >= 1 and float(bound_th).is_integer())):
        raise ValueError(f"bound_th: expected a fraction of the diagonal in (0, 1) or a whole number "
                         f"of pixels >= 1, got {bound_th!r}")
    return int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(height, width))


def _matched(points: np.ndarray, other: np.ndarray, radius: int) -> int:
    """How many True pixels of `points` (H, W) lie within the disk of radius `radius` of a True
    pixel of `other` (H, W), i.e. are covered by `other` dilated by the disk. The exact
    Euclidean distance to `other` gives the same count as the dilation, faster on large frames,
    computed on the box around both."""
    if not points.any() or not other.any():
        return 0
    both = points | other
    rows, cols = np.flatnonzero(both.any(axis=1)), np.flatnonzero(both.any(axis=0))
    box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    distance = ndimage.distance_transform_edt(~other[box])
    return int((distance[points[box]] <= radius).sum())


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008):
    """F: boundary F-measure of bool masks (..., H, W) -> float, or (...) float64."""
    _check_pair(pred, gt)
    radius = bound_radius(bound_th, *gt.shape[-2:])
    pred_boundary, gt_boundary = boundary_map(pred), boundary_map(gt)
    n_pred, n_gt = pred_boundary.sum(axis=(-2, -1)), gt_boundary.sum(axis=(-2, -1))
    shape = gt.shape[:-2]
    pred_matched, gt_matched = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    for i in np.ndindex(shape):
        pred_matched[i] = _matched(pred_boundary[i], gt_boundary[i], radius)
        gt_matched[i] = _matched(gt_boundary[i], pred_boundary[i], radius)
    precision = np.where(n_pred == 0, 1.0, pred_matched / np.maximum(n_pred, 1))
    recall = np.where(n_gt == 0, 1.0, gt_matched / np.maximum(n_gt, 1))
    total = precision + recall
    f = np.where(total == 0, 0.0, 2 * precision * recall / np.where(total == 0, 1.0, total))
    return _scalar_or_array(f)


@dataclass(frozen=True)
class SequenceResult:
    """The scores of one sequence. T' scored frames, N objects.

    j, f: (T', N) per frame and object; frames: the T' scored frame indices.
    """

    name: str
    obj_ids: tuple[int, ...]
    frames: tuple[int, ...]
    j: np.ndarray
    f: np.ndarray

    @property
    def j_objects(self) -> np.ndarray:
        """(N,) each object's mean J over the scored frames."""
        return self.j.mean(axis=0)

    @property
    def f_objects(self) -> np.ndarray:
        """(N,) each object's mean F over the scored frames."""
        return self.f.mean(axis=0)

    def to_dict(self) -> dict:
        """{"name", "num_frames", "J", "F", "J&F" (means over objects), "objects": [{"obj_id", "J",
        "F", "J&F"}]}, plain Python values."""
        j, f = float(self.j_objects.mean()), float(self.f_objects.mean())
        objects = [{"obj_id": i, "J": float(oj), "F": float(of), "J&F": float(oj + of) / 2}
                   for i, oj, of in zip(self.obj_ids, self.j_objects, self.f_objects)]
        return {"name": self.name, "num_frames": len(self.frames), "J": j, "F": f, "J&F": (j + f) / 2,
                "objects": objects}


@dataclass(frozen=True)
class EvalResult:
    """The scores of a folder of sequences; the global means are over all their objects."""

    sequences: tuple[SequenceResult, ...]

    def to_dict(self) -> dict:
        """{"J", "F", "J&F", "num_objects", "sequences": [SequenceResult.to_dict()...]}."""
        j = float(np.concatenate([s.j_objects for s in self.sequences]).mean())
        f = float(np.concatenate([s.f_objects for s in self.sequences]).mean())
        return {"J": j, "F": f, "J&F": (j + f) / 2,
                "num_objects": sum(len(s.obj_ids) for s in self.sequences),
                "sequences": [s.to_dict() for s in self.sequences]}


def evaluate_sequence(pred_masks: np.ndarray, gt_masks: np.ndarray) -> dict:
    """Score bool masks (T, N, H, W), objects 1..N aligned, T >= 3: the first and last frames are
    left out. Returns SequenceResult.to_dict() (J, F, J&F and per-object scores)."""
    _check_pair(pred_masks, gt_masks)
    if gt_masks.ndim != 4 or gt_masks.shape[0] < 3 or gt_masks.shape[1] == 0:
        raise ValueError(f"gt_masks: expected (T, N, H, W) with T >= 3 (the first and last frames are "
                         f"not scored) and N >= 1, got {gt_masks.shape}")
    pred, gt = pred_masks[1:-1], gt_masks[1:-1]
    num_frames, num_objects = gt_masks.shape[:2]
    return SequenceResult("", tuple(range(1, num_objects + 1)), tuple(range(1, num_frames - 1)),
                          region_similarity(pred, gt), boundary_f_measure(pred, gt)).to_dict()


def _score_sequence(pred, gt, format: str) -> SequenceResult:
    """Score the VideoSequence `pred` against `gt` (annotated frames but the first and last)."""
    if not gt.obj_ids:
        raise ValueError(f"gt_root: sequence {gt.name!r} has no objects in its masks")
    annotated = list(gt.masks)
    if len(annotated) < 3:
        raise ValueError(f"gt_root: sequence {gt.name!r} has {len(annotated)} annotated frames; scoring "
                         "needs 3 or more (the first and last are not scored)")
    frames = annotated[1:-1]
    extra = [k for k in pred.obj_ids if k not in gt.obj_ids]
    j, f = [], []
    for frame in frames:
        if frame not in pred.masks:
            raise ValueError(f"pred_root: sequence {gt.name!r} has no prediction for annotated frame "
                             f"{frame} (the official evaluators stop here too)")
        truth, predicted = gt.masks[frame], pred.masks[frame]
        if predicted.shape[1:] != truth.shape[1:]:
            raise ValueError(f"pred_root: the masks of {gt.name!r} frame {frame} are "
                             f"{predicted.shape[1]}x{predicted.shape[2]}, the ground truth's "
                             f"{truth.shape[1]}x{truth.shape[2]}")
        if format == "davis":
            shown = [k for k in extra if predicted[pred.obj_ids.index(k)].any()]
            if shown:
                raise ValueError(f"pred_root: sequence {gt.name!r} frame {frame} holds object ids {shown} "
                                 f"that the ground truth lacks (it has {list(gt.obj_ids)})")
        aligned = np.zeros_like(truth)
        for n, k in enumerate(gt.obj_ids):
            if k in pred.obj_ids:
                aligned[n] = predicted[pred.obj_ids.index(k)]
        j.append(region_similarity(aligned, truth))
        f.append(boundary_f_measure(aligned, truth))
    return SequenceResult(gt.name, gt.obj_ids, tuple(frames), np.stack(j), np.stack(f))


def evaluate_folder(pred_root: str | os.PathLike, gt_root: str | os.PathLike,
                    format: str = "davis", split: str | None = None) -> EvalResult:
    """Score every sequence of `gt_root` against its predictions in `pred_root`.

    format: "davis" (gt_root a DAVIS root or its annotation folder; predictions
      `pred_root/<seq>/<frame>.png` with object ids as pixel values) or "sav" (per-object
      folders `<video>/<obj_id:03d>/<frame>.png`, as video.SavWriter writes).
    split: score only the DAVIS sequences listed in gt_root's `ImageSets/2017/<split>.txt` (as the
      DAVIS toolkit does); None scores every sequence of gt_root.
    Sequences in pred_root that the ground truth lacks are ignored.
    """
    readers = {"davis": DavisDataset, "sav": SavDataset}
    if format not in readers:
        raise ValueError(f"format: expected one of {sorted(readers)}, got {format!r}")
    for name, path in (("pred_root", pred_root), ("gt_root", gt_root)):
        if not Path(path).is_dir():
            raise ValueError(f"{name}: expected a folder, got {str(path)!r}, which "
                             + ("is not a folder" if Path(path).exists() else "does not exist"))
    if split is not None and format != "davis":
        raise ValueError(f"split: DAVIS ImageSets lists apply to format 'davis', got format {format!r}")
    gt = DavisDataset(gt_root, split) if split is not None else readers[format](gt_root)
    pred = readers[format](pred_root)
    results = []
    for sequence in gt:
        if sequence.name not in pred.names:
            raise ValueError(f"pred_root: no predictions for sequence {sequence.name!r} (expected the "
                             f"folder {str(pred.annotations / sequence.name)!r})")
        results.append(_score_sequence(pred[sequence.name], sequence, format))
    return EvalResult(tuple(results))


def format_table(result: EvalResult) -> str:
    """A text table: one row per object, a mean row per sequence of several objects, and the
    global means over all objects."""
    summary = result.to_dict()
    width = max([len("sequence"), len("global")] + [len(s["name"]) for s in summary["sequences"]])
    lines = [f"{'sequence':<{width}}  {'object':>6}  {'J&F':>6}  {'J':>6}  {'F':>6}"]
    rule = "-" * len(lines[0])
    lines.append(rule)

    def row(name, label, scores):
        return f"{name:<{width}}  {label:>6}  {scores['J&F']:6.3f}  {scores['J']:6.3f}  {scores['F']:6.3f}"

    for sequence in summary["sequences"]:
        for obj in sequence["objects"]:
            lines.append(row(sequence["name"], str(obj["obj_id"]), obj))
        if len(sequence["objects"]) > 1:
            lines.append(row(sequence["name"], "mean", sequence))
    lines.append(rule)
    lines.append(row("global", "mean", summary))
    lines.append(f"{summary['num_objects']} objects in {len(summary['sequences'])} sequences; first and "
                 "last annotated frames not scored; global scores are means over objects")
    return "\n".join(lines)
