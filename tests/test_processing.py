"""sam2_jax.processing against transformers' Sam2ImageProcessor / Sam2Processor (5.24.0) and torchvision,
computed here on random inputs; hole filling, sprinkle removal and non-overlap against plain references."""

from collections import deque

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms.v2 import functional as tvF
from torchvision.transforms.v2.functional._geometry import _do_native_uint8_resize_on_cpu
from transformers import Sam2ImageProcessor, Sam2Processor

from sam2_jax import processing
from sam2_jax.processing import (non_overlapping, post_process_masks, preprocess_images, prepare_prompts,
                                 remove_small_regions, resize_image)

# The kernel transformers uses on this machine's CPU: torchvision's native uint8 one where it exists.
CPU_KERNEL = "uint8" if _do_native_uint8_resize_on_cpu(tvF.InterpolationMode.BILINEAR) else "float"


def hf_pixels(images, size):
    out = Sam2ImageProcessor(size={"height": size, "width": size})(images, return_tensors="pt")
    return out["pixel_values"].numpy(), [tuple(s) for s in out["original_sizes"].tolist()]


def level_difference(ours, ref):
    """Largest difference in uint8 levels between two pixel_values, and the fraction that differ."""
    levels = np.abs(ours - ref) * processing._STD_255[:, None, None]
    return float(levels.max()), float((ours != ref).mean())


# ----------------------------------------------------------------------------------------------- images

def test_pixel_values_identical_for_frames_at_size():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(2)]
    images.append(rng.integers(0, 256, (256, 256), dtype=np.uint8))  # gray
    rgba = rng.integers(0, 256, (256, 256, 4), dtype=np.uint8)
    images.append(rgba)
    images.append(Image.fromarray(rgba, "RGBA"))
    images.append(Image.fromarray(images[0]).convert("L"))
    ours, sizes = preprocess_images(images, size=256)
    ref, ref_sizes = hf_pixels(images, 256)
    assert ours.dtype == np.float32 and ours.shape == (6, 3, 256, 256)
    np.testing.assert_array_equal(ours, ref)
    assert sizes == ref_sizes


def test_pixel_values_identical_at_1024():
    image = np.random.default_rng(1).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    ours, sizes = preprocess_images(image)
    ref, _ = hf_pixels(image, 1024)
    np.testing.assert_array_equal(ours, ref)
    assert sizes == [(1024, 1024)]


@pytest.mark.parametrize("shape", [(37, 53, 3), (301, 451, 3), (600, 211, 3), (255, 257, 3), (5, 300, 3),
                                   (200, 300, 4), (90, 70)])
def test_resized_pixel_values_match_the_cpu_kernel(shape):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    images = [Image.fromarray(image), image]  # transformers cannot take a list that starts with a 2-D array
    ours, sizes = preprocess_images(images, size=256, resize_kernel=CPU_KERNEL)
    ref, ref_sizes = hf_pixels(images, 256)
    max_levels, frac = level_difference(ours, ref)
    assert sizes == ref_sizes == [shape[:2]] * 2
    # Measured on AVX2: 0 levels, 0 pixels (the native uint8 kernel is matched bit for bit).
    if CPU_KERNEL == "uint8":
        np.testing.assert_array_equal(ours, ref)
    else:
        assert max_levels <= 1.0001 and frac < 1e-3, (max_levels, frac)


@pytest.mark.parametrize("shape, size", [((37, 53, 3), (256, 256)), ((480, 640, 3), (256, 256)),
                                         ((300, 200, 3), (128, 512)), ((256, 256, 3), (255, 257))])
