"""Configs: transformers' classes, arguments and defaults; config.json round trips both ways, every field."""

import dataclasses
import json

import pytest
import torch
import transformers

import sam2_jax
from sam2_jax import weights
from sam2_jax.config import (PRESETS, EdgeTamConfig, EdgeTamVideoConfig, EdgeTamVisionConfig, FrozenDict, Sam2Config, Sam2HieraDetConfig, Sam2MaskDecoderConfig,
                             Sam2PromptEncoderConfig, Sam2VideoConfig, Sam2VideoMaskDecoderConfig,
                             Sam2VideoPromptEncoderConfig, Sam2VisionConfig, config_from_dict, replace, small_config)
from reference import hf_config

# transformers' generic PreTrainedConfig keys, which SAM 2 does not use: not fields of ours.
GENERIC = {"transformers_version", "architectures", "output_hidden_states", "return_dict", "dtype",
           "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type", "_name_or_path",
           "output_attentions"}
CLASSES = ["Sam2Config", "Sam2VisionConfig", "Sam2HieraDetConfig", "Sam2PromptEncoderConfig", "Sam2MaskDecoderConfig",
           "Sam2VideoConfig", "Sam2VideoPromptEncoderConfig", "Sam2VideoMaskDecoderConfig"]


def _specific(d: dict) -> dict:
    """A transformers config dict without its generic keys, nested dicts included."""
    return {k: _specific(v) if isinstance(v, dict) and k != "rope_parameters" else v
            for k, v in d.items() if k not in GENERIC}


@pytest.mark.parametrize("name", CLASSES)
def test_defaults_and_fields_match_transformers(name):
    ours, theirs = getattr(sam2_jax, name)(), getattr(transformers, name)()
    assert _specific(ours.to_dict()) == _specific(theirs.to_dict())


@pytest.mark.parametrize("name", sorted(PRESETS) + ["small"])
def test_video_config_json_both_ways(name, tmp_path):
    cfg = small_config() if name == "small" else PRESETS[name]
    cfg.save_pretrained(tmp_path / "ours")  # ours -> transformers
    theirs = transformers.Sam2VideoConfig.from_pretrained(tmp_path / "ours")
    assert _specific(theirs.to_dict()) == _specific(cfg.to_dict())
    theirs.save_pretrained(tmp_path / "theirs")  # transformers -> ours
    assert Sam2VideoConfig.from_pretrained(tmp_path / "theirs") == cfg
    assert json.loads(cfg.to_json_string()) == cfg.to_dict()


@pytest.mark.parametrize("name", ["sam2.1-hiera-tiny", "sam2-hiera-base-plus"])
def test_image_config_json_both_ways(name, tmp_path):
    cfg = replace(PRESETS[name], model_type="sam2")
    assert isinstance(cfg, Sam2Config) and cfg.model_type == "sam2"
    cfg.save_pretrained(tmp_path / "ours")
    theirs = transformers.Sam2Config.from_pretrained(tmp_path / "ours")
    assert _specific(theirs.to_dict()) == _specific(cfg.to_dict())
    theirs.save_pretrained(tmp_path / "theirs")
    assert Sam2Config.from_pretrained(tmp_path / "theirs") == cfg
    # A video checkpoint's config read as the image model's (as transformers' Sam2Model does).
    assert Sam2Config.from_dict(PRESETS[name].to_dict()) == cfg


def test_constructor_arguments_as_transformers():
    kwargs = dict(num_maskmem=5, vision_config={"backbone_config": {"hidden_size": 32, "image_size": [512, 512],
                                                                     "model_type": "sam2_hiera_det_model"}},
                  mask_decoder_config=Sam2MaskDecoderConfig(dynamic_multimask_stability_thresh=0.9),
                  prompt_encoder_config={"image_size": 512}, memory_attention_rope_feat_sizes=[32, 32],
                  rope_parameters={"rope_theta": 5000.0}, initializer_range=0.01)
    ours = Sam2VideoConfig(**kwargs)
    theirs = transformers.Sam2VideoConfig(**{**kwargs, "mask_decoder_config": transformers.Sam2VideoMaskDecoderConfig(
        dynamic_multimask_stability_thresh=0.9), "vision_config": {  # transformers needs the model_type here
            **kwargs["vision_config"], "model_type": "sam2_vision_model"}})
    assert _specific(ours.to_dict()) == _specific(theirs.to_dict())
    assert isinstance(ours.mask_decoder_config, Sam2VideoMaskDecoderConfig)
    assert isinstance(ours.prompt_encoder_config, Sam2VideoPromptEncoderConfig)
    assert ours.vision_config.backbone_config.image_size == (512, 512)
    assert ours.memory_attention_rope_theta == 5000.0 and ours.rope_parameters["rope_type"] == "axial"
    assert hash(ours) == hash(Sam2VideoConfig(**kwargs)) and ours == Sam2VideoConfig(**kwargs)
    vision = Sam2VisionConfig(backbone_config=Sam2HieraDetConfig(), backbone_feature_sizes=[[8, 8], [4, 4], [2, 2]])
    assert vision.backbone_feature_sizes == ((8, 8), (4, 4), (2, 2))
    image = Sam2Config(vision, Sam2PromptEncoderConfig(), Sam2MaskDecoderConfig())
    assert image.vision_config == vision and image == Sam2Config(vision_config=vision.to_dict())


