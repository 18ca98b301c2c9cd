"""sam2_jax.automatic against the original sam2 `SAM2AutomaticMaskGenerator` (sam2/automatic_mask_generator.py)
and its helpers (sam2/utils/amg.py, torchvision's `batched_nms`).

The end-to-end parity runs a random SAM 2.1 tiny built by the sam2 package (every parameter randomised), converted
with `convert/` and loaded by `Sam2Model.from_pretrained`, on one 385x511 image. To keep the file fast, both run the
model at a 512 px input instead of 1024 (no weight depends on it): the sam2 package through a hydra override of its
config (and its image predictor's feature sizes, which are written for 1024), sam2-jax through its config.
Random weights give small, flat logits and near-constant predicted IoUs, so the mask and IoU heads' last layers are
scaled up (x30, x10) to spread both out; even so their masks cover most of the image and look alike, so box NMS
leaves few of them (two settings turn it off to compare many). The pieces that such masks exercise little (NMS order
and ties, crop-edge filtering, RLE) are compared on their own against the original's functions below.
"""

import dataclasses
import os
import types

import jax
import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask
from scipy import ndimage
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam2.utils import amg
from torchvision.ops import batched_nms

from convert.__main__ import main as convert
from reference import randomize_
from sam2_jax import Sam2Model
from sam2_jax.automatic import masks as automatic
from sam2_jax.automatic.masks import Sam2AutomaticMaskGenerator
from sam2_jax.config import Sam2Config, small_config
from sam2_jax.io.writers import rle_counts

INPUT_SIZE = 512  # the model's input size in these tests (the released models take 1024)

# Thresholds at which some of the random model's masks pass and some do not.
LOW_THRESHOLDS = dict(pred_iou_thresh=0.5, stability_score_thresh=0.2, mask_threshold=4.0, box_nms_thresh=0.98)
SETTINGS = {  # name: arguments of both generators (besides LOW_THRESHOLDS); every output_mode appears once
    "default": dict(points_per_side=8),
    "crop_n_layers=1": dict(points_per_side=4, points_per_batch=4, crop_n_layers=1, crop_nms_thresh=0.98),
    "use_m2m": dict(points_per_side=4, points_per_batch=4, use_m2m=True, output_mode="uncompressed_rle",
                    box_nms_thresh=1.0),
    "min_mask_region_area": dict(points_per_side=8, min_mask_region_area=25, output_mode="coco_rle",
                                 box_nms_thresh=1.0),
}
COMPILATIONS = []  # one entry per XLA compilation in this process, eager operations included


def _count_compilations(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILATIONS.append(duration)


jax.monitoring.register_event_duration_secs_listener(_count_compilations)


def shapes_image(height=385, width=511) -> np.ndarray:
    """A disc, two rectangles and a gradient: (H, W, 3) uint8. At this size the four crops of layer 1 have one
    size (258 x 321), so they share their compiled programs."""
    yy, xx = np.mgrid[:height, :width]
    image = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 90)], -1).astype(np.uint8)
    image[(yy - 150) ** 2 + (xx - 160) ** 2 < 70**2] = (230, 60, 40)
    image[220:330, 280:460] = (30, 200, 90)
    image[40:120, 330:480] = (250, 240, 230)
    return image