def test_float_kernel_matches_the_gpu_recipe(shape, size):
    """resize_kernel="float" is torchvision's GPU path: F.interpolate(float32, antialias=True), round."""
    image = np.random.default_rng(shape[0]).integers(0, 256, shape, dtype=np.uint8)
    ours = resize_image(image, size, kernel="float")
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    ref = F.interpolate(x, size, mode="bilinear", antialias=True, align_corners=False).round().to(torch.uint8)
    diff = np.abs(ours.astype(int) - ref[0].permute(1, 2, 0).numpy().astype(int))
    # Measured: at most 1 level on at most 5e-5 of the pixels (float32 summation order).
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_float_images_match_transformers():
    """Float arrays are taken on the 0..255 scale, as transformers does."""
    rng = np.random.default_rng(2)
    images = [(rng.random((45, 61, 3)) * 255).astype(np.float32), rng.random((40, 30, 3)) * 255,
              rng.random((50, 50, 4)).astype(np.float32)]
    ours, sizes = preprocess_images(images, size=64)
    ref, ref_sizes = hf_pixels(images, 64)
    # Measured: 4.6e-5 on the 0..255 scale before normalisation, about 1e-6 after.
    np.testing.assert_allclose(ours, ref, rtol=0, atol=5e-6)
    assert sizes == ref_sizes


def test_batch_array_and_jax_array_are_images():
    frames = np.random.default_rng(3).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    ours, sizes = preprocess_images(frames, size=32)
    np.testing.assert_array_equal(ours, preprocess_images(list(frames), size=32)[0])
    np.testing.assert_array_equal(ours, preprocess_images(jnp.asarray(frames), size=32)[0])
    assert sizes == [(20, 30)] * 3


@pytest.mark.parametrize("images, kwargs, error", [
    (np.zeros((8, 8, 3), np.complex64), {}, TypeError),
    (np.zeros((8, 8, 3), np.int64), {}, TypeError),
    (np.zeros((8, 8, 5), np.uint8), {}, ValueError),
    (np.zeros((8, 8, 3, 2), np.uint8), {}, ValueError),
    (np.zeros((3,), np.uint8), {}, ValueError),
    (np.zeros((0, 8, 3), np.uint8), {}, ValueError),
    (np.full((8, 8, 4), 2.0, np.float32), {}, ValueError),  # float RGBA outside [0, 1]
    (np.full((8, 8, 3), np.nan, np.float32), {}, ValueError),
    ("frame.png", {}, TypeError),
    ([], {}, ValueError),
])
def test_bad_images_are_rejected(images, kwargs, error):
    with pytest.raises(error, match="images"):
        preprocess_images(images, size=32, **kwargs)


@pytest.mark.parametrize("kwargs, match", [(dict(size=0), "size"), (dict(size=2.5), "size"),
                                           (dict(resize_kernel="pil"), "resize_kernel")])
def test_bad_preprocess_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        preprocess_images(np.zeros((8, 8, 3), np.uint8), **kwargs)


# ---------------------------------------------------------------------------------------------- prompts

def hf_prompts(original_sizes, **prompts):
    out = Sam2Processor(image_processor=Sam2ImageProcessor())(original_sizes=original_sizes, return_tensors="pt",
                                                              **prompts)
    return {k: v.numpy() for k, v in out.items() if k != "original_sizes"}


@st.composite
def ragged_prompts(draw):
    """Random ragged points/labels and boxes for 1-3 images of random sizes, inside each image."""
    num_images = draw(st.integers(1, 3))
    sizes = [(draw(st.integers(1, 2000)), draw(st.integers(1, 2000))) for _ in range(num_images)]
    num_boxes = draw(st.integers(1, 3))
    points, labels, boxes = [], [], []
    for height, width in sizes:
        coord = lambda limit: draw(st.floats(0, limit, allow_nan=False, width=32))  # noqa: E731
        objects = draw(st.integers(1, 3))
        counts = [draw(st.integers(1, 4)) for _ in range(objects)]
        points.append([[[coord(width), coord(height)] for _ in range(n)] for n in counts])
        labels.append([[draw(st.sampled_from([0, 1])) for _ in range(n)] for n in counts])
        img_boxes = []
        for _ in range(num_boxes):
            x = sorted([coord(width), coord(width)])
            y = sorted([coord(height), coord(height)])
            img_boxes.append([x[0], y[0], x[1], y[1]])
        boxes.append(img_boxes)
    return sizes, points, labels, boxes


