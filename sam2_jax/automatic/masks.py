"""Automatic mask generation: every object of an image, from a grid of point prompts.

`Sam2AutomaticMaskGenerator` is the original sam2 `SAM2AutomaticMaskGenerator` (sam2/automatic_mask_generator.py,
sam2/utils/amg.py) on a `Sam2Model`: the same arguments, records and numbers. For each crop of the image (the whole
image, then `crop_n_layers` layers of overlapping crops):

1. the crop is preprocessed as the original predictor's `set_image` does it (uint8 to float in [0, 1], antialiased
   resize of the float image, ImageNet normalisation) and encoded once;
2. its grid points go through the decoder in batches of one shape (the last one padded), optionally refined once
   with their own masks as mask prompts (`use_m2m`); the mask logits are upscaled to the crop, then scored
   (stability), boxed and filtered (predicted IoU, stability, boxes at a crop edge), all jitted. Masks reach the
   host bit-packed, and only the kept ones;
3. a greedy box NMS (jitted, on a fixed capacity) drops duplicates, preferring higher predicted IoU.
Across crops the same NMS drops duplicates again, preferring masks from smaller crops. The programs are shared by
all generators: they compile once per model config and settings, crop size and NMS capacity, never per batch or
per image.

The original's `min_mask_region_area` fills holes and removes islands of at most that area in the low-resolution
logits (`SAM2Transforms.postprocess_masks`, through its CUDA extension); here `processing.remove_small_regions` does
it on the host.

NMS ties: boxes of equal score are taken in candidate order. That is torchvision's `nms` on CUDA (a stable sort) and
on the CPU for up to 16 boxes; with more, its CPU sort is unstable and orders ties arbitrarily.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from .. import processing
from ..transformers_api.image import Sam2Model
from ..models.layers import _source_coords
from ..models.sam2 import Sam2ImageModule
from ..io.writers import rle_counts, rle_encode

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
CROP_EDGE_TOLERANCE = 20.0  # pixels: a box this close to a crop edge (not an image edge) is cut by the crop
MASK_INPUT_CLAMP = 32.0  # the predictor clamps low-res logits to +-32 before they are fed back as mask prompts
_MEAN = np.asarray(processing.IMAGENET_MEAN, np.float32)
_STD = np.asarray(processing.IMAGENET_STD, np.float32)


# ---------------------------------------------------------------------------------- grids and crops (amg.py)

def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points (x, y) evenly spaced in [0, 1]^2, cell centres, row by row."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    return np.stack([np.tile(side[None, :], (n_per_side, 1)), np.tile(side[:, None], (1, n_per_side))],
                    axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer, with int(n_per_side / scale_per_layer**layer) points a side."""
    return [build_point_grid(int(n_per_side / scale_per_layer**i)) for i in range(n_layers + 1)]


def generate_crop_boxes(image_size: tuple[int, int], n_layers: int,
                        overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """Crop boxes [x0, y0, x1, y1] and their layers: the whole image, then (2**i)**2 overlapping crops in layer i."""
    height, width = image_size
    short_side = min(height, width)
    boxes, layers = [[0, 0, width, height]], [0]

    def crop_len(orig_len, n_crops, overlap):
        return int(math.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for layer in range(n_layers):
        n_crops_per_side = 2 ** (layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_crops_per_side))
        crop_w, crop_h = crop_len(width, n_crops_per_side, overlap), crop_len(height, n_crops_per_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_crops_per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_crops_per_side)]
        for x0, y0 in itertools.product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
            layers.append(layer + 1)
    return boxes, layers


# ------------------------------------------------------------------------------------------ jitted pieces

