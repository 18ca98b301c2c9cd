"""Frames and prompts in, masks out: the host-side half of transformers' `Sam2Processor` in numpy.

- `preprocess_images`: images -> pixel_values (B, 3, S, S) float32, as `Sam2ImageProcessor()`.
- `prepare_prompts`: nested point/label/box lists -> padded arrays scaled to the model's input size, as
  `Sam2Processor.__call__`, with every malformed input rejected by name.
- `post_process_masks`: low-res mask logits -> masks at each image's original size, as
  `Sam2ImageProcessor.post_process_masks`, plus the hole filling and sprinkle removal of the original
  `sam2` package (transformers accepts those arguments and ignores them).
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from scipy import ndimage

from .models.layers import antialias_taps, bilinear_matrix

POINT_PAD_VALUE = -10  # transformers' pad for ragged point and label lists (a zero token in the model)
VALID_LABELS = (POINT_PAD_VALUE, -1, 0, 1, 2, 3)  # pad, not-a-point, negative, positive, box corners
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# transformers fuses rescale (1/255) into normalise: mean and std times 255, in float32.
_MEAN_255 = np.asarray(IMAGENET_MEAN, np.float32) * np.float32(255)
_STD_255 = np.asarray(IMAGENET_STD, np.float32) * np.float32(255)
_ARRAY_TYPES = (np.ndarray, jax.Array)


# ----------------------------------------------------------------------------------------------- images

def preprocess_images(images, size: int = 1024,
                      resize_kernel: str = "uint8") -> tuple[np.ndarray, list[tuple[int, int]]]:
    """`Sam2ImageProcessor()` on images: RGB, resize to size x size ignoring aspect ratio (antialiased
    bilinear), then `(x - mean*255) / (std*255)` in float32.

    images: a PIL image, an array (H, W) or (H, W, C) with C in {1, 3, 4}, a batch array (B, H, W, C), or a
    list of these. Arrays are channels-last (transformers also guesses channels-first). uint8 arrays are
    0..255; float32/float64 arrays are taken on the same 0..255 scale, as transformers does (it rescales
    floats by 1/255 too). Gray is repeated to RGB; RGBA and PIL transparency are blended onto white.
    resize_kernel (uint8 images only): "uint8" is torchvision's native CPU kernel (AVX2/arm64), matched
    bit for bit; "float" is its GPU path, float32 interpolation then rounding.
    Returns pixel_values (B, 3, size, size) float32 and original_sizes [(H, W)] per image.
    """
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size <= 0:
        raise ValueError(f"size: expected a positive int, got {size!r}")
    if resize_kernel not in ("uint8", "float"):
        raise ValueError(f"resize_kernel: expected 'uint8' or 'float', got {resize_kernel!r}")
    if isinstance(images, _ARRAY_TYPES) and np.ndim(images) == 4:
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        images = [images]
    if len(images) == 0:
        raise ValueError("images: expected at least one image, got an empty list")
    pixel_values, original_sizes = [], []
    for i, image in enumerate(images):
        rgb = to_rgb(image, name=f"images[{i}]" if len(images) > 1 else "images")
        original_sizes.append(rgb.shape[:2])
        resized = resize_image(rgb, (size, size), kernel=resize_kernel)
        pixel_values.append(((resized.astype(np.float32) - _MEAN_255) / _STD_255).transpose(2, 0, 1))
    return np.stack(pixel_values), original_sizes


def to_rgb(image, name: str = "images") -> np.ndarray:
    """transformers' `convert_to_rgb` (torchvision backend): image -> (H, W, 3) uint8, float32 or float64."""
    if isinstance(image, Image.Image):
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            white = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, image.convert("RGBA"))
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, _ARRAY_TYPES):
        raise TypeError(f"{name}: expected a PIL image or a numpy/jax array, got {type(image).__name__}")
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.float32, np.float64):
        raise TypeError(f"{name}: expected dtype uint8 (0..255), float32 or float64, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"{name}: expected shape (H, W), (H, W, C) with C in 1, 3, 4, or a batch (B, H, W, C); "
                         f"got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty image, got shape {image.shape}")
    if image.dtype != np.uint8 and not np.isfinite(image).all():
        raise ValueError(f"{name}: expected finite pixel values, got NaN or infinity")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:
        return _blend_on_white(image, name)
    return image