@settings(max_examples=40, deadline=None)
@given(ragged_prompts())
def test_prompts_match_transformers(case):
    sizes, points, labels, boxes = case
    ours = prepare_prompts(points, labels, boxes, original_sizes=sizes)
    ref = hf_prompts(sizes, input_points=points, input_labels=labels, input_boxes=boxes)
    assert ours.keys() == ref.keys() == {"input_points", "input_labels", "input_boxes"}
    for key in ref:
        assert ours[key].dtype == ref[key].dtype and ours[key].shape == ref[key].shape
        np.testing.assert_array_equal(ours[key], ref[key])


def test_prompts_from_arrays_match_transformers():
    rng = np.random.default_rng(4)
    sizes = [(480, 640), (333, 517)]
    points = (rng.random((2, 3, 2, 2)) * 300).astype(np.float32)
    labels = rng.integers(0, 2, (2, 3, 2))
    boxes = np.sort(rng.random((2, 1, 2, 2)) * 300, axis=2).transpose(0, 1, 3, 2).reshape(2, 1, 4)
    boxes = boxes[..., [0, 2, 1, 3]].astype(np.float32)  # x1, y1, x2, y2
    ref = hf_prompts(sizes, input_points=points, input_labels=labels, input_boxes=boxes)
    for convert in (np.asarray, jnp.asarray):
        ours = prepare_prompts(convert(points), convert(labels), convert(boxes),
                               original_sizes=convert(np.array(sizes)))
        for key in ref:
            np.testing.assert_array_equal(ours[key], ref[key])


def test_one_original_size_serves_every_image():
    """transformers would scale only the first image here; we use the one size for all."""
    points, labels = [[[[10.0, 20.0]]], [[[30.0, 40.0]]]], [[[1]], [[1]]]
    one = prepare_prompts(points, labels, original_sizes=[(100, 200)], target_size=256)
    both = prepare_prompts(points, labels, original_sizes=[(100, 200), (100, 200)], target_size=256)
    np.testing.assert_array_equal(one["input_points"], both["input_points"])


def test_no_prompts_give_an_empty_dict():
    assert prepare_prompts(original_sizes=[(10, 10)]) == {}


