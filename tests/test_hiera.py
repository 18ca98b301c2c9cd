"""Parity of `sam2_jax.models.hiera` with transformers `Sam2VisionModel` (Hiera trunk `Sam2HieraDetModel`
and FPN neck `Sam2VisionNeck`), on randomised weights (pos_embed and pos_embed_window included)."""

import jax
import jax.numpy as jnp
import pytest
import torch
from reference import assert_close, hf_config, randomize_, state_dict_numpy, to_numpy

from sam2_jax import weights
from sam2_jax.config import HieraConfig, Sam2VideoConfig, replace, small_config
from sam2_jax.models.hiera import VisionEncoder, position_embedding


def _run_both(config, batch: int, seed: int = 0):
    """Our VisionEncoder and transformers' Sam2VisionModel on the same random weights and image."""
    from transformers import Sam2VisionModel

    hf = randomize_(Sam2VisionModel(hf_config(config).vision_config), seed=seed).eval()
    size = config.vision_config.backbone_config.image_size
    pixels = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed + 1))
    captured = {}
    hf.backbone.register_forward_hook(lambda module, args, out: captured.update(backbone=out))
    with torch.no_grad():
        ref = hf(pixels)

    model = VisionEncoder(config.vision_config)
    x = jnp.asarray(pixels.numpy().transpose(0, 2, 3, 1))
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))["params"]
    params = weights.state_dict_to_params(state_dict_numpy(hf), abstract)  # strict: every key, every shape
    with jax.default_matmul_precision("highest"):
        ours = jax.jit(model.apply)({"params": params}, x)
    return ours, ref, captured["backbone"]


def _check_parity(ours, ref, backbone) -> None:
    """Every stage output, FPN level and position encoding within 1e-4 x max(1, max|ref|)."""
    stages_ref = backbone.intermediate_hidden_states
    assert len(ours["intermediate_hidden_states"]) == len(stages_ref)
    for i, (a, b) in enumerate(zip(ours["intermediate_hidden_states"], stages_ref)):
        assert_close(f"stage{i}", a, b)  # both BHWC
    assert_close("last_hidden_state", ours["last_hidden_state"], ref.last_hidden_state)
    assert len(ours["fpn_hidden_states"]) == len(ref.fpn_hidden_states)
    for i, (a, b) in enumerate(zip(ours["fpn_hidden_states"], ref.fpn_hidden_states)):
        assert_close(f"fpn{i}", a, b.permute(0, 2, 3, 1))
    for i, (a, b) in enumerate(zip(ours["fpn_position_encoding"], ref.fpn_position_encoding)):
        assert torch.equal(b, b[:1].expand_as(b))  # the reference's encoding is the same for every batch item
        assert_close(f"pe{i}", a, b[0].permute(1, 2, 0))


def test_vision_encoder_small_matches_transformers():
    """Sam2VisionModel.forward on the small config: window padding (14 on 16x16, 7 on 8x8), q-pooling with
    padded windows, a global block, top-down FPN; batch of 2."""
    ours, ref, backbone = _run_both(small_config(), batch=2)
    assert [o.shape for o in ours["fpn_hidden_states"]] == [(2, 64, 64, 256), (2, 32, 32, 256), (2, 16, 16, 256)]
    assert [o.shape for o in ours["fpn_position_encoding"]] == [(64, 64, 256), (32, 32, 256), (16, 16, 256)]
    _check_parity(ours, ref, backbone)


@pytest.mark.parametrize("background", [7, 14])
def test_position_embedding_matches_bicubic_interpolate(background):
    """Sam2HieraDetModel._get_pos_embed: F.interpolate(mode="bicubic") of pos_embed from 7x7 or 14x14 to
    256x256, plus the tiled pos_embed_window."""
    from transformers import Sam2HieraDetModel

    cfg = replace(small_config().vision_config.backbone_config,
                  window_positional_embedding_background_size=(background, background))
    hf = randomize_(Sam2HieraDetModel(hf_config(_with_backbone(cfg)).vision_config.backbone_config), seed=3)
    with torch.no_grad():
        hf.pos_embed.normal_(generator=torch.Generator().manual_seed(4))
        ref = to_numpy(hf._get_pos_embed((256, 256)))

    ours = position_embedding(jnp.asarray(to_numpy(hf.pos_embed)), jnp.asarray(to_numpy(hf.pos_embed_window)),
                              256, 256)
    assert_close(f"pos_embed {background}->256", ours, ref, rel=2e-6)


def _with_backbone(backbone: HieraConfig) -> Sam2VideoConfig:
    config = small_config()
    return replace(config, vision_config=replace(config.vision_config, backbone_config=backbone))


def test_vision_encoder_tiny_1024_matches_transformers():
    """Full SAM 2.1 hiera-tiny vision encoder at 1024x1024."""
    config = Sam2VideoConfig.from_preset("sam2.1-hiera-tiny")
    ours, ref, backbone = _run_both(config, batch=1, seed=5)
    assert [o.shape for o in ours["intermediate_hidden_states"]] == [
        (1, 256, 256, 96), (1, 128, 128, 192), (1, 64, 64, 384), (1, 32, 32, 768)]
    _check_parity(ours, ref, backbone)