def _blend_on_white(rgba: np.ndarray, name: str) -> np.ndarray:
    """torchvision backend's RGBA -> RGB: alpha blend onto white in float32, back to the input dtype."""
    if rgba.dtype == np.uint8:
        x = rgba.astype(np.float32) * np.float32(1.0 / 255)
    else:
        if rgba.min() < 0.0 or rgba.max() > 1.0:
            raise ValueError(f"{name}: expected a float RGBA image with values in [0, 1], got "
                             f"[{rgba.min()}, {rgba.max()}]")
        x = rgba.astype(np.float32)
    alpha = x[..., 3:]
    rgb = x[..., :3] * alpha + (np.float32(1) - alpha)
    if rgba.dtype == np.uint8:
        return (rgb * np.float32(255 + 1.0 - 1e-3)).astype(np.uint8)  # torchvision's to_dtype(scale=True)
    return rgb.astype(rgba.dtype)


def resize_image(image: np.ndarray, size: tuple[int, int], kernel: str = "uint8") -> np.ndarray:
    """torchvision `resize(antialias=True, BILINEAR)` of an (H, W, C) image to size = (h, w), width first.

    uint8 with kernel "uint8": ATen's Pillow-style fixed-point kernel (UpSampleKernelAVXAntialias.h, what
    torchvision uses on AVX2/arm64 CPUs), bit for bit. uint8 with kernel "float": float32 interpolation,
    then round (torchvision on GPU). Float images: interpolation in their own dtype, no rounding.
    """
    if tuple(image.shape[:2]) == tuple(size):
        return image
    fixed_point = image.dtype == np.uint8 and kernel == "uint8"
    x = image if fixed_point else image.astype(np.float32 if image.dtype == np.uint8 else image.dtype)
    for axis, out_size in ((1, size[1]), (0, size[0])):
        if x.shape[axis] != out_size:
            x = (_resize_axis_fixed_point if fixed_point else _resize_axis_float)(x, axis, out_size)
    if image.dtype == np.uint8 and not fixed_point:
        x = np.round(x).astype(np.uint8)
    return x