GOOD_POINTS, GOOD_LABELS = [[[[10.0, 20.0], [30.0, 40.0]]]], [[[1, 0]]]
SIZES = [(100, 200)]  # height 100, width 200


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(input_points=[[[10.0, 20.0]]], input_labels=[[1]]), ValueError, "input_points"),  # 3 levels
    (dict(input_points=[[[[[10.0, 20.0]]]]], input_labels=[[[1]]]), ValueError, "input_points"),  # 5 levels
    (dict(input_points=np.zeros((1, 1, 2)), input_labels=[[1]]), ValueError, "input_points"),
    (dict(input_points=GOOD_POINTS, input_labels=[[1, 0]]), ValueError, "input_labels"),  # labels 2 levels
    (dict(input_points=[[[[10.0, 20.0, 1.0]]]], input_labels=[[[1]]]), ValueError, r"input_points\[0\]\[0\]\[0\]"),
    (dict(input_points=np.zeros((1, 1, 1, 3)), input_labels=[[[1]]]), ValueError, "input_points"),
    (dict(input_boxes=[[[1.0, 2.0, 3.0]]]), ValueError, r"input_boxes\[0\]\[0\]"),
    (dict(input_points=GOOD_POINTS), ValueError, "input_labels"),
    (dict(input_labels=GOOD_LABELS), ValueError, "input_points"),
    (dict(input_labels=GOOD_LABELS, input_boxes=[[[1.0, 2.0, 3.0, 4.0]]]), ValueError, "input_points"),
    (dict(input_points=GOOD_POINTS, input_labels=[[[1]]]), ValueError, r"input_labels\[0\]\[0\]"),
    (dict(input_points=GOOD_POINTS, input_labels=[[[1, 0], [1]]]), ValueError, r"input_labels\[0\]"),
    (dict(input_points=GOOD_POINTS, input_labels=[[[1, 0]], [[1]]]), ValueError, "input_labels"),
    (dict(input_points=GOOD_POINTS, input_labels=[[[1, 5]]]), ValueError, r"input_labels\[0\]\[0\]\[1\]"),
    (dict(input_points=GOOD_POINTS, input_labels=[[[1, 0.5]]]), ValueError, "input_labels"),
    (dict(input_points=[[[[10.0, 20.0], [201.0, 40.0]]]], input_labels=GOOD_LABELS), ValueError,
     r"input_points\[0\]\[0\]\[1\]"),
    (dict(input_points=[[[[10.0, 20.0], [30.0, 100.5]]]], input_labels=GOOD_LABELS), ValueError,
     r"input_points\[0\]\[0\]\[1\]"),
    (dict(input_points=[[[[-0.5, 20.0]]]], input_labels=[[[1]]]), ValueError, r"input_points\[0\]\[0\]\[0\]"),
    (dict(input_points=[[[[np.nan, 20.0]]]], input_labels=[[[1]]]), ValueError, r"input_points\[0\]\[0\]\[0\]"),
    (dict(input_points=[[[[10.0, np.inf]]]], input_labels=[[[1]]]), ValueError, "input_points"),
    (dict(input_boxes=[[[50.0, 10.0, 20.0, 40.0]]]), ValueError, r"input_boxes\[0\]\[0\]"),  # x2 < x1
    (dict(input_boxes=[[[5.0, 50.0, 20.0, 40.0]]]), ValueError, r"input_boxes\[0\]\[0\]"),  # y2 < y1
    (dict(input_boxes=[[[5.0, 10.0, 250.0, 40.0]]]), ValueError, r"input_boxes\[0\]\[0\]"),  # outside
    (dict(input_boxes=[[[np.nan, 10.0, 20.0, 40.0]]]), ValueError, "input_boxes"),
    (dict(input_boxes=[[[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]], [[1.0, 2.0, 3.0, 4.0]]],
          original_sizes=SIZES * 2), ValueError, "input_boxes"),  # would need padding
    (dict(input_points=GOOD_POINTS, input_labels=GOOD_LABELS, input_boxes=[[[1.0, 2, 3, 4]], [[1.0, 2, 3, 4]]],
          original_sizes=SIZES * 2), ValueError, "input_boxes"),  # 1 image of points, 2 of boxes
    (dict(input_points=[], input_labels=[]), ValueError, "input_points"),
    (dict(input_points=[[[]]], input_labels=[[[]]]), ValueError, "input_points"),
    (dict(input_points="points", input_labels=GOOD_LABELS), TypeError, "input_points"),
    (dict(input_points=[[[["a", 2.0]]]], input_labels=[[[1]]]), TypeError, "input_points"),
    (dict(input_points=GOOD_POINTS, input_labels=GOOD_LABELS, original_sizes=SIZES * 2), ValueError,
     "original_sizes"),
    (dict(input_points=GOOD_POINTS * 3, input_labels=GOOD_LABELS * 3, original_sizes=SIZES * 2), ValueError,
     "original_sizes"),
    (dict(input_points=GOOD_POINTS, input_labels=GOOD_LABELS, original_sizes=[(100, 0)]), ValueError,
     "original_sizes"),
    (dict(input_points=GOOD_POINTS, input_labels=GOOD_LABELS, original_sizes=[100, 200]), ValueError,
     "original_sizes"),
    (dict(input_points=GOOD_POINTS, input_labels=GOOD_LABELS, original_sizes=[(100, np.inf)]), ValueError,
     "original_sizes"),
    (dict(input_points=GOOD_POINTS, input_labels=GOOD_LABELS, target_size=0), ValueError, "target_size"),
])
def test_bad_prompts_are_rejected(kwargs, error, match):
    kwargs = {"original_sizes": SIZES, **kwargs}
    with pytest.raises(error, match=match):
        prepare_prompts(**kwargs)