def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """F.interpolate(mode="bilinear", align_corners=False) along one axis as two taps: indices i0, i1 and weights
    w0, w1 (float32), as ATen's upsample_bilinear2d computes them."""
    src = np.maximum(_source_coords(in_size, out_size), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, np.float32(1) - w1, w1


@functools.partial(jax.jit, static_argnames="size")
def upscale_masks(low_res, size: tuple[int, int]):
    """(M, h, w) logits -> (M, H, W): bilinear, align_corners=False, along W then along H as ATen does."""
    i0, i1, w0, w1 = _linear_taps(low_res.shape[2], size[1])
    x = low_res[:, :, i0] * w0 + low_res[:, :, i1] * w1
    i0, i1, w0, w1 = _linear_taps(low_res.shape[1], size[0])
    return x[:, i0] * w0[:, None] + x[:, i1] * w1[:, None]


def mask_boxes(masks):
    """(M, H, W) bool -> (M, 4) int32 boxes x0, y0, x1, y1 (inclusive pixel indices); 0, 0, 0, 0 for an empty mask
    (amg `batched_mask_to_box`)."""

    def first_last(present):
        coords = jnp.arange(present.shape[-1], dtype=jnp.int32)
        return (jnp.min(jnp.where(present, coords, present.shape[-1]), axis=-1),
                jnp.max(jnp.where(present, coords, 0), axis=-1))

    top, bottom = first_last(jnp.any(masks, axis=2))
    left, right = first_last(jnp.any(masks, axis=1))
    boxes = jnp.stack([left, top, right, bottom], axis=-1)
    return jnp.where(((right < left) | (bottom < top))[:, None], 0, boxes)


def near_crop_edge(boxes, crop_box, image_box):
    """(M,) whether a box (image coordinates) lies within 20 px of an edge of its crop that is not an image edge
    (amg `is_box_near_crop_edge`)."""
    boxes, crop_box, image_box = (x.astype(jnp.float32) for x in (boxes, crop_box, image_box))
    near_crop = jnp.abs(boxes - crop_box) <= CROP_EDGE_TOLERANCE
    near_image = jnp.abs(boxes - image_box) <= CROP_EDGE_TOLERANCE
    return jnp.any(near_crop & ~near_image, axis=1)


def _decode(params, config, embeddings, points, **kwargs):
    """`Sam2ImageModule.decode` with one positive click per prompt: points (B, P, 2) -> masks (B, P, k, h, w),
    predicted IoUs (B, P, k)."""
    labels = jnp.ones(points.shape[:2] + (1,), jnp.int32)
    masks, iou, _ = Sam2ImageModule(config).apply({"params": params}, embeddings,
                                                  points[:, :, None].astype(embeddings[-1].dtype), labels,
                                                  method=Sam2ImageModule.decode, **kwargs)
    return masks, iou


@functools.partial(jax.jit, static_argnames=("config", "multimask_output"))
def predict_masks(params, embeddings, points, *, config, multimask_output: bool):
    """The original predictor's `_predict` on points (P, 2) in the input frame, one positive click each: low-res mask
    logits (P*K, h, w) and predicted IoUs (P*K,), float32, mask k of point p at p*K + k."""
    masks, iou = _decode(params, config, embeddings, points[None], multimask_output=multimask_output)
    return masks[0].reshape(-1, *masks.shape[3:]).astype(jnp.float32), iou[0].reshape(-1).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames="config")
def refine_masks(params, embeddings, points, masks, *, config):
    """The generator's `refine_with_m2m`: each of the P*K masks of `predict_masks`, clamped to +-32, is the mask prompt
    of its point (P, 2), with one output mask. Returns logits (P*K, h, w) and predicted IoUs (P*K,), float32."""
    count = points.shape[0]
    per_point = tuple(jnp.broadcast_to(e, (count, *e.shape[1:])) for e in embeddings)

    def refine(mask_inputs):  # (P, h, w): mask k of every point
        out, iou = _decode(params, config, per_point, points[:, None], input_masks=mask_inputs[..., None],
                           multimask_output=False)
        return out[:, 0, 0], iou[:, 0, 0]

    clamped = jnp.clip(masks, -MASK_INPUT_CLAMP, MASK_INPUT_CLAMP).reshape(count, -1, *masks.shape[1:])
    masks, iou = jax.lax.map(refine, jnp.moveaxis(clamped, 1, 0))  # (K, P, h, w), (K, P)
    return (jnp.moveaxis(masks, 0, 1).reshape(-1, *masks.shape[2:]).astype(jnp.float32),
            iou.T.reshape(-1).astype(jnp.float32))