def _resize_axis_fixed_point(x, axis: int, out_size: int, xp=np):
    """One pass of ATen's uint8 kernel: int16 weights with `precision` fractional bits, int32 sums,
    round half up, clamp to 0..255 (ATen `_compute_indices_int16_weights_aa` and the AVX convolutions).
    `xp`: numpy here, jax.numpy inside jit (`functional.prepare`)."""
    index, w = antialias_taps(x.shape[axis], out_size)
    precision = 0
    while precision < 22 and int(0.5 + w.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    w_int = np.floor(0.5 + w * (1 << precision)).astype(np.int32)
    acc = xp.int32(1 << (precision - 1))
    for j in range(index.shape[1]):
        acc = acc + xp.take(x, index[:, j], axis=axis).astype(np.int32) * _along(w_int[:, j], axis, x.ndim)
    return xp.clip(acc >> precision, 0, 255).astype(np.uint8)


def _resize_axis_float(x: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """One pass of F.interpolate(antialias=True) in x's float dtype (sequential sums, no FMA)."""
    index, w = antialias_taps(x.shape[axis], out_size, x.dtype.type)
    acc = np.zeros(_shape_with(x.shape, axis, out_size), x.dtype)
    for j in range(index.shape[1]):
        acc += np.take(x, index[:, j], axis=axis) * _along(w[:, j], axis, x.ndim)
    return acc


def _shape_with(shape, axis, n):
    return shape[:axis] + (n,) + shape[axis + 1:]


def _along(v: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """v reshaped to broadcast along `axis` of an ndim array."""
    return v.reshape((-1,) + (1,) * (ndim - axis - 1))


# ---------------------------------------------------------------------------------------------- prompts

def prepare_prompts(input_points=None, input_labels=None, input_boxes=None, *, original_sizes,
                    target_size: int = 1024, sizes_from_images: bool = False) -> dict[str, np.ndarray]:
    """`Sam2Processor.__call__` on prompts: validate, pad ragged lists with -10, scale to target_size.

    input_points `[image][object][point][x, y]`, input_labels `[image][object][point]` (1 positive, 0
    negative, -1 not-a-point, 2/3 box corners, -10 pad), input_boxes `[image][box][x1, y1, x2, y2]`: nested
    lists, tuples, numpy or jax arrays, in pixels of the original image. original_sizes: [(H, W)] per image,
    or one size for all images. Points and labels come together; a point with both coordinates -10 is a pad
    and is left alone.
    Returns a dict with the given keys among input_points (B, P, N, 2) float32, input_labels (B, P, N)
    int64 and input_boxes (B, nb, 4) float32, coordinates times target/W and target/H in float32.
    sizes_from_images: the sizes were measured on the images, which transformers keeps in a tensor, so that
    its target/W is torch's float32 `target * (1/W)` rather than a float64 quotient (1 ulp apart at times).
    """
    if (input_points is None) != (input_labels is None):
        given, missing = ("input_points", "input_labels") if input_labels is None else ("input_labels",
                                                                                      "input_points")
        raise ValueError(f"{missing}: expected it together with {given}, got None")
    if isinstance(target_size, bool) or not isinstance(target_size, numbers.Integral) or target_size <= 0:
        raise ValueError(f"target_size: expected a positive int, got {target_size!r}")
    out = {}
    num_images = {}
    if input_points is not None:
        points = _nested(input_points, "input_points", "[image][object][point][x, y]", 4, leaf=2)
        labels = _nested(input_labels, "input_labels", "[image][object][point]", 3)
        _check_labels_match_points(labels, points)
        num_images["input_points"] = len(points)
        out["input_points"], out["input_labels"] = _pad_points(points, labels)
    if input_boxes is not None:
        boxes = _nested(input_boxes, "input_boxes", "[image][box][x1, y1, x2, y2]", 3, leaf=4)
        counts = [len(b) for b in boxes]
        if len(set(counts)) > 1:
            raise ValueError(f"input_boxes: expected the same number of boxes in every image (boxes cannot be "
                             f"padded), got {counts}")
        num_images["input_boxes"] = len(boxes)
        out["input_boxes"] = np.asarray(boxes, np.float32)
    if len(set(num_images.values())) > 1:
        raise ValueError(f"input_boxes: expected prompts for the same images as input_points "
                         f"({num_images['input_points']}), got {num_images['input_boxes']}")
    if not out:
        return out
    batch = next(iter(num_images.values()))
    sizes = _original_sizes(original_sizes)
    if len(sizes) not in (1, batch):
        raise ValueError(f"original_sizes: expected 1 or {batch} sizes (one per image of the prompts), got "
                         f"{len(sizes)}")
    sizes = sizes * batch if len(sizes) == 1 else sizes
    if "input_points" in out:
        points = out["input_points"]
        real = ~np.all(points == POINT_PAD_VALUE, axis=-1)
        _check_in_image(points, real, sizes, "input_points", depth=2)
        out["input_points"] = np.where(real[..., None], _scale(points, sizes, target_size, sizes_from_images),
                                       points)
    if "input_boxes" in out:
        boxes = out["input_boxes"]
        _check_in_image(boxes.reshape(batch, -1, 2, 2), np.ones(boxes.shape[:2] + (2,), bool), sizes,
                        "input_boxes", depth=1)
        inverted = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
        if inverted.any():
            b, i = np.argwhere(inverted)[0]
            raise ValueError(f"input_boxes[{b}][{i}]: expected x1 <= x2 and y1 <= y2, got {boxes[b, i].tolist()}")
        out["input_boxes"] = _scale(boxes.reshape(batch, -1, 2, 2), sizes, target_size,
                                    sizes_from_images).reshape(boxes.shape)
    return out


def _nested(data, name: str, layout: str, levels: int, leaf: int | None = None) -> list:
    """data (nested lists/tuples/arrays, `levels` deep, no empty lists) -> nested lists of numbers."""

    def walk(x, path, depth):
        if isinstance(x, _ARRAY_TYPES):
            x = np.asarray(x).tolist()
        if depth == levels:
            if isinstance(x, (list, tuple)):
                raise ValueError(f"{name}: expected {levels} levels of nesting as {layout}, but {name}{path} is "
                                 f"a list (too deep)")
            if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
                raise TypeError(f"{name}{path}: expected a number, got {x!r}")
            return x
        if not isinstance(x, (list, tuple)):
            raise ValueError(f"{name}: expected {levels} levels of nesting as {layout}, but {name}{path} is "
                             f"{x!r} at level {depth}")
        if len(x) == 0:
            raise ValueError(f"{name}{path}: expected a non-empty list ({layout}), got an empty one")
        if leaf is not None and depth == levels - 1 and len(x) != leaf:
            raise ValueError(f"{name}{path}: expected {leaf} coordinates as the last level of {layout}, got "
                             f"{len(x)}")
        return [walk(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(x)]

    if not isinstance(data, (list, tuple) + _ARRAY_TYPES):
        raise TypeError(f"{name}: expected a nested list or an array as {layout}, got {type(data).__name__}")
    return walk(data, "", 0)


def _check_labels_match_points(labels: list, points: list):
    """One valid label per point, image by image and object by object."""
    if len(labels) != len(points):
        raise ValueError(f"input_labels: expected labels for {len(points)} images, as input_points, got "
                         f"{len(labels)}")
    for b, (img_labels, img_points) in enumerate(zip(labels, points)):
        if len(img_labels) != len(img_points):
            raise ValueError(f"input_labels[{b}]: expected {len(img_points)} objects, as input_points[{b}], got "
                             f"{len(img_labels)}")
        for p, (obj_labels, obj_points) in enumerate(zip(img_labels, img_points)):
            if len(obj_labels) != len(obj_points):
                raise ValueError(f"input_labels[{b}][{p}]: expected {len(obj_points)} labels, one per point of "
                                 f"input_points[{b}][{p}], got {len(obj_labels)}")
            for n, label in enumerate(obj_labels):
                if label not in VALID_LABELS:
                    raise ValueError(f"input_labels[{b}][{p}][{n}]: expected one of {VALID_LABELS}, got {label!r}")


def _pad_points(points: list, labels: list) -> tuple[np.ndarray, np.ndarray]:
    """Ragged [image][object][point] lists -> arrays padded with -10, as transformers' `_pad_nested_list`."""
    shape = (len(points), max(len(o) for o in points), max(len(p) for o in points for p in o))
    out_points = np.full(shape + (2,), POINT_PAD_VALUE, np.float32)
    out_labels = np.full(shape, POINT_PAD_VALUE, np.int64)
    for b, (img_points, img_labels) in enumerate(zip(points, labels)):
        for p, (obj_points, obj_labels) in enumerate(zip(img_points, img_labels)):
            out_points[b, p, :len(obj_points)] = obj_points
            out_labels[b, p, :len(obj_labels)] = [int(v) for v in obj_labels]
    return out_points, out_labels


def _original_sizes(original_sizes) -> list[tuple[int, int]]:
    """[(H, W)] per image from a list of pairs or an (B, 2) array; positive integers."""
    if isinstance(original_sizes, _ARRAY_TYPES):
        original_sizes = np.asarray(original_sizes).tolist()
    if not isinstance(original_sizes, (list, tuple)) or len(original_sizes) == 0:
        raise ValueError(f"original_sizes: expected a non-empty list of (height, width), got {original_sizes!r}")
    sizes = []
    for size in original_sizes:
        if isinstance(size, _ARRAY_TYPES):
            size = np.asarray(size).tolist()
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < math.inf
                           and v == int(v) for v in size)):
            raise ValueError(f"original_sizes: expected (height, width) pairs of positive integers, got {size!r}")
        sizes.append((int(size[0]), int(size[1])))
    return sizes


def _check_in_image(xy: np.ndarray, real: np.ndarray, sizes: list, name: str, depth: int):
    """Every real (x, y) of xy (B, ..., 2) finite and inside [0, W] x [0, H] of its image; an error names
    the entry `name[b]` plus `depth` more indices (the point, or the box)."""
    for b, (height, width) in enumerate(sizes):
        x, y = xy[b, ..., 0], xy[b, ..., 1]
        bad = real[b] & ~((x >= 0) & (x <= width) & (y >= 0) & (y <= height))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0][:depth])
            path = f"{name}[{b}]" + "".join(f"[{i}]" for i in where)
            raise ValueError(f"{path}: expected x in [0, {width}] and y in [0, {height}] (inside the image), got "
                             f"{xy[b][where].reshape(-1).tolist()}")


