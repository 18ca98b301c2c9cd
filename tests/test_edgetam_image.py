"""Parity of the EdgeTAM image model against transformers `EdgeTamModel` (timm's RepViT-M1 inside), every
parameter randomised (BatchNorm statistics included), at 256 px; save/load round trips both ways; init."""

import numpy as np
import pytest
import torch
import transformers

import jax
import jax.numpy as jnp
from sam2_jax import EdgeTamModel, Sam2Model
from sam2_jax.config import EdgeTamConfig, edgetam_small_config
from sam2_jax import weights
from reference import assert_close, assert_same_binary, randomize_, state_dict_numpy

pytest.importorskip("timm")

CONFIG = edgetam_small_config(256)
SIZE = CONFIG.prompt_encoder_config.image_size


@torch.no_grad()
def randomize_backbone_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """RepViT's convs at N(0, 1/(4 fan_in)) so that every branch carries weight, and its BatchNorms random: weight
    U(0.5, 1.5), bias and running_mean N(0, 0.3), running_var U(0.5, 2) (positive)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.vision_encoder.backbone.modules():
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.copy_(0.5 * torch.randn(module.weight.shape, generator=gen) / fan_in ** 0.5)
            if module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
        elif isinstance(module, torch.nn.BatchNorm2d):
            c = module.num_features
            module.weight.copy_(0.5 + torch.rand(c, generator=gen))
            module.bias.copy_(0.3 * torch.randn(c, generator=gen))
            module.running_mean.copy_(0.3 * torch.randn(c, generator=gen))
            module.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
    return model


def make_reference(seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(0)
    hf = transformers.EdgeTamModel(transformers.EdgeTamConfig.from_dict(CONFIG.to_dict())).eval()
    return randomize_backbone_(randomize_(hf, seed=seed), seed=seed)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edgetam")
    hf = make_reference()
    hf.save_pretrained(folder)
    return hf, EdgeTamModel.from_pretrained(folder), folder


def _pixels(batch=1, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)


def test_vision_encoder_matches_transformers(models):
    hf, ours, _ = models
    pixels = _pixels()
    with torch.no_grad():
        ref = hf.vision_encoder(torch.from_numpy(pixels))
    with jax.default_matmul_precision("highest"):
        out = jax.jit(lambda p, x: ours.module.apply({"params": p}, x, method=lambda m, x: m.vision_encoder(x)))(
            ours.params, jnp.transpose(pixels, (0, 2, 3, 1)))
    assert len(out["fpn_hidden_states"]) == len(ref.fpn_hidden_states) == 3
    for i, (a, b) in enumerate(zip(out["fpn_hidden_states"], ref.fpn_hidden_states)):
        assert_close(f"fpn_hidden_states[{i}]", jnp.transpose(a, (0, 3, 1, 2)), b)
    for i, (a, b) in enumerate(zip(out["fpn_position_encoding"], ref.fpn_position_encoding)):
        assert_close(f"fpn_position_encoding[{i}]", jnp.transpose(a, (2, 0, 1))[None], b)
    assert_close("last_hidden_state", out["last_hidden_state"], ref.last_hidden_state)
    assert out["last_hidden_state"].shape == (1, SIZE // 32, SIZE // 32, 384)
    stages = hf.vision_encoder.backbone(torch.from_numpy(pixels)).last_hidden_state
    for i, (a, b) in enumerate(zip(out["intermediate_hidden_states"], stages)):
        assert_close(f"RepViT stage {i}", jnp.transpose(a, (0, 3, 1, 2)), b)


CASES = {  # prompts and multimask_output
    "clicks": (True, dict(input_points=np.array([[[[60.0, 90.0], [10.0, 200.0]]]], np.float32),
                   input_labels=np.array([[[1, 0]]]))),
    "box": (False, dict(input_boxes=np.array([[[30.0, 40.0, 180.0, 200.5]]], np.float32))),
    "mask + click": (True, dict(
        input_points=np.array([[[[60.0, 90.0]]]], np.float32), input_labels=np.array([[[1]]]),
        input_masks=np.random.default_rng(3).standard_normal((1, 1, 64, 64)).astype(np.float32))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_image_model_matches_transformers(models, case):
    hf, ours, _ = models
    (multimask, prompts), pixels = CASES[case], _pixels()
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(pixels), multimask_output=multimask,
                 **{k: torch.from_numpy(np.asarray(v)) for k, v in prompts.items()})
    with jax.default_matmul_precision("highest"):
        out = ours(pixel_values=pixels, multimask_output=multimask, **prompts)
    name = f"{case}[multimask={multimask}]"
    assert_close(f"{name} pred_masks", out.pred_masks, ref.pred_masks)
    assert_same_binary(f"{name} pred_masks", out.pred_masks, ref.pred_masks)
    assert_close(f"{name} iou_scores", out.iou_scores, ref.iou_scores, atol=1e-5)
    assert_close(f"{name} object_score_logits", out.object_score_logits, ref.object_score_logits)


def test_save_load_round_trips_are_bit_identical(models, tmp_path):
    hf, ours, _ = models
    ours.save_pretrained(tmp_path)
    theirs, info = transformers.EdgeTamModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    original = hf.state_dict()
    for key, value in theirs.state_dict().items():  # every key, BatchNorm counters included
        assert torch.equal(value, original[key]), key
    again = EdgeTamModel.from_pretrained(tmp_path)
    for a, b in zip(jax.tree_util.tree_leaves(ours.params), jax.tree_util.tree_leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert set(weights.read_state_dict(tmp_path)) == set(original)


def test_sam2_model_loads_an_edgetam_checkpoint(models):
    _, _, folder = models
    model = Sam2Model.from_pretrained(folder)
    assert isinstance(model.config, EdgeTamConfig) and model.config == CONFIG
    assert "backbone.timm_model" in model.params["vision_encoder"]  # the RepViT encoder


def test_loading_is_strict(models, tmp_path):
    hf, _, _ = models
    state = {k: v for k, v in state_dict_numpy(hf).items() if not k.endswith("stem.conv1.bn.running_var")}
    with pytest.raises(ValueError, match=r"1 missing: vision_encoder\.backbone\.timm_model\.stem\.conv1\.bn\."
                                         r"running_var"):
        weights.state_dict_to_params(state, EdgeTamModel.abstract_params(CONFIG))


def test_init_as_transformers():
    params = EdgeTamModel(CONFIG).params
    state = weights.params_to_state_dict(params)
    prefix = "vision_encoder.backbone.timm_model.stages_2.blocks.0."
    assert np.all(state[prefix + "token_mixer.conv.bn.running_mean"] == 0)
    assert np.all(state[prefix + "token_mixer.conv.bn.running_var"] == 1)
    assert np.all(state[prefix + "channel_mixer.conv2.bn.weight"] == 1)
    assert np.all(state[prefix + "channel_mixer.conv2.bn.bias"] == 0)
    assert abs(float(np.std(state[prefix + "channel_mixer.conv1.c.weight"])) - 0.02) < 0.002
    assert state[prefix + "channel_mixer.conv1.bn.num_batches_tracked"].dtype == np.int64


def test_edgetam_model_takes_edgetam_configs_only():
    from sam2_jax.config import small_config, replace
    with pytest.raises(ValueError, match="config: EdgeTamModel takes EdgeTAM configs"):
        EdgeTamModel.abstract_params(replace(small_config(), model_type="sam2"))


def test_image_model_loads_a_video_checkpoint(models, tmp_path):
    hf, ours, _ = models
    video = transformers.EdgeTamVideoModel(transformers.EdgeTamVideoConfig.from_dict(
        {**CONFIG.to_dict(), "model_type": "edgetam_video"}))
    video.load_state_dict(hf.state_dict(), strict=False)  # the image parts; the perceiver and memory stay random
    video.save_pretrained(tmp_path)
    model = EdgeTamModel.from_pretrained(tmp_path)  # its video tensors ignored, as transformers ignores them
    assert model.config == CONFIG
    for a, b in zip(jax.tree_util.tree_leaves(ours.params), jax.tree_util.tree_leaves(model.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