def test_sub_configs_given_as_transformers_objects():
    theirs = transformers.Sam2VisionConfig(backbone_config={"model_type": "sam2_hiera_det_model", "hidden_size": 32})
    ours = Sam2VideoConfig(vision_config=theirs)
    assert ours.vision_config.backbone_config.hidden_size == 32
    assert _specific(ours.vision_config.to_dict()) == _specific(theirs.to_dict())


def test_older_config_json_with_rope_theta():
    data = {**small_config().to_dict(), "memory_attention_rope_theta": 100.0}
    del data["rope_parameters"]
    assert Sam2VideoConfig.from_dict(data).memory_attention_rope_theta == 100.0


def test_from_pretrained_packaged_and_hub_names():
    assert Sam2VideoConfig.from_pretrained("facebook/sam2.1-hiera-tiny") == PRESETS["sam2.1-hiera-tiny"]
    assert Sam2VideoConfig.from_pretrained("sam2-jax-shapes").image_size == 128
    assert Sam2VideoConfig.from_pretrained("facebook/sam2.1-hiera-tiny", num_maskmem=5).num_maskmem == 5


# 2.0 lacks the three SAM 2.1 tensors: no_obj_embed_spatial (64) and obj_ptr_tpos_proj (256x64 + 64).
@pytest.mark.parametrize("name,params", [("sam2.1-hiera-tiny", 38_963_010), ("sam2-hiera-tiny", 38_963_010 - 64 - (256 * 64 + 64))])
def test_tiny_parameter_count_matches_transformers(name, params):
    with torch.device("meta"):
        model = transformers.Sam2VideoModel(hf_config(PRESETS[name]))
    assert sum(p.numel() for p in model.state_dict().values() if p.is_floating_point()) == params


def test_version_flags():
    assert PRESETS["sam2.1-hiera-large"].version == "2.1"
    assert PRESETS["sam2-hiera-large"].version == "2.0"
    assert Sam2VideoConfig.from_preset("facebook/sam2.1-hiera-base-plus") == PRESETS["sam2.1-hiera-base-plus"]


@pytest.mark.parametrize("cls, bad, match", [
    (Sam2VideoConfig, {"model_type": "sam"}, "model_type"),
    (Sam2Config, {"model_type": "sam2", "vision_config": {"hidden_act": "relu"}}, "hidden_act"),
    (Sam2VideoConfig, {"rope_parameters": {"rope_type": "default"}}, "rope_type"),
    (Sam2VideoConfig, {"prompt_encoder_config": {"image_size": [512, 256]}}, "square"),
])
def test_bad_configs(cls, bad, match):
    with pytest.raises(ValueError, match=match):
        cls.from_dict(bad)


def test_bad_sub_config_type():
    with pytest.raises(TypeError, match="Sam2VideoConfig.vision_config: expected a dict or a Sam2VisionConfig"):
        Sam2VideoConfig(vision_config="tiny")
    with pytest.raises(ValueError, match="pretrained_model_name_or_path"):
        Sam2VideoConfig.from_pretrained("no-such-model")


def test_unknown_preset():
    with pytest.raises(ValueError, match="name: expected one of"):
        Sam2VideoConfig.from_preset("sam3-hiera-tiny")


def test_configs_are_frozen_hashable_static_args():
    assert hash(small_config()) == hash(small_config())
    assert dataclasses.is_dataclass(small_config())
    with pytest.raises(dataclasses.FrozenInstanceError):
        small_config().num_maskmem = 3
    with pytest.raises(TypeError, match="read-only"):
        small_config().rope_parameters["rope_theta"] = 1.0
    assert isinstance(small_config().rope_parameters, FrozenDict)


# ------------------------------------------------------------------------------------------- EdgeTAM
EDGETAM_CLASSES = ["EdgeTamPromptEncoderConfig", "EdgeTamMaskDecoderConfig", "EdgeTamVideoPromptEncoderConfig",
                   "EdgeTamVideoMaskDecoderConfig"]