def test_points_on_the_image_border_and_pads_are_accepted():
    out = prepare_prompts([[[[0.0, 0.0], [200.0, 100.0]], [[5.0, 5.0]]]], [[[1, 1], [0]]],
                          [[[0.0, 0.0, 200.0, 100.0]]], original_sizes=SIZES, target_size=100)
    np.testing.assert_array_equal(out["input_points"], [[[[0, 0], [100, 100]], [[2.5, 5], [-10, -10]]]])
    np.testing.assert_array_equal(out["input_labels"], [[[1, 1], [0, -10]]])
    np.testing.assert_array_equal(out["input_boxes"], [[[0, 0, 100, 100]]])


# ------------------------------------------------------------------------------------------------ masks

def hf_post_process(masks, sizes, **kwargs):
    out = Sam2ImageProcessor().post_process_masks([torch.from_numpy(m.copy()) for m in masks], sizes, **kwargs)
    return [m.numpy() for m in out]


def random_logits(rng, shapes):
    return [(rng.standard_normal(s) * 8).astype(np.float32) for s in shapes]


SHAPES_AND_SIZES = [([(3, 3, 64, 64), (1, 1, 64, 64)], [(37, 91), (64, 64)]),
                    ([(2, 1, 256, 256)], [(480, 640)]),
                    ([(2, 3, 32, 32), (2, 3, 32, 32)], [(33, 17), (100, 300)])]


@pytest.mark.parametrize("shapes, sizes", SHAPES_AND_SIZES)
@pytest.mark.parametrize("non_overlap", [False, True])
def test_post_process_matches_transformers(shapes, sizes, non_overlap):
    masks = random_logits(np.random.default_rng(len(shapes) + sizes[0][0]), shapes)
    logits = post_process_masks(masks, sizes, binarize=False, apply_non_overlapping_constraints=non_overlap)
    ref = hf_post_process(masks, sizes, binarize=False, apply_non_overlapping_constraints=non_overlap)
    binary = post_process_masks(masks, sizes, apply_non_overlapping_constraints=non_overlap)
    for ours, theirs, ours_bin in zip(logits, ref, binary):
        assert ours.dtype == np.float32 and ours.shape == theirs.shape
        # Measured: at most about 1.5e-5 on logits up to about 40 (float rounding of the two-tap sums).
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())
        assert ours_bin.dtype == bool
        decided = np.abs(theirs) >= 1e-4
        np.testing.assert_array_equal(ours_bin[decided], theirs[decided] > 0)