def _scale(xy: np.ndarray, sizes: list, target_size: int, float32_ratios: bool = False) -> np.ndarray:
    """x * (target / W), y * (target / H) per image in float32, as transformers' `_normalize_coordinates`
    (with float32_ratios, target / W as torch divides a number by an int tensor: float32 reciprocal, product)."""
    if float32_ratios:
        one, target = np.float32(1), np.float32(target_size)
        ratios = np.asarray([(target * (one / np.float32(w)), target * (one / np.float32(h))) for h, w in sizes],
                            np.float32)
    else:
        ratios = np.asarray([(target_size / w, target_size / h) for h, w in sizes], np.float32)
    return xy * ratios.reshape((len(sizes),) + (1,) * (xy.ndim - 2) + (2,))


# ------------------------------------------------------------------------------------------------ masks

def post_process_masks(masks, original_sizes, mask_threshold: float = 0.0, binarize: bool = True,
                       max_hole_area: float = 0.0, max_sprinkle_area: float = 0.0,
                       apply_non_overlapping_constraints: bool = False) -> list[np.ndarray]:
    """`Sam2ImageProcessor.post_process_masks`, with hole filling and sprinkle removal really done.

    masks: a list of (N, C, h, w) logits per image, or one (B, N, C, h, w) array (numpy or jax).
    original_sizes: [(H, W)] per image. Per image, in order:
    1. if max_hole_area / max_sprinkle_area > 0: `remove_small_regions` on the low-res logits, as the
       original sam2 predictor does before upscaling (areas count low-res pixels);
    2. one-step bilinear upscaling to (H, W), align_corners=False;
    3. if apply_non_overlapping_constraints: `non_overlapping` over the N objects;
    4. if binarize: logits > mask_threshold.
    Returns a list of (N, C, H, W) arrays, bool if binarize else float32.
    """
    sizes = _original_sizes(original_sizes)
    if isinstance(masks, _ARRAY_TYPES):
        if np.ndim(masks) != 5:
            raise ValueError(f"masks: expected a list of (N, C, h, w) arrays or one (B, N, C, h, w) array, got "
                             f"shape {np.shape(masks)}")
    elif not isinstance(masks, (list, tuple)):
        raise TypeError(f"masks: expected a list of (N, C, h, w) numpy/jax arrays, got {type(masks).__name__}")
    if len(masks) != len(sizes):
        raise ValueError(f"original_sizes: expected one (height, width) per image of masks ({len(masks)}), got "
                         f"{len(sizes)}")
    for value, name in ((mask_threshold, "mask_threshold"), (max_hole_area, "max_hole_area"),
                        (max_sprinkle_area, "max_sprinkle_area")):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if max_hole_area < 0 or max_sprinkle_area < 0:
        raise ValueError(f"max_hole_area, max_sprinkle_area: expected areas >= 0, got {max_hole_area}, "
                         f"{max_sprinkle_area}")
    outputs = []
    for i, (mask, (height, width)) in enumerate(zip(masks, sizes)):
        if not isinstance(mask, _ARRAY_TYPES):
            raise TypeError(f"masks[{i}]: expected a numpy or jax array, got {type(mask).__name__}")
        if mask.ndim != 4 or not jnp.issubdtype(mask.dtype, jnp.floating):
            raise ValueError(f"masks[{i}]: expected float logits of shape (N, C, h, w), got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        x = np.asarray(mask, np.float32)
        x = remove_small_regions(x, mask_threshold, max_hole_area, max_sprinkle_area)
        x = bilinear_matrix(x.shape[2], height) @ (x @ bilinear_matrix(x.shape[3], width).T)
        if apply_non_overlapping_constraints:
            x = non_overlapping(x)
        outputs.append(x > np.float32(mask_threshold) if binarize else x)
    return outputs


def remove_small_regions(masks: np.ndarray, threshold: float = 0.0, max_hole_area: float = 0.0,
                         max_sprinkle_area: float = 0.0) -> np.ndarray:
    """The original sam2 `SAM2Transforms.postprocess_masks` clean-up, on masks (..., h, w) float32.

    Holes are 8-connected components of the background (logit <= threshold) of each (h, w) mask with
    area <= max_hole_area, set to threshold + 10. Sprinkles are 8-connected components of the
    foreground (logit > threshold) of the input with area <= max_sprinkle_area, set to threshold - 10.
    A zero area turns a step off. (sam2's video predictor fills holes with 0.1 instead, at threshold 0.)
    """
    out = masks
    if max_hole_area > 0:
        out = np.where(_small_components(masks <= threshold, max_hole_area), np.float32(threshold + 10.0), out)
    if max_sprinkle_area > 0:
        out = np.where(_small_components(masks > threshold, max_sprinkle_area), np.float32(threshold - 10.0), out)
    return out


def _small_components(binary: np.ndarray, max_area: float) -> np.ndarray:
    """Pixels of binary (..., h, w) in 8-connected components of area <= max_area, per (h, w) slice."""
    flat = binary.reshape((-1,) + binary.shape[-2:])
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # 8-connected within a slice, never across slices
    labels, _ = ndimage.label(flat, structure)
    small = np.bincount(labels.ravel()) <= max_area
    small[0] = False  # label 0 is the complement, not a component
    return small[labels].reshape(binary.shape)


def non_overlapping(masks: np.ndarray) -> np.ndarray:
    """transformers' `_apply_non_overlapping_constraints` over dim 0 of masks (N, ...): where an object is
    not the argmax, its logit is clamped to <= -10."""
    if masks.shape[0] == 1:
        return masks
    keep = np.argmax(masks, axis=0)[None] == np.arange(masks.shape[0]).reshape((-1,) + (1,) * (masks.ndim - 1))
    return np.where(keep, masks, np.minimum(masks, np.float32(-10.0)))
