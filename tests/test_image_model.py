"""Parity of the image model against transformers `Sam2Model` (randomised weights), save/load round trips,
and bad input."""

import numpy as np
import pytest
import torch
import transformers

import jax
from sam2_jax import Sam2Model
from sam2_jax.config import PRESETS, replace, small_config
from sam2_jax import weights
from reference import assert_close, assert_same_binary, hf_config, randomize_, state_dict_numpy

CONFIG = replace(small_config(), model_type="sam2")
SIZE = CONFIG.prompt_encoder_config.image_size


def make_models(folder, dtype="float32"):
    """transformers `Sam2Model` with randomised weights, saved to `folder`, and sam2-jax's model loaded from it."""
    torch.manual_seed(0)
    hf = randomize_(transformers.Sam2Model(hf_config(CONFIG)).eval(), seed=1)
    hf.save_pretrained(folder)
    return hf, Sam2Model.from_pretrained(folder, dtype=dtype), folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("small"))


def _pixels(batch=1, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)


def _run_both(models, name, multimask, **prompts):
    hf, ours, _ = models
    pixel_values = prompts.pop("pixel_values", _pixels())
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(pixel_values).to(hf.device), multimask_output=multimask,
                 **{k: torch.from_numpy(np.asarray(v)).to(hf.device) for k, v in prompts.items()})
    with jax.default_matmul_precision("highest"):
        out = ours(pixel_values=pixel_values, multimask_output=multimask, **prompts)
    scale_name = f"{name}[multimask={multimask}]"
    assert_close(f"{scale_name} pred_masks", out.pred_masks, ref.pred_masks)
    assert_same_binary(f"{scale_name} pred_masks", out.pred_masks, ref.pred_masks)
    assert_close(f"{scale_name} iou_scores", out.iou_scores, ref.iou_scores, atol=1e-5)
    assert_close(f"{scale_name} object_score_logits", out.object_score_logits, ref.object_score_logits)
    for i, (a, b) in enumerate(zip(out.image_embeddings, ref.image_embeddings)):
        assert_close(f"{scale_name} image_embeddings[{i}]", a, b)
    return out, ref


RAGGED_POINTS = [[[10.0, 20.0], [100.0, 30.5], [200.0, 250.0]], [[128.0, 64.0], [-10.0, -10.0], [-10.0, -10.0]]]
RAGGED_LABELS = [[1, 0, 1], [1, -10, -10]]