@jax.jit
def select_masks(logits, iou, real, crop_box, image_box, thresholds):
    """Score and filter mask logits (M, H, W) of one crop as the original's `_process_batch`.

    real (M,): not padding; crop_box, image_box (4,) int32 x0, y0, x1, y1; thresholds (5,) float32: mask_threshold,
    mask_threshold +- stability_score_offset, pred_iou_thresh, stability_score_thresh (0 turns a filter off).
    Returns iou, stability (M,), boxes (M, 4) in crop pixels, keep (M,) and the masks bit-packed along the width
    (M, H, ceil(W / 8)). (The upscaling stays a program of its own: fused into these reductions, XLA:CPU runs them
    about 20 times slower.)"""
    mask_threshold, upper, lower, min_iou, min_stability = thresholds
    inner = jnp.sum(logits > upper, axis=(1, 2), dtype=jnp.int32)
    outer = jnp.sum(logits > lower, axis=(1, 2), dtype=jnp.int32)
    stability = inner.astype(jnp.float32) / outer.astype(jnp.float32)  # NaN where both are empty, as the original
    masks = logits > mask_threshold
    boxes = mask_boxes(masks)
    keep = real & ~near_crop_edge(boxes + crop_box[jnp.array([0, 1, 0, 1])], crop_box, image_box)
    keep &= (iou > min_iou) | (min_iou <= 0)
    keep &= (stability >= min_stability) | (min_stability <= 0)
    return iou, stability, boxes, keep, jnp.packbits(masks, axis=-1)


@jax.jit
def greedy_nms(boxes, scores, valid, iou_threshold):
    """torchvision `nms` on the valid entries of boxes (N, 4) x0, y0, x1, y1 and scores (N,), float32.

    Boxes go in order of decreasing score (ties in index order); each one not yet suppressed is kept and suppresses
    the later ones that overlap it by IoU > iou_threshold (a float32 array: pass `float32_below(t)` for torch's
    float64 comparison). Returns the order (N,) and whether each entry of that order is kept (N,). The loop runs
    over the valid entries only, so a large fixed capacity costs little.
    """
    order = jnp.lexsort((-scores, ~valid))
    x0, y0, x1, y1 = boxes[order].T
    areas = (x1 - x0) * (y1 - y0)
    position = jnp.arange(scores.shape[0])

    def suppress(i, suppressed):
        width = jnp.maximum(0.0, jnp.minimum(x1[i], x1) - jnp.maximum(x0[i], x0))
        height = jnp.maximum(0.0, jnp.minimum(y1[i], y1) - jnp.maximum(y0[i], y0))
        inter = width * height
        overlaps = inter / (areas[i] + areas - inter) > iou_threshold
        return suppressed | (overlaps & (position > i) & ~suppressed[i])

    count = jnp.sum(valid)
    suppressed = jax.lax.fori_loop(0, count, suppress, jnp.zeros(scores.shape, bool))
    return order, (position < count) & ~suppressed


def float32_below(threshold: float) -> np.float32:
    """The largest float32 <= threshold: for float32 x, x > threshold (in float64) iff x > float32_below(threshold)."""
    t = np.float32(threshold)
    return t if float(t) <= threshold else np.nextafter(t, np.float32(-np.inf))  # float(): compare in float64


def nms_keep(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, capacity: int) -> np.ndarray:
    """Indices of the boxes that `greedy_nms` keeps, best first; the inputs are padded to `capacity` so that every
    call of a generator runs one compiled program."""
    n = len(scores)
    pad = capacity - n
    order, kept = greedy_nms(np.pad(boxes.astype(np.float32), ((0, pad), (0, 0))),
                             np.pad(scores.astype(np.float32), (0, pad)), np.arange(capacity) < n,
                             float32_below(iou_threshold))
    return np.asarray(order)[np.asarray(kept)]


# ------------------------------------------------------------------------------------------ mask records