def at_input_size(config: Sam2Config, size: int) -> Sam2Config:
    """The image model's `config` taking size x size px inputs (the feature maps follow; the weights stay valid)."""
    s = size // 4
    vision = dataclasses.replace(
        config.vision_config, backbone_feature_sizes=((s, s), (s // 2, s // 2), (s // 4, s // 4)),
        backbone_config=dataclasses.replace(config.vision_config.backbone_config, image_size=(size, size)))
    return dataclasses.replace(config, vision_config=vision,
                               prompt_encoder_config=dataclasses.replace(config.prompt_encoder_config, image_size=size))


def original_generator(model, **settings) -> SAM2AutomaticMaskGenerator:
    """The original generator on `model` (built at INPUT_SIZE): its image predictor's feature sizes are written
    for 1024 px, so they are set for INPUT_SIZE."""
    generator = SAM2AutomaticMaskGenerator(model, **settings)
    generator.predictor._bb_feat_sizes = [(INPUT_SIZE // 4 // 2**i,) * 2 for i in range(3)]
    return generator


def connected_components(mask: torch.Tensor):
    """CPU stand-in for the original's CUDA `get_connected_components` (sam2/utils/misc.py, needed by
    min_mask_region_area; without the extension the original skips the step with a warning): per (N, 1, H, W)
    mask, 8-connected labels of the foreground and each pixel's component area, 0 on the background."""
    masks = mask.numpy().astype(bool)
    labels, areas = np.zeros(masks.shape, np.int32), np.zeros(masks.shape, np.int32)
    for i, m in enumerate(masks[:, 0]):
        labels[i, 0], _ = ndimage.label(m, structure=np.ones((3, 3)))
        counts = np.bincount(labels[i, 0].ravel())
        counts[0] = 0
        areas[i, 0] = counts[labels[i, 0]]
    return torch.from_numpy(labels), torch.from_numpy(areas)


def memoised(encode, store):
    """`encode(self, crop)` computed once per model and distinct crop (the settings differ only after the
    encoder)."""

    def wrapper(self, crop):
        key = (id(self.model), crop.shape, crop.tobytes())
        if key not in store:
            store[key] = encode(self, crop)
        return store[key]

    return wrapper


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The original model (torch) and sam2-jax's `Sam2Model` of its converted folder; each side encodes a crop
    once for all settings. torch runs on one thread: with two on a busy 2-core machine (the test workers run in
    pairs) its threads spin, and the original's many small calls get 5 to 10 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    original = randomize_(build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu",
                                     hydra_overrides_extra=[f"++model.image_size={INPUT_SIZE}"]), seed=1)
    with torch.no_grad():
        for name, param in original.named_parameters():
            if name.startswith("sam_mask_decoder.output_hypernetworks_mlps.") and ".layers.2." in name:
                param.mul_(30)
            if name.startswith("sam_mask_decoder.iou_prediction_head.layers.2."):
                param.mul_(10)
    root = tmp_path_factory.mktemp("automatic")
    torch.save({"model": original.state_dict()}, root / "original.pt")
    assert convert([os.fspath(root / "original.pt"), os.fspath(root / "folder")]) == 0

    original_set_image = SAM2ImagePredictor.set_image

    def encode(predictor, crop):  # what the original's set_image computes
        original_set_image(predictor, crop)
        return predictor._features, predictor._orig_hw

    encode_once = memoised(encode, {})

    def set_image(predictor, crop):
        predictor.reset_predictor()
        predictor._features, predictor._orig_hw = encode_once(predictor, crop)
        predictor._is_image_set = True

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SAM2ImagePredictor, "set_image", set_image)
        patch.setattr(Sam2AutomaticMaskGenerator, "_embed", memoised(Sam2AutomaticMaskGenerator._embed, {}))
        patch.setattr("sam2.utils.misc.get_connected_components", connected_components)
        converted = Sam2Model.from_pretrained(root / "folder")
        ours = Sam2Model(at_input_size(converted.config, INPUT_SIZE), converted.params)
        yield types.SimpleNamespace(original=original, ours=ours)
    torch.set_num_threads(threads)


def decoded(record) -> np.ndarray:
    """A record's mask as a bool (H, W) array, whatever its output_mode."""
    segmentation = record["segmentation"]
    if isinstance(segmentation, np.ndarray):
        return segmentation
    if isinstance(segmentation["counts"], str):
        return coco_mask.decode({**segmentation, "counts": segmentation["counts"].encode()}).astype(bool)
    return amg.rle_to_mask(segmentation)


def assert_same_records(got, expected, name):
    """The generator's records against the reference's, in order (distinct predicted IoUs and crop areas give one
    order): masks (IoU), scores, boxes, points, crops and areas."""
    assert len(got) == len(expected) > 0
    ious, iou_diffs, stability_diffs = [], [], []
    for ours, theirs in zip(got, expected):
        assert ours.keys() == theirs.keys()
        assert type(ours["segmentation"]) is type(theirs["segmentation"])
        a, b = decoded(ours), decoded(theirs)
        ious.append((a & b).sum() / (a | b).sum())
        iou_diffs.append(abs(ours["predicted_iou"] - theirs["predicted_iou"]))
        stability_diffs.append(abs(ours["stability_score"] - theirs["stability_score"]))
        assert ours["point_coords"] == theirs["point_coords"] and ours["crop_box"] == theirs["crop_box"]
        assert np.abs(np.subtract(ours["bbox"], theirs["bbox"])).max() <= 1
        assert abs(ours["area"] - theirs["area"]) <= 0.01 * theirs["area"]
    print(f"PARITY {name}: {len(got)} masks, min mask IoU {min(ious):.5f}, max |d predicted_iou| "
          f"{max(iou_diffs):.2g}, max |d stability_score| {max(stability_diffs):.2g}")
    assert min(ious) >= 0.99 and max(iou_diffs) <= 1e-4 and max(stability_diffs) <= 1e-4


@pytest.mark.parametrize("name", list(SETTINGS))
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools under numpy 2
def test_generate_matches_the_original(models, name):
    settings = {**LOW_THRESHOLDS, **SETTINGS[name]}
    expected = original_generator(models.original, **settings).generate(shapes_image())
    with jax.default_matmul_precision("highest"):
        got = Sam2AutomaticMaskGenerator(models.ours, **settings).generate(shapes_image())
    assert_same_records(got, expected, name)


def test_one_compilation_for_all_batches_and_images(models):
    """Three batches of 4 points (the last one padded) run one decoder program; a second image of the same size
    compiles nothing at all."""
    generator = Sam2AutomaticMaskGenerator(models.ours, points_per_side=3, points_per_batch=4, **LOW_THRESHOLDS)
    programs = automatic.predict_masks._cache_size()
    with jax.default_matmul_precision("highest"):
        generator.generate(shapes_image())
        assert automatic.predict_masks._cache_size() <= programs + 1  # the other tests may have made it
        before = len(COMPILATIONS)
        generator.generate(shapes_image()[::-1].copy())
    assert len(COMPILATIONS) == before


# ------------------------------------------------------------------------------------ the pieces, one by one
def test_grids_and_crops_match_amg():
    for args in ((32, 0, 1), (8, 2, 2), (5, 1, 1)):
        for ours, theirs in zip(automatic.build_all_layer_point_grids(*args), amg.build_all_layer_point_grids(*args)):
            np.testing.assert_array_equal(ours, theirs)
    for size in ((384, 512), (1000, 733), (64, 64)):
        for layers, overlap in ((0, 512 / 1500), (2, 512 / 1500), (1, 0.0)):
            expected = amg.generate_crop_boxes(size, layers, overlap)
            assert automatic.generate_crop_boxes(size, layers, overlap) == expected


def test_nms_matches_torchvision():
    """Order and suppression of `batched_nms` (one category): random overlapping boxes with distinct scores, ties
    among up to 16 boxes (where torchvision's CPU sort is stable), and an IoU of float32(0.3), which exceeds the
    float64 threshold 0.3 (torchvision compares in float64)."""
    rng = np.random.default_rng(0)
    for n, tie_levels in ((300, None), (16, 3), (1, None)):
        corners = rng.integers(0, 200, (n, 2))
        boxes = np.concatenate([corners, corners + rng.integers(1, 120, (n, 2))], axis=1)
        scores = rng.random(n).astype(np.float32) if tie_levels is None else rng.integers(0, tie_levels, n) / 4
        for threshold in (0.3, 0.5, 0.7):
            expected = batched_nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32),
                                   torch.zeros(n), threshold).numpy()
            np.testing.assert_array_equal(automatic.nms_keep(boxes, scores, threshold, capacity=n + 7), expected)
    assert len(automatic.nms_keep(np.zeros((0, 4)), np.zeros(0), 0.7, capacity=8)) == 0
    boxes, scores = np.array([[0, 0, 10, 1], [0, 0, 3, 1]]), np.array([1.0, 0.5])  # IoU 3 / 10
    expected = batched_nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32),
                           torch.zeros(2), 0.3).numpy()
    np.testing.assert_array_equal(automatic.nms_keep(boxes, scores, 0.3, capacity=2), expected)
    assert expected.tolist() == [0]


