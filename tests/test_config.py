"""Configs: transformers config.json round trips and the released architectures."""

import dataclasses
import json

import pytest
import torch
import transformers

from sam2_jax.config import PRESETS, Sam2Config, replace, small_config
from reference import hf_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_transformers(name):
    cfg = PRESETS[name]
    assert Sam2Config.from_dict(hf_config(cfg).to_dict()) == cfg
    image_cfg = replace(cfg, model_type="sam2")
    back = Sam2Config.from_dict(hf_config(image_cfg).to_dict())
    for part in ("vision_config", "prompt_encoder_config", "mask_decoder_config"):
        assert getattr(back, part) == getattr(cfg, part)


def test_small_config_round_trips_and_json_file(tmp_path):
    cfg = small_config()
    hf = hf_config(cfg)
    hf.save_pretrained(tmp_path)
    assert Sam2Config.from_json_file(tmp_path / "config.json") == cfg
    cfg.to_json_file(tmp_path / "ours.json")
    loaded = transformers.Sam2VideoConfig.from_dict(json.loads((tmp_path / "ours.json").read_text()))
    assert loaded.to_dict()["vision_config"] == hf.to_dict()["vision_config"]
    assert loaded.memory_attention_rope_feat_sizes == [16, 16]


# 2.0 lacks the three SAM 2.1 tensors: no_obj_embed_spatial (64) and obj_ptr_tpos_proj (256x64 + 64).
@pytest.mark.parametrize("name,params", [("sam2.1-hiera-tiny", 38_963_010), ("sam2-hiera-tiny", 38_963_010 - 64 - (256 * 64 + 64))])
def test_tiny_parameter_count_matches_transformers(name, params):
    with torch.device("meta"):
        model = transformers.Sam2VideoModel(hf_config(PRESETS[name]))
    assert sum(p.numel() for p in model.state_dict().values() if p.is_floating_point()) == params


def test_version_flags():
    assert PRESETS["sam2.1-hiera-large"].version == "2.1"
    assert PRESETS["sam2-hiera-large"].version == "2.0"
    assert Sam2Config.from_preset("facebook/sam2.1-hiera-base-plus") == PRESETS["sam2.1-hiera-base-plus"]


@pytest.mark.parametrize("bad, match", [
    ({"model_type": "sam"}, "model_type"),
    ({"model_type": "sam2", "vision_config": {"hidden_act": "relu"}}, "hidden_act"),
])
def test_bad_configs(bad, match):
    with pytest.raises(ValueError, match=match):
        Sam2Config.from_dict(bad)


def test_unknown_preset():
    with pytest.raises(ValueError, match="name: expected one of"):
        Sam2Config.from_preset("sam3-hiera-tiny")


def test_configs_are_hashable_static_args():
    assert hash(small_config()) == hash(small_config())
    assert dataclasses.is_dataclass(small_config())