def test_post_process_accepts_a_batch_array_and_jax_arrays():
    masks = random_logits(np.random.default_rng(5), [(2, 3, 16, 16)] * 2)
    sizes = np.array([[20, 30], [20, 30]])
    base = post_process_masks(masks, sizes.tolist(), binarize=False)
    for variant in (np.stack(masks), jnp.asarray(np.stack(masks)), [jnp.asarray(m) for m in masks]):
        for a, b in zip(post_process_masks(variant, sizes, binarize=False), base):
            np.testing.assert_array_equal(a, b)
    half = [jnp.asarray(m, jnp.bfloat16) for m in masks]
    for a, b in zip(post_process_masks(half, sizes), post_process_masks([np.asarray(m, np.float32) for m in half],
                                                                       sizes)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("masks, sizes, kwargs, error, match", [
    ([np.zeros((1, 16, 16), np.float32)], [(8, 8)], {}, ValueError, r"masks\[0\]"),
    ([np.zeros((1, 1, 16, 16), np.int32)], [(8, 8)], {}, ValueError, r"masks\[0\]"),
    ([[[[0.0]]]], [(8, 8)], {}, TypeError, r"masks\[0\]"),
    ("masks", [(8, 8)], {}, TypeError, "masks"),
    (np.zeros((1, 1, 16, 16), np.float32), [(8, 8)], {}, ValueError, "masks"),
    ([np.zeros((1, 1, 16, 16), np.float32)], [(8, 8), (8, 8)], {}, ValueError, "original_sizes"),
    ([np.zeros((1, 1, 16, 16), np.float32)], [(8, -8)], {}, ValueError, "original_sizes"),
    ([np.zeros((1, 1, 16, 16), np.float32)], [(8, 8)], dict(max_hole_area=-1), ValueError, "max_hole_area"),
    ([np.zeros((1, 1, 16, 16), np.float32)], [(8, 8)], dict(max_sprinkle_area=np.nan), ValueError,
     "max_sprinkle_area"),
    ([np.zeros((1, 1, 16, 16), np.float32)], [(8, 8)], dict(mask_threshold="0"), ValueError, "mask_threshold"),
])
def test_bad_post_process_input_is_rejected(masks, sizes, kwargs, error, match):
    with pytest.raises(error, match=match):
        post_process_masks(masks, sizes, **kwargs)


# ------------------------------------------------------- hole filling, sprinkles, non-overlap: properties

def components(binary):
    """8-connected components of a 2-D boolean array by breadth-first flood fill: a list of pixel lists."""
    height, width = binary.shape
    seen = np.zeros_like(binary)
    found = []
    for start in zip(*np.nonzero(binary)):
        if seen[start]:
            continue
        seen[start] = True
        queue, pixels = deque([start]), []
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and binary[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        found.append(pixels)
    return found


def reference_clean_up(masks, threshold, max_hole_area, max_sprinkle_area):
    """sam2's SAM2Transforms.postprocess_masks clean-up, one (h, w) mask at a time, by flood fill."""
    out = masks.copy()
    for index in np.ndindex(masks.shape[:-2]):
        mask = masks[index]
        if max_hole_area > 0:
            for pixels in components(mask <= threshold):
                if len(pixels) <= max_hole_area:
                    for p in pixels:
                        out[index][p] = np.float32(threshold + 10.0)
        if max_sprinkle_area > 0:
            for pixels in components(mask > threshold):  # the input's foreground, as sam2 does
                if len(pixels) <= max_sprinkle_area:
                    for p in pixels:
                        out[index][p] = np.float32(threshold - 10.0)
    return out


@st.composite
def small_logits(draw, max_objects=3):
    shape = (draw(st.integers(1, max_objects)), draw(st.integers(1, 2)), draw(st.integers(1, 12)),
             draw(st.integers(1, 12)))
    values = st.sampled_from([-3.0, -0.5, 0.0, 0.5, 1.0, 3.0])  # 0.0 is on the default threshold
    flat = draw(st.lists(values, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    return np.asarray(flat, np.float32).reshape(shape)


@settings(max_examples=60, deadline=None)
@given(small_logits(), st.sampled_from([0.0, 0.5, -0.5]), st.integers(0, 20), st.integers(0, 20))
def test_hole_filling_and_sprinkle_removal_match_flood_fill(masks, threshold, max_hole, max_sprinkle):
    expected = reference_clean_up(masks, threshold, max_hole, max_sprinkle)
    np.testing.assert_array_equal(remove_small_regions(masks, threshold, max_hole, max_sprinkle), expected)
    # Through post_process_masks at the low-res size (the bilinear step is then the identity).
    out = post_process_masks([masks], [masks.shape[-2:]], mask_threshold=threshold, binarize=False,
                             max_hole_area=max_hole, max_sprinkle_area=max_sprinkle)[0]
    np.testing.assert_array_equal(out, expected)


def test_holes_are_filled_before_upscaling():
    """A one-pixel hole in a low-res mask disappears from the upscaled mask; zero areas change nothing."""
    masks = np.full((1, 1, 8, 8), 5.0, np.float32)
    masks[0, 0, 3, 4] = -5.0
    filled = post_process_masks([masks], [(32, 32)], max_hole_area=1)[0]
    kept = post_process_masks([masks], [(32, 32)])[0]
    assert filled.all() and not kept.all()
    np.testing.assert_array_equal(kept, hf_post_process([masks], [(32, 32)])[0])


@settings(max_examples=60, deadline=None)
@given(small_logits(max_objects=4))
def test_non_overlapping_keeps_only_the_argmax_object(masks):
    out = non_overlapping(masks)
    expected = masks.copy()
    if masks.shape[0] > 1:
        for pixel in np.ndindex(masks.shape[1:]):
            column = [masks[(n,) + pixel] for n in range(masks.shape[0])]
            best = column.index(max(column))  # the first maximum, as torch.argmax
            for n in range(masks.shape[0]):
                if n != best:
                    expected[(n,) + pixel] = min(column[n], -10.0)
    np.testing.assert_array_equal(out, expected)
    assert ((out > 0).sum(axis=0) <= 1).all()


# ------------------------------------------------------------------------------------ processor files

def test_processor_files_round_trip_with_transformers(tmp_path):
    """What sam2-jax writes, transformers' processors load and use as we do; what transformers writes (its
    nested processor_config.json, or an image processor's preprocessor_config.json), sam2-jax reads."""
    import transformers

    from sam2_jax import Sam2Processor as OurProcessor, Sam2VideoProcessor as OurVideoProcessor

    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), np.uint8)
    OurVideoProcessor(size=192).save_pretrained(tmp_path / "ours")
    for cls in (transformers.Sam2Processor, transformers.Sam2VideoProcessor):
        theirs = cls.from_pretrained(tmp_path / "ours")
        assert (theirs.image_processor.size.height, theirs.target_size) == (192, 192)
        expected = theirs(images=image, input_points=[[[[30, 40]]]], input_labels=[[[1]]], return_tensors="pt")
        ours = OurProcessor.from_pretrained(tmp_path / "ours")(images=image, input_points=[[[[30, 40]]]],
                                                                 input_labels=[[[1]]], return_tensors="np")
        assert np.array_equal(ours["pixel_values"], expected["pixel_values"].numpy())
        assert np.array_equal(ours["input_points"], expected["input_points"].numpy())
    transformers.Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": 320, "width": 320}),
                               target_size=320).save_pretrained(tmp_path / "nested")
    Sam2ImageProcessor(size={"height": 160, "width": 160}).save_pretrained(tmp_path / "image")
    assert OurVideoProcessor.from_pretrained(tmp_path / "nested").size == 320
    assert OurProcessor.from_pretrained(tmp_path / "image").size == 160


def test_processor_from_a_model_checkpoint(tmp_path):
    """A model's save_pretrained writes the processor files; without them, the size comes from config.json."""
    from sam2_jax import Sam2VideoModel, Sam2VideoProcessor
    from sam2_jax.config import small_config

    model = Sam2VideoModel.from_config(small_config(image_size=192))
    model.save_pretrained(tmp_path)
    assert {"preprocessor_config.json", "video_preprocessor_config.json"} <= set(p.name for p in tmp_path.iterdir())
    assert Sam2VideoProcessor.from_pretrained(tmp_path).size == 192
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        (tmp_path / name).unlink()
    assert Sam2VideoProcessor.from_pretrained(tmp_path).size == 192
    assert Sam2VideoProcessor.from_pretrained("sam2-jax-shapes").size == 128