def test_scores_boxes_and_filters_match_amg():
    """Upscaling, stability, boxes and the crop-edge filter of `select_masks` against the original's functions, on
    logits of one blob each (some at the crop's edges) in a crop at the image's right edge."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:32, :32]
    centres, radii = rng.uniform(0, 32, (12, 2, 1, 1)), rng.uniform(2, 8, (12, 1, 1))
    low_res = (6 - ((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) / radii**2).astype(np.float32)
    low_res[0] = -5  # empty at every threshold: NaN stability, box 0, 0, 0, 0
    crop_box, image_box, size = [100, 20, 300, 170], [0, 0, 300, 400], (150, 200)
    expected_logits = torch.nn.functional.interpolate(torch.from_numpy(low_res)[:, None], size, mode="bilinear",
                                                      align_corners=False)[:, 0]
    logits = automatic.upscale_masks(low_res, size=size)
    np.testing.assert_allclose(np.asarray(logits), expected_logits.numpy(), rtol=0, atol=1e-5)
    thresholds = np.asarray([0.5, 1.5, -0.5, 0.0, 0.0], np.float32)  # filters off: keep shows the edge filter
    iou, stability, boxes, keep, packed = automatic.select_masks(
        expected_logits.numpy(), np.ones(12, np.float32), np.ones(12, bool), np.asarray(crop_box, np.int32),
        np.asarray(image_box, np.int32), thresholds)
    np.testing.assert_array_equal(stability, amg.calculate_stability_score(expected_logits, 0.5, 1.0).numpy())
    masks = expected_logits > 0.5
    np.testing.assert_array_equal(boxes, amg.batched_mask_to_box(masks).numpy())
    np.testing.assert_array_equal(np.unpackbits(packed, axis=-1, count=size[1]).astype(bool), masks.numpy())
    expected_keep = ~amg.is_box_near_crop_edge(amg.batched_mask_to_box(masks), crop_box, image_box).numpy()
    assert 0 < expected_keep.sum() < 12
    np.testing.assert_array_equal(keep, expected_keep)


def test_rle_matches_amg():
    rng = np.random.default_rng(2)
    for mask in (rng.random((7, 5)) > 0.5, np.ones((3, 4), bool), np.zeros((4, 3), bool)):
        expected = amg.mask_to_rle_pytorch(torch.from_numpy(mask)[None])[0]
        assert rle_counts(mask) == expected["counts"]
        assert amg.area_from_rle(expected) == mask.sum()


# --------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def small_model():
    return Sam2Model.from_config(small_config())


BAD_ARGUMENTS = [  # arguments, error, the argument the message names
    (dict(points_per_side=None), ValueError, "points_per_side, point_grids: .* neither"),
    (dict(points_per_side=8, point_grids=[automatic.build_point_grid(4)]), ValueError, "points_per_side, point_grids"),
    (dict(points_per_side=0), ValueError, "points_per_side"),
    (dict(points_per_side=4.5), TypeError, "points_per_side"),
    (dict(points_per_side=2, crop_n_layers=2, crop_n_points_downscale_factor=2), ValueError, "points_per_side"),
    (dict(points_per_side=None, point_grids=[np.zeros((3, 3))]), ValueError, r"point_grids\[0\]"),
    (dict(points_per_side=None, point_grids=[np.full((3, 2), 1.5)]), ValueError, r"point_grids\[0\]"),
    (dict(points_per_side=None, point_grids=[np.zeros((3, 2))], crop_n_layers=1), ValueError, "point_grids"),
    (dict(pred_iou_thresh=1.5), ValueError, "pred_iou_thresh"),
    (dict(stability_score_thresh=-0.1), ValueError, "stability_score_thresh"),
    (dict(box_nms_thresh=2), ValueError, "box_nms_thresh"),
    (dict(crop_nms_thresh=float("nan")), ValueError, "crop_nms_thresh"),
    (dict(crop_overlap_ratio=1.2), ValueError, "crop_overlap_ratio"),
    (dict(stability_score_offset=-1), ValueError, "stability_score_offset"),
    (dict(min_mask_region_area=-5), ValueError, "min_mask_region_area"),
    (dict(points_per_batch=0), ValueError, "points_per_batch"),
    (dict(output_mode="rle"), ValueError, "output_mode"),
    (dict(use_m2m="yes"), TypeError, "use_m2m"),
]


@pytest.mark.parametrize("arguments, error, message", BAD_ARGUMENTS, ids=[str(a) for a, _, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_named(small_model, arguments, error, message):
    with pytest.raises(error, match=message):
        Sam2AutomaticMaskGenerator(small_model, **arguments)


def test_model_must_be_a_sam2_model():
    with pytest.raises(TypeError, match="model: expected a sam2_jax.Sam2Model"):
        Sam2AutomaticMaskGenerator("facebook/sam2.1-hiera-tiny")


@pytest.mark.parametrize("image, error", [
    (np.zeros((32, 32), np.uint8), ValueError),
    (np.zeros((1, 32, 32, 3), np.uint8), ValueError),
    (np.zeros((32, 32, 4), np.uint8), ValueError),
    (np.zeros((0, 32, 3), np.uint8), ValueError),
    (np.zeros((32, 32, 3), np.float32), TypeError),
    ([[[0, 0, 0]]], TypeError),
], ids=["rank 2", "rank 4", "RGBA", "empty", "float32", "list"])
def test_bad_images_are_named(small_model, image, error):
    with pytest.raises(error, match="image: expected"):
        Sam2AutomaticMaskGenerator(small_model, points_per_side=2).generate(image)
