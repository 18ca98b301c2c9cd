"""The automatic mask generator and the prompt-free tracker on EdgeTAM.

No original EdgeTAM package exists, and transformers' mask-generation pipeline, which runs `EdgeTamModel`, is its
own algorithm (SAM 1's pipeline: other preprocessing, filters and NMS), not sam2's `SAM2AutomaticMaskGenerator`
that `Sam2AutomaticMaskGenerator` reproduces. The reference here is the original
sam2 generator with its image predictor running transformers' `EdgeTamModel` (`EdgeTamPredictor`: the predictor's
own preprocessing and post-processing, transformers' encoder, prompt encoder and mask decoder), every parameter
randomised (RepViT's BatchNorm statistics included), at 256 px, on test_automatic's image and settings; the
mask and IoU heads' last layers are scaled up as there, to spread the random model's masks and scores.

The prompt-free tracker is checked as test_automatic_video checks it on SAM 2: its seeds are the generator's
masks, and its tracks equal the session API's given the same masks as prompts.
"""

from __future__ import annotations

import types

import jax
import numpy as np
import pytest
import torch
import transformers
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.sam2_image_predictor import SAM2ImagePredictor

from reference import randomize_
from sam2_jax import (EdgeTamModel, EdgeTamVideoModel, Sam2AutomaticMaskGenerator, Sam2AutomaticVideoTracker,
                      Sam2VideoProcessor)
from sam2_jax.automatic.video import image_model
from sam2_jax.config import EdgeTamConfig, edgetam_small_config
from sam2_jax.io.clips import generate_clip
from test_automatic import (LOW_THRESHOLDS, SETTINGS, assert_same_records, connected_components, memoised,
                            shapes_image)
from test_commands_edgetam import small_edgetam_video_config
from test_edgetam_image import randomize_backbone_

pytest.importorskip("timm")

SIZE = 256


class EdgeTamPredictor(SAM2ImagePredictor):
    """The original `SAM2ImagePredictor` with transformers' `EdgeTamModel` as its model: `set_image` preprocesses
    as the original (SAM2Transforms) and encodes with `get_image_embeddings`; `_predict` decodes with the model's
    forward on those embeddings (points already in the input frame, as the generator gives them), then upscales
    and clamps as the original `_predict` does."""

    def __init__(self, model: torch.nn.Module, embeddings: dict, **kwargs):
        super().__init__(types.SimpleNamespace(image_size=SIZE, device=torch.device("cpu")), **kwargs)
        self.edgetam, self.embeddings = model, embeddings  # embeddings: each crop's, kept across generators

    def set_image(self, image: np.ndarray) -> None:
        self.reset_predictor()
        self._orig_hw = [image.shape[:2]]
        key = (image.shape, image.tobytes())
        if key not in self.embeddings:
            self.embeddings[key] = self.edgetam.get_image_embeddings(self._transforms(image)[None])
        self._features = self.embeddings[key]
        self._is_image_set = True

    def _predict(self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True,
                 return_logits=False, img_idx=-1):
        assert boxes is None  # the generator gives points only
        if mask_input is None:  # one image, a point batch
            out = self.edgetam(image_embeddings=self._features, input_points=point_coords[None],
                               input_labels=point_labels[None], multimask_output=multimask_output)
            low_res, iou = out.pred_masks[0], out.iou_scores[0]
        else:  # one image per point, each with its mask prompt (refine_with_m2m)
            count = point_coords.shape[0]
            out = self.edgetam(image_embeddings=[e.expand(count, -1, -1, -1) for e in self._features],
                               input_points=point_coords[:, None], input_labels=point_labels[:, None],
                               input_masks=mask_input, multimask_output=multimask_output)
            low_res, iou = out.pred_masks[:, 0], out.iou_scores[:, 0]
        masks = self._transforms.postprocess_masks(low_res, self._orig_hw[img_idx])
        low_res = torch.clamp(low_res, -32.0, 32.0)
        return (masks if return_logits else masks > self.mask_threshold), iou, low_res