CASES = {
    "one click": dict(input_points=np.array([[[[60.0, 90.0]]]], np.float32), input_labels=np.array([[[1]]])),
    "clicks with negatives": dict(input_points=np.array([[[[60.0, 90.0], [10.0, 200.0], [250.0, 3.0]]]], np.float32),
                                  input_labels=np.array([[[1, 0, 0]]])),
    "box": dict(input_boxes=np.array([[[30.0, 40.0, 180.0, 200.5]]], np.float32)),
    "box + click": dict(input_points=np.array([[[[100.0, 100.0]]]], np.float32), input_labels=np.array([[[1]]]),
                        input_boxes=np.array([[[30.0, 40.0, 180.0, 200.5]]], np.float32)),
    "ragged objects": dict(input_points=np.array([RAGGED_POINTS], np.float32), input_labels=np.array([RAGGED_LABELS])),
    "mask + click": dict(input_points=np.array([[[[60.0, 90.0]]]], np.float32), input_labels=np.array([[[1]]]),
                         input_masks=np.random.default_rng(3).standard_normal((1, 1, 64, 64)).astype(np.float32)),
    "mask of another size": dict(input_masks=(np.random.default_rng(4).random((1, 1, 256, 256)) > 0.5).astype(
        np.float32)),
    "no prompt": dict(),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_small_config_matches_transformers(models, case, multimask):
    _run_both(models, case, multimask, **CASES[case])


def test_batch_of_two_images(models):
    points = np.array([[[[60.0, 90.0]]], [[[120.0, 30.0]]]], np.float32)
    _run_both(models, "two images", True, pixel_values=_pixels(2, seed=5), input_points=points,
              input_labels=np.array([[[1]], [[1]]]))


def test_reused_image_embeddings_give_the_same_masks(models):
    _, ours, _ = models
    pixel_values = _pixels()
    prompt = CASES["clicks with negatives"]
    with jax.default_matmul_precision("highest"):
        direct = ours(pixel_values=pixel_values, **prompt)
        embeddings = ours.get_image_embeddings(pixel_values)
        reused = ours(image_embeddings=embeddings, **prompt)
    np.testing.assert_array_equal(np.asarray(direct.pred_masks), np.asarray(reused.pred_masks))


@pytest.mark.parametrize("sharpen", [1.0, 1000.0])
def test_stability_fallback_both_branches(sharpen, tmp_path):
    """Single-mask output keeps slot 0 when it is stable, else falls back to the best multimask.

    Random weights give faint logits (unstable), so one variant scales the slot-0 hypernetwork up to make
    slot 0 stable; each variant asserts which branch transformers took and compares with it.
    """
    torch.manual_seed(0)
    hf = randomize_(transformers.Sam2Model(hf_config(CONFIG)).eval(), seed=1)
    with torch.no_grad():
        hf.mask_decoder.output_hypernetworks_mlps[0].proj_out.weight.mul_(sharpen)
    hf.save_pretrained(tmp_path)
    models = (hf, Sam2Model.from_pretrained(tmp_path), tmp_path)
    pixels = _pixels(seed=4)
    prompt = {k: torch.from_numpy(v) for k, v in CASES["box"].items()}
    with torch.no_grad():
        single = hf(pixel_values=torch.from_numpy(pixels), multimask_output=False, **prompt).pred_masks
        multi = hf(pixel_values=torch.from_numpy(pixels), multimask_output=True, **prompt).pred_masks
    fell_back = any(torch.equal(single[0, 0, 0], multi[0, 0, i]) for i in range(3))
    assert fell_back == (sharpen == 1.0)
    _run_both(models, f"stability sharpen={sharpen}", False, pixel_values=pixels, **CASES["box"])


def test_save_load_round_trip_is_bit_identical_and_loads_in_transformers(models, tmp_path):
    hf, ours, folder = models
    ours.save_pretrained(tmp_path)
    again = Sam2Model.from_pretrained(tmp_path)
    for a, b in zip(jax.tree_util.tree_leaves(ours.params), jax.tree_util.tree_leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    theirs, info = transformers.Sam2Model.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    original = state_dict_numpy(hf)
    for key, value in state_dict_numpy(theirs).items():
        np.testing.assert_array_equal(value, original[key], err_msg=key)


def test_image_model_loads_a_video_checkpoint(tmp_path):
    video_cfg = small_config()
    hf = randomize_(transformers.Sam2VideoModel(hf_config(video_cfg)), seed=2)
    hf.save_pretrained(tmp_path)
    model = Sam2Model.from_pretrained(tmp_path)
    sd = state_dict_numpy(hf)
    assert model.params["no_memory_embedding"].shape == sd["no_memory_embedding"].shape
    np.testing.assert_array_equal(np.asarray(model.params["no_memory_embedding"]), sd["no_memory_embedding"])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_param_tree_matches_transformers_keys_for_every_preset(name):
    cfg = replace(PRESETS[name], model_type="sam2")
    with torch.device("meta"):
        hf = transformers.Sam2Model(hf_config(cfg))
    ours = weights.params_to_state_dict(jax.tree_util.tree_map(
        lambda s: np.zeros(s.shape, np.float32), Sam2Model.abstract_params(cfg)))
    theirs = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    assert {k: v.shape for k, v in ours.items()} == theirs


@pytest.mark.slow
def test_full_tiny_at_1024_matches_transformers(tmp_path):
    cfg = replace(PRESETS["sam2.1-hiera-tiny"], model_type="sam2")
    torch.manual_seed(0)
    hf = randomize_(transformers.Sam2Model(hf_config(cfg)).eval(), seed=3)
    hf.save_pretrained(tmp_path)
    ours = Sam2Model.from_pretrained(tmp_path)
    pixel_values = np.random.default_rng(7).standard_normal((1, 3, 1024, 1024)).astype(np.float32)
    prompt = dict(input_points=np.array([[[[500.0, 380.0], [100.0, 900.0]]]], np.float32),
                  input_labels=np.array([[[1, 0]]]))
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(pixel_values), **{k: torch.from_numpy(v) for k, v in prompt.items()})
    with jax.default_matmul_precision("highest"):
        out = ours(pixel_values=pixel_values, **prompt)
    assert_close("tiny@1024 pred_masks", out.pred_masks, ref.pred_masks)
    assert_same_binary("tiny@1024 pred_masks", out.pred_masks, ref.pred_masks)
    assert_close("tiny@1024 iou_scores", out.iou_scores, ref.iou_scores, atol=1e-5)
    assert_close("tiny@1024 object_score_logits", out.object_score_logits, ref.object_score_logits)