def _hf_repvit_vision(**kwargs):
    """transformers' EdgeTamVisionConfig with the RepViT-M1 backbone (its bare default names resnet50)."""
    backbone = transformers.TimmWrapperConfig(architecture="repvit_m1", model_args={
        "in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]})
    return transformers.EdgeTamVisionConfig(backbone_config=backbone, **kwargs)


@pytest.mark.parametrize("name", EDGETAM_CLASSES)
def test_edgetam_sub_config_defaults_match_transformers(name):
    ours, theirs = getattr(sam2_jax, name)(), getattr(transformers, name)()
    assert _specific(ours.to_dict()) == _specific(theirs.to_dict())


def test_edgetam_defaults_match_transformers_with_repvit():
    vision = _hf_repvit_vision()
    assert _specific(EdgeTamVisionConfig().to_dict()) == _specific(vision.to_dict())
    assert _specific(EdgeTamConfig().to_dict()) == _specific(transformers.EdgeTamConfig(vision_config=vision).to_dict())
    theirs = transformers.EdgeTamVideoConfig(vision_config=vision)
    assert _specific(EdgeTamVideoConfig().to_dict()) == _specific(theirs.to_dict())
    assert EdgeTamVideoConfig().memory_attention_num_layers == 2
    assert EdgeTamVideoConfig().memory_attention_rope_k_sizes == (16, 16)


def test_edgetam_config_json_both_ways(tmp_path):
    vision = _hf_repvit_vision(backbone_feature_sizes=[[128, 128], [64, 64], [32, 32]], fpn_hidden_size=128)
    theirs = transformers.EdgeTamVideoConfig(
        vision_config=vision, prompt_encoder_config={"image_size": 512}, image_size=512, num_maskmem=5,
        memory_attention_num_layers=3, memory_attention_mlp_hidden_size=1024, memory_attention_rope_k_sizes=[8, 8],
        memory_attention_rope_feat_sizes=[32, 32], perceiver_resampler_num_latents=128,
        perceiver_resampler_num_latents_2d=64, perceiver_resampler_num_layers=1, rope_parameters={"rope_theta": 500.0})
    theirs.save_pretrained(tmp_path / "theirs")  # transformers -> ours, every field
    ours = EdgeTamVideoConfig.from_pretrained(tmp_path / "theirs")
    assert _specific(ours.to_dict()) == _specific(theirs.to_dict())
    assert ours.memory_attention_rope_k_sizes == (8, 8) and ours.memory_attention_rope_theta == 500.0
    assert isinstance(weights.read_config(tmp_path / "theirs"), EdgeTamVideoConfig)
    ours.save_pretrained(tmp_path / "ours")  # ours -> transformers -> ours
    back = transformers.EdgeTamVideoConfig.from_pretrained(tmp_path / "ours")
    assert _specific(back.to_dict()) == _specific(theirs.to_dict())
    assert back.vision_config.backbone_config.architecture == "repvit_m1"
    assert EdgeTamVideoConfig.from_pretrained(tmp_path / "ours") == ours
    image = replace(ours, model_type="edgetam")
    assert isinstance(image, EdgeTamConfig) and image == EdgeTamConfig.from_dict(ours.to_dict())
    image.save_pretrained(tmp_path / "image")
    theirs_image = transformers.EdgeTamConfig.from_pretrained(tmp_path / "image")
    assert _specific(theirs_image.to_dict()) == _specific(image.to_dict())
    assert config_from_dict(image.to_dict()) == image and hash(image) == hash(EdgeTamConfig.from_dict(image.to_dict()))


def test_edgetam_backbone_config_is_read_only():
    backbone = EdgeTamVisionConfig().backbone_config
    assert isinstance(backbone, FrozenDict) and backbone["model_args"]["out_indices"] == (0, 1, 2, 3)
    with pytest.raises(TypeError, match="read-only"):
        backbone["architecture"] = "repvit_m2"


@pytest.mark.parametrize("bad, match", [
    ({"vision_config": {"backbone_config": {"architecture": "resnet50"}}}, "architecture 'repvit_m1'"),
    ({"vision_config": {"backbone_config": {"architecture": "repvit_m1", "model_args": {"features_only": True,
                                                                                     "out_indices": [1, 2]}}}},
     "out_indices"),
    ({"vision_config": {"model_type": "sam2_vision_model"}}, "expected a edgetam sub-config"),
])
def test_bad_edgetam_configs(bad, match):
    with pytest.raises(ValueError, match=match):
        EdgeTamConfig.from_dict(bad)


def test_transformers_default_edgetam_config_names_resnet50():
    # transformers' EdgeTamConfig() builds resnet50 (its default misspells "architecture"): refused by name.
    with pytest.raises(ValueError, match="got 'resnet50'"):
        EdgeTamConfig.from_dict(transformers.EdgeTamConfig().to_dict())


def test_families_do_not_mix():
    with pytest.raises(ValueError, match="model_type"):
        replace(EdgeTamConfig(), model_type="sam2")
    with pytest.raises(ValueError, match="model_type"):
        Sam2Config.from_dict(EdgeTamConfig().to_dict())
    assert isinstance(config_from_dict(EdgeTamVideoConfig().to_dict()), EdgeTamVideoConfig)