@dataclasses.dataclass
class _Candidates:
    """Masks that passed the filters, and what their records need. Boxes and points in image coordinates (in crop
    coordinates until `uncrop`); masks bit-packed along the width, at their crop's size."""

    iou: np.ndarray  # (n,) float32
    stability: np.ndarray  # (n,) float32
    boxes: np.ndarray  # (n, 4) int64, x0, y0, x1, y1
    points: np.ndarray  # (n, 2) float32, x, y
    crop_boxes: np.ndarray  # (n, 4) int64
    masks: list  # n arrays (h, ceil(w / 8)) uint8

    @classmethod
    def concatenate(cls, parts: list[_Candidates]) -> _Candidates:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) if f.name != "masks"
                     else [m for p in parts for m in p.masks] for f in dataclasses.fields(cls)))

    def take(self, index: np.ndarray) -> _Candidates:
        return _Candidates(self.iou[index], self.stability[index], self.boxes[index], self.points[index],
                           self.crop_boxes[index], [self.masks[i] for i in index])


# -------------------------------------------------------------------------------------------- the generator

class Sam2AutomaticMaskGenerator:
    """The original sam2 `SAM2AutomaticMaskGenerator` on a sam2_jax `Sam2Model`, with its arguments:

    points_per_side (n: an n x n grid) or point_grids (one (N, 2) grid of x, y in [0, 1] per crop layer), exactly
    one; points_per_batch: points per decoder call; pred_iou_thresh, stability_score_thresh (0 turns the filter off)
    and stability_score_offset (masks at mask_threshold +- offset are compared); mask_threshold: logits above it are
    the mask; box_nms_thresh: box IoU above which the mask of lower predicted IoU goes; crop_n_layers: layers of
    2**i x 2**i crops, overlapping by crop_overlap_ratio of the short side (halved per layer), with
    int(points_per_side / crop_n_points_downscale_factor**i) points a side, their duplicates removed at
    crop_nms_thresh; min_mask_region_area: holes and islands up to this area (in low-res mask pixels) are removed;
    output_mode: "binary_mask", "uncompressed_rle" or "coco_rle"; use_m2m: refine each mask once with itself as
    the mask prompt; multimask_output: three masks per point (else one). `generate(image)` returns the records.
    """

    def __init__(self, model: Sam2Model, points_per_side: int | None = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.8, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, mask_threshold: float = 0.0, box_nms_thresh: float = 0.7,
                 crop_n_layers: int = 0, crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, point_grids: list[np.ndarray] | None = None,
                 min_mask_region_area: float = 0, output_mode: str = "binary_mask", use_m2m: bool = False,
                 multimask_output: bool = True):
        if not isinstance(model, Sam2Model):
            raise TypeError(f"model: expected a sam2_jax.Sam2Model, got {type(model).__name__}")
        for name, value in (("pred_iou_thresh", pred_iou_thresh), ("stability_score_thresh", stability_score_thresh),
                            ("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh),
                            ("crop_overlap_ratio", crop_overlap_ratio)):
            _check_number(name, value, 0.0, 1.0)
        _check_number("stability_score_offset", stability_score_offset, 0.0)
        _check_number("mask_threshold", mask_threshold)
        _check_number("min_mask_region_area", min_mask_region_area, 0.0)
        _check_int("points_per_batch", points_per_batch, 1)
        _check_int("crop_n_layers", crop_n_layers, 0)
        _check_int("crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1)
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode: expected one of {OUTPUT_MODES}, got {output_mode!r}")
        for name, value in (("use_m2m", use_m2m), ("multimask_output", multimask_output)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name}: expected a bool, got {value!r}")
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("points_per_side, point_grids: expected exactly one of them, got "
                             f"{'both' if point_grids is not None else 'neither'}")
        if points_per_side is not None:
            _check_int("points_per_side", points_per_side, 1)
            smallest = int(points_per_side / crop_n_points_downscale_factor**crop_n_layers)
            if smallest < 1:
                raise ValueError(f"points_per_side: {points_per_side} points a side, divided by "
                                 f"crop_n_points_downscale_factor ** layer = {crop_n_points_downscale_factor} ** "
                                 f"{crop_n_layers}, leave no point in the last crop layer; expected at least 1")
            grids = build_all_layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        else:
            grids = _check_point_grids(point_grids, crop_n_layers)

        self.model = model
        self.point_grids = grids
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.mask_threshold = float(mask_threshold)
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = int(crop_n_layers)
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.min_mask_region_area = float(min_mask_region_area)
        self.output_mode = output_mode
        self.use_m2m = bool(use_m2m)
        self.multimask_output = bool(multimask_output)

    @property
    def batch_size(self) -> int:
        """Points per decoder call, one shape for every crop layer: no more than the largest grid has."""
        return min(self.points_per_batch, max(len(g) for g in self.point_grids))

    @property
    def masks_per_point(self) -> int:
        """Candidate masks per grid point: the decoder's multimask outputs, or 1."""
        return self.model.config.mask_decoder_config.num_multimask_outputs if self.multimask_output else 1

    # ------------------------------------------------------------------------------------- public
    def generate(self, image) -> list[dict]:
        """Masks of everything in `image`, a (H, W, 3) uint8 RGB array. One record per mask, best first:
        segmentation ((H, W) bool, or an RLE dict with size [H, W] and counts: a list for "uncompressed_rle", a
        string for "coco_rle"), area (pixels), bbox [x, y, w, h], predicted_iou, point_coords [[x, y]] (the
        prompt), stability_score, crop_box [x, y, w, h]."""
        image = _check_image(image)
        height, width = image.shape[:2]
        crop_boxes, layers = generate_crop_boxes((height, width), self.crop_n_layers, self.crop_overlap_ratio)
        found = _Candidates.concatenate([self._process_crop(image, box, layer)
                                         for box, layer in zip(crop_boxes, layers)])
        if len(crop_boxes) > 1:
            x0, y0, x1, y1 = found.crop_boxes.T
            smaller_first = np.float32(1) / ((x1 - x0) * (y1 - y0)).astype(np.float32)
            capacity = sum(self._capacity(layer) for layer in layers)
            found = found.take(nms_keep(found.boxes, smaller_first, self.crop_nms_thresh, capacity))
        return [self._record(found, i, (height, width)) for i in range(len(found.iou))]

    # ---------------------------------------------------------------------------------- one crop
    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int) -> _Candidates:
        """The masks of one crop that pass the filters and the crop's NMS, in image coordinates."""
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_size = crop.shape[:2]
        embeddings = self._embed(crop)
        # As the original: the grid in crop pixels (float32), then scaled to the model's input frame.
        points = (self.point_grids[layer] * np.array([crop_size[::-1]])).astype(np.float32)
        model_points = points / np.array(crop_size[::-1], np.float32) * np.float32(self.model.image_size)
        batch, per_point = self.batch_size, self.masks_per_point
        padding = -len(points) % batch
        model_points = np.concatenate([model_points, np.repeat(model_points[:1], padding, axis=0)])
        real = np.repeat(np.arange(len(model_points)) < len(points), per_point)
        crop_box_array, image_box = np.asarray(crop_box, np.int32), np.asarray([0, 0, *image.shape[1::-1]], np.int32)
        # Compared in float32, as the original compares its float32 tensors with these Python floats.
        thresholds = np.asarray([self.mask_threshold, self.mask_threshold + self.stability_score_offset,
                                 self.mask_threshold - self.stability_score_offset, self.pred_iou_thresh,
                                 self.stability_score_thresh], np.float32)
        parts = []
        for start in range(0, len(model_points), batch):
            batch_points = model_points[start:start + batch]
            low_res, iou = predict_masks(self.model.params, embeddings, batch_points, config=self.model.config,
                                         multimask_output=self.multimask_output)
            if self.use_m2m:
                low_res, iou = refine_masks(self.model.params, embeddings, batch_points, low_res,
                                            config=self.model.config)
            if self.min_mask_region_area > 0:
                # The predictor's clean-up, at its own threshold 0 (not mask_threshold), before upscaling.
                low_res = processing.remove_small_regions(np.asarray(low_res), 0.0, self.min_mask_region_area,
                                                          self.min_mask_region_area)
            iou, stability, boxes, keep, packed = (np.asarray(x) for x in select_masks(
                upscale_masks(low_res, size=crop_size), iou, real[start * per_point:(start + batch) * per_point],
                crop_box_array, image_box, thresholds))
            kept = np.flatnonzero(keep)
            parts.append(_Candidates(iou[kept], stability[kept], boxes[kept].astype(np.int64),
                                     points[start + kept // per_point], np.zeros((len(kept), 4), np.int64),
                                     list(packed[kept])))
        found = _Candidates.concatenate(parts)
        found = found.take(nms_keep(found.boxes, found.iou, self.box_nms_thresh, self._capacity(layer)))
        found.boxes = found.boxes + np.asarray([x0, y0, x0, y0])
        found.points = found.points + np.asarray([x0, y0], np.float32)
        found.crop_boxes = np.tile(np.asarray(crop_box, np.int64), (len(found.iou), 1))
        return found

    def _capacity(self, layer: int) -> int:
        """Candidate masks of a crop of this layer: its points padded to whole batches, times masks per point."""
        return -(-len(self.point_grids[layer]) // self.batch_size) * self.batch_size * self.masks_per_point

    def _embed(self, crop: np.ndarray):
        """The decoder's inputs for a crop, preprocessed as the original `SAM2Transforms`: ToTensor (x / 255),
        Resize (antialiased bilinear on the float image), Normalize."""
        size = self.model.image_size
        x = processing.resize_image(crop.astype(np.float32) / np.float32(255), (size, size))
        pixels = jnp.asarray(((x - _MEAN) / _STD)[None], self.model.dtype)
        return self.model._encode(self.model.params, pixels)

    def _record(self, found: _Candidates, i: int, image_size: tuple[int, int]) -> dict:
        """The original's record of mask i, its mask placed in the whole image."""
        x0, y0, x1, y1 = found.crop_boxes[i]
        mask = np.zeros(image_size, bool)
        mask[y0:y1, x0:x1] = np.unpackbits(found.masks[i], axis=-1, count=x1 - x0).astype(bool)
        if self.output_mode == "binary_mask":
            segmentation = mask
        elif self.output_mode == "uncompressed_rle":
            segmentation = {"size": list(image_size), "counts": rle_counts(mask)}
        else:
            segmentation = rle_encode(mask)
        return {"segmentation": segmentation, "area": int(mask.sum()), "bbox": _xywh(found.boxes[i]),
                "predicted_iou": found.iou[i].item(), "point_coords": [found.points[i].tolist()],
                "stability_score": found.stability[i].item(), "crop_box": _xywh(found.crop_boxes[i])}


def _xywh(box: np.ndarray) -> list[float]:
    """x0, y0, x1, y1 -> [x, y, w, h] as Python floats (the original's float32 boxes, listed)."""
    x0, y0, x1, y1 = box.astype(np.float32)
    return np.stack([x0, y0, x1 - x0, y1 - y0]).tolist()


# ------------------------------------------------------------------------------------------- validation

def _check_number(name: str, value, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name}: expected a number {bounds}, got {value!r}")


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value}")


def _check_point_grids(point_grids, crop_n_layers: int) -> list[np.ndarray]:
    """One (N, 2) grid of x, y in [0, 1] per crop layer (the original indexes them by layer)."""
    if not isinstance(point_grids, (list, tuple)):
        raise TypeError(f"point_grids: expected a list of (N, 2) arrays, got {type(point_grids).__name__}")
    if len(point_grids) < crop_n_layers + 1:
        raise ValueError(f"point_grids: expected a grid for each of the {crop_n_layers + 1} crop layers, got "
                         f"{len(point_grids)}")
    grids = []
    for i, grid in enumerate(point_grids):
        grid = np.asarray(grid, np.float64)
        if grid.ndim != 2 or grid.shape[1] != 2 or len(grid) == 0:
            raise ValueError(f"point_grids[{i}]: expected shape (N, 2) with N >= 1, got {grid.shape}")
        if not np.all((grid >= 0) & (grid <= 1)):
            raise ValueError(f"point_grids[{i}]: expected x, y in [0, 1] (fractions of the crop), got values in "
                             f"[{np.nanmin(grid)}, {np.nanmax(grid)}]")
        grids.append(grid)
    return grids


def _check_image(image) -> np.ndarray:
    if not isinstance(image, (np.ndarray, jax.Array)):
        raise TypeError(f"image: expected a (H, W, 3) uint8 numpy array, got {type(image).__name__} (for a PIL "
                        "image: np.asarray(image.convert('RGB')))")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"image: expected dtype uint8 (0..255), got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image: expected shape (H, W, 3) (RGB), got {image.shape}")
    return image
