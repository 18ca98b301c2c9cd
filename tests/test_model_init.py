"""Models built from a config, as in transformers: transformers' initialisation, placement, save and load."""

import numpy as np
import pytest
import torch
import transformers

import jax
import jax.numpy as jnp
from sam2_jax import Sam2Config, Sam2Model, Sam2VideoConfig, Sam2VideoModel
from sam2_jax import weights
from sam2_jax.config import replace, small_config
from reference import hf_config


def _kind(array: np.ndarray) -> str:
    if not array.any():
        return "zeros"
    if (array == 1).all():
        return "ones"
    return "random"


@pytest.fixture(scope="module")
def video_model():
    return Sam2VideoModel(small_config(), seed=3)


def test_video_init_matches_transformers_init(video_model):
    torch.manual_seed(0)
    reference = {k: v.float().numpy() for k, v in transformers.Sam2VideoModel(hf_config(small_config())).state_dict().items()
                 if v.is_floating_point()}
    ours = weights.params_to_state_dict(video_model.params)
    assert set(ours) <= set(reference)
    assert not {k for k in set(reference) - set(ours) if not k.endswith(("position_ids", "inv_freq"))}
    for key, value in ours.items():
        assert value.shape == reference[key].shape, key
        assert _kind(value) == _kind(reference[key]), key
        if _kind(value) == "random" and value.size >= 4096:  # the same distribution: mean 0, the same std
            assert abs(value.std() - reference[key].std()) < 0.1 * reference[key].std(), key
            assert abs(value.mean()) < 4 * value.std() / np.sqrt(value.size), key


def test_initializer_range_and_seed():
    config = replace(small_config(), initializer_range=0.05)
    a, b = Sam2VideoModel.init_params(config, seed=1), Sam2VideoModel.init_params(config, seed=1)
    flat = weights.params_to_state_dict(a)
    name = max((k for k in flat if k.endswith(".weight") and "norm" not in k), key=lambda k: flat[k].size)
    big = flat[name]
    assert abs(big.std() - 0.05) < 0.005
    assert all(np.array_equal(v, weights.params_to_state_dict(b)[k]) for k, v in flat.items())
    other = weights.params_to_state_dict(Sam2VideoModel.init_params(config, seed=2))
    assert not np.array_equal(other[name], big)


def test_config_dtype_device_to(video_model):
    assert isinstance(video_model.config, Sam2VideoConfig) and video_model.dtype == jnp.float32
    assert video_model.device == jax.devices()[0]
    model = Sam2VideoModel(small_config(), params=video_model.params)
    assert model.to("cpu", dtype=jnp.bfloat16) is model
    assert model.dtype == jnp.bfloat16 and model.device == jax.devices("cpu")[0]
    assert {x.dtype for x in jax.tree_util.tree_leaves(model.params)} == {jnp.dtype(jnp.bfloat16)}
    with pytest.raises(TypeError, match="dtype: expected a floating dtype"):
        model.to(dtype=jnp.int32)
    with pytest.raises(ValueError, match="device: no JAX device"):
        model.to("nowhere")
    with pytest.raises(TypeError, match="config: expected a Sam2Config, Sam2VideoConfig"):
        Sam2VideoModel({"num_maskmem": 5})


def test_save_then_load_is_bitwise(video_model, tmp_path):
    video_model.save_pretrained(tmp_path)
    loaded = Sam2VideoModel.from_pretrained(tmp_path)
    assert loaded.config == video_model.config
    for a, b in zip(jax.tree_util.tree_leaves(video_model.params), jax.tree_util.tree_leaves(loaded.params)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    # transformers reads it strictly too.
    transformers.Sam2VideoModel.from_pretrained(tmp_path)


def test_image_model_from_config_runs():
    config = replace(small_config(), model_type="sam2")
    model = Sam2Model(config, seed=0)
    assert isinstance(model.config, Sam2Config) and model.config == config
    assert Sam2Model(Sam2Config(vision_config=config.vision_config, prompt_encoder_config={"image_size": 256})).config \
        == config
    out = model(pixel_values=np.zeros((1, 3, 256, 256), np.float32), input_points=np.full((1, 1, 1, 2), 100.0),
                input_labels=np.ones((1, 1, 1), np.int64))
    assert out.pred_masks.shape == (1, 1, 3, 64, 64) and np.isfinite(np.asarray(out.pred_masks)).all()