def reference_generator(model: torch.nn.Module, embeddings: dict, **settings) -> SAM2AutomaticMaskGenerator:
    """The original generator on transformers' EdgeTAM (`EdgeTamPredictor`)."""
    generator = SAM2AutomaticMaskGenerator(types.SimpleNamespace(image_size=SIZE, device=torch.device("cpu")),
                                           **settings)
    area = settings.get("min_mask_region_area", 0.0)
    generator.predictor = EdgeTamPredictor(model, embeddings, max_hole_area=area, max_sprinkle_area=area)
    return generator


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """transformers' EdgeTamModel (every parameter random, heads spread) and sam2-jax's of its saved folder;
    torch on one thread (see test_automatic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    hf = transformers.EdgeTamModel(transformers.EdgeTamConfig.from_dict(edgetam_small_config(SIZE).to_dict())).eval()
    hf = randomize_backbone_(randomize_(hf, seed=3), seed=3)
    with torch.no_grad():
        for name, param in hf.named_parameters():
            if name.startswith("mask_decoder.output_hypernetworks_mlps.") and ".proj_out." in name:
                param.mul_(300)
            if name.startswith("mask_decoder.iou_prediction_head.proj_out."):
                param.mul_(10)
    folder = tmp_path_factory.mktemp("automatic_edgetam")
    hf.save_pretrained(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Sam2AutomaticMaskGenerator, "_embed", memoised(Sam2AutomaticMaskGenerator._embed, {}))
        patch.setattr("sam2.utils.misc.get_connected_components", connected_components)
        yield types.SimpleNamespace(hf=hf, ours=EdgeTamModel.from_pretrained(folder), embeddings={})
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(SETTINGS))
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools under numpy 2
def test_generate_matches_the_original_generator_on_transformers_edgetam(models, name):
    settings = {**LOW_THRESHOLDS, **SETTINGS[name]}
    image = shapes_image(192, 256)
    with torch.no_grad():
        expected = reference_generator(models.hf, models.embeddings, **settings).generate(image)
    with jax.default_matmul_precision("highest"):
        got = Sam2AutomaticMaskGenerator(models.ours, **settings).generate(image)
    assert_same_records(got, expected, f"edgetam {name}")


# ------------------------------------------------------------------------------------- prompt-free video
APPEAR = 2  # the generator runs on frames 0 and APPEAR (auto_every)
NUM_FRAMES = 5
VIDEO_SETTINGS = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


@pytest.fixture(scope="module")
def video_model():
    """A random sam2-jax EdgeTAM video model at 128 px (every tensor random, none zero)."""
    return EdgeTamVideoModel.from_config(small_edgetam_video_config(), seed=4)


@pytest.fixture(scope="module")
def video():
    return generate_clip(5, NUM_FRAMES, 96, 128, max_objects=3, min_objects=2).frames


@pytest.fixture(scope="module")
def tracked(video_model, video):
    processor = Sam2VideoProcessor(size=128)
    generator = Sam2AutomaticMaskGenerator(image_model(video_model), **VIDEO_SETTINGS)
    tracker = Sam2AutomaticVideoTracker(video_model, generator, auto_every=APPEAR, processor=processor)
    with jax.default_matmul_precision("highest"):
        outputs = list(tracker.propagate(processor.init_video_session(video=video)))
    return tracker, outputs, processor


def test_image_model_of_an_edgetam_video_model_is_edgetam(video_model):
    model = image_model(video_model)
    assert isinstance(model.config, EdgeTamConfig) and model.config.model_type == "edgetam"
    leaves = jax.tree_util.tree_leaves
    assert all(np.array_equal(a, b) for a, b in zip(leaves(model.params["vision_encoder"]),
                                                     leaves(video_model.params["vision_encoder"])))


def test_seeds_are_the_generators_masks_one_per_object(tracked, video):
    """On frame 0, best first, a mask is taken when its IoU with every mask taken before it is below 0.5."""
    tracker, outputs, _ = tracked
    records = [r["segmentation"] for r in tracker.generator.generate(video[0])]
    expected = []
    for mask in records:
        if all((mask & other).sum() / (mask | other).sum() < 0.5 for other in expected):
            expected.append(mask)
    seeds = [s.record["segmentation"] for s in tracker.seeds if s.frame_idx == 0]
    assert len(seeds) == len(expected) >= 2
    assert all(np.array_equal(a, b) for a, b in zip(seeds, expected))
    assert any(s.frame_idx == APPEAR for s in tracker.seeds)  # the second run of the generator found more
    assert [o.frame_idx for o in outputs] == list(range(NUM_FRAMES))
    for o in outputs:
        assert o.object_ids == [s.obj_id for s in tracker.seeds if s.frame_idx <= o.frame_idx]


def test_tracks_equal_the_edgetam_session_with_the_same_masks(tracked, video_model, video):
    """The objects of frame 0, given to a fresh session as mask prompts and propagated in one call, get the
    tracker's masks on every frame, though the tracker stopped at frame APPEAR to look for new objects."""
    tracker, outputs, processor = tracked
    seeds = [s for s in tracker.seeds if s.frame_idx == 0]
    session = processor.init_video_session(video=video)
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=[s.obj_id for s in seeds],
                                              input_masks=[s.record["segmentation"] for s in seeds])
    with jax.default_matmul_precision("highest"):
        expected = {o.frame_idx: dict(zip(o.object_ids, np.asarray(o.pred_masks)[:, 0]))
                    for o in video_model.propagate_in_video_iterator(session, start_frame_idx=0)}
    worst = 0.0
    for o in outputs:
        got = dict(zip(o.object_ids, np.asarray(o.pred_masks)[:, 0]))
        for s in seeds:
            worst = max(worst, float(np.abs(got[s.obj_id] - expected[o.frame_idx][s.obj_id]).max()))
    print(f"EDGETAM prompt-free: {len(tracker.seeds)} objects, max |tracker - session| {worst:.3g}")
    assert worst <= 1e-4
