"""The converter (`convert/`) on EdgeTAM: facebookresearch/EdgeTAM's `edgetam.pt` layout <-> transformers'
`EdgeTamVideoModel` keys, as transformers' `convert_edgetam_video_to_hf.py` renames them.

No original EdgeTAM package exists to build an original checkpoint with (it is a source repository, not on a
registry), so the original-layout state dict is built here from a random transformers `EdgeTamVideoModel` by
inverting transformers' renaming key by key, written independently of the converter for EdgeTAM's own tensors
(RepViT trunk, perceiver, memory attention); the tensors EdgeTAM shares with SAM 2 are inverted with SAM 2's
renaming, which tests/test_convert.py checks against the original sam2 package. timm, which builds the original's
RepViT trunk, checks the trunk's layout."""

import os
import re

import pytest
import torch
import transformers
from safetensors.torch import load_file

from convert.__main__ import main
from convert.checkpoint import read_checkpoint, variant_name
from convert.original import infer_preset, key_map, original_shapes, transformers_shapes
from sam2_jax.config import EDGETAM_PRESETS, PRESETS, EdgeTamVideoConfig, replace
from reference import randomize_
from test_edgetam_image import randomize_backbone_

timm = pytest.importorskip("timm")

CONFIG = EDGETAM_PRESETS["edgetam"]


def _shapes(state_dict):
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def _hf(config):
    return transformers.EdgeTamVideoConfig.from_dict(config.to_dict())


@pytest.mark.parametrize("config", [CONFIG, EdgeTamVideoConfig(), EdgeTamVideoConfig(
    memory_attention_num_layers=1, perceiver_resampler_num_layers=3, perceiver_resampler_num_attention_heads=2,
    perceiver_resampler_mlp_intermediate_size=128)], ids=["released", "transformers-defaults", "custom"])
def test_shapes_match_transformers(config):
    with torch.device("meta"):
        expected = _shapes(transformers.EdgeTamVideoModel(_hf(config)).state_dict())
    assert transformers_shapes(config) == expected


def test_trunk_is_timms_features_only_repvit():
    """The original's trunk is `timm.create_model("repvit_m1", features_only=True, out_indices=(0, 1, 2, 3))`."""
    body = timm.create_model("repvit_m1", pretrained=False, features_only=True, out_indices=(0, 1, 2, 3))
    trunk = {k[len("image_encoder.trunk.body."):]: s for k, s in original_shapes(CONFIG).items()
             if k.startswith("image_encoder.trunk.body.")}
    assert trunk == _shapes(body.state_dict())


# ------------------------------------------------------------ transformers -> original, independently of convert/
_EDGETAM_INVERSE = (  # (transformers pattern, original), applied in order to EdgeTAM's own tensors
    (r"^vision_encoder\.backbone\.timm_model\.", "image_encoder.trunk.body."),
    (r"^spatial_perceiver\.latents_1d$", "spatial_perceiver.latents"),
    (r"\.layer_norm_input\.", ".attn.norm_x."),
    (r"\.layer_norm_latents\.", ".attn.norm_latents."),
    (r"\.layer_norm_self\.", ".self_attn.norm."),
    (r"\.cross_attention\.q_proj\.", ".attn.to_q."),
    (r"\.cross_attention\.o_proj\.", ".attn.to_out."),
    (r"\.self_attention\.q_proj\.", ".self_attn.to_q."),
    (r"\.self_attention\.o_proj\.", ".self_attn.to_out."),
    (r"^(spatial_perceiver\.layers\.\d+)\.mlp\.layer_norm\.", r"\1.ff.0."),
    (r"^(spatial_perceiver\.layers\.\d+)\.mlp\.up_proj\.", r"\1.ff.1."),
    (r"^(spatial_perceiver\.layers\.\d+)\.mlp\.down_proj\.", r"\1.ff.3."),
    (r"\.self_mlp\.layer_norm\.", ".self_ff.0."),
    (r"\.self_mlp\.up_proj\.", ".self_ff.1."),
    (r"\.self_mlp\.down_proj\.", ".self_ff.3."),
    (r"^spatial_perceiver\.layer_norm\.", "spatial_perceiver.norm."),
    (r"^(memory_attention\.layers\.\d+)\.mlp\.up_proj\.", r"\1.linear1."),
    (r"^(memory_attention\.layers\.\d+)\.mlp\.down_proj\.", r"\1.linear2."),
    (r"^(memory_attention\.layers\.\d+)\.layer_norm(\d)\.", r"\1.norm\2."),
    (r"^memory_attention\.layer_norm\.", "memory_attention.norm."),
    (r"\.o_proj\.", ".out_proj."),  # the memory attention's
)
_FUSED_KV = re.compile(r"^(spatial_perceiver\.layers\.\d+)\.(cross_attention|self_attention)\.([kv])_proj\.weight$")


def original_from_transformers(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original-layout EdgeTAM state dict holding the tensors of a transformers one."""
    sam2 = {new: old for old, new in key_map(PRESETS["sam2-hiera-tiny"]).items()}  # SAM 2's shared tensors
    out = {}
    for key, value in hf.items():
        if key == "shared_image_embedding.positional_embedding":  # a copy of the prompt encoder's
            assert torch.equal(value, hf["prompt_encoder.shared_embedding.positional_embedding"])
        elif key == "prompt_encoder.point_embed.weight":
            out.update({f"sam_prompt_encoder.point_embeddings.{i}.weight": value[i:i + 1] for i in range(len(value))})
        elif match := _FUSED_KV.match(key):
            if match[3] == "k":  # to_kv's rows are k's then v's (`.chunk(2)` in the original)
                layer, module = match[1], {"cross_attention": "attn", "self_attention": "self_attn"}[match[2]]
                out[f"{layer}.{module}.to_kv.weight"] = torch.cat([value, hf[key.replace(".k_proj.", ".v_proj.")]])
        elif key.startswith(("vision_encoder.backbone.", "spatial_perceiver.", "memory_attention.")):
            for pattern, replacement in _EDGETAM_INVERSE:
                key = re.sub(pattern, replacement, key)
            out[key] = value
        elif key.startswith("vision_encoder.neck.convs."):
            out[re.sub(r"^vision_encoder\.neck\.convs\.(\d+)\.", r"image_encoder.neck.convs.\1.conv.", key)] = value
        else:
            out[sam2[key]] = value
    return out


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A random transformers EdgeTamVideoModel of the released config (BatchNorm statistics and counters
    included), its folder, and the original-layout .pt of its tensors."""
    torch.manual_seed(0)
    model = randomize_backbone_(randomize_(transformers.EdgeTamVideoModel(_hf(CONFIG)).eval(), seed=3), seed=3)
    with torch.no_grad():
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding)  # one matrix in the original
    for i, module in enumerate(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        module.num_batches_tracked.fill_(1000 + i)
    root = tmp_path_factory.mktemp("edgetam")
    model.save_pretrained(root / "hf")
    hf = load_file(root / "hf" / "model.safetensors")
    original = original_from_transformers(hf)
    torch.save({"model": original}, root / "edgetam.pt")
    return root, hf, original


def test_original_layout_is_what_convert_expects(released):
    _, hf, original = released
    assert infer_preset(original) == "edgetam"
    assert _shapes(original) == original_shapes(CONFIG)
    assert len(original) == len(hf) + 3 - 1 - 4  # point embeddings 1 -> 4, no Fourier copy, 4 k/v pairs fused


def _run(argv, capsys):
    rc = main([os.fspath(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_original_to_transformers_lands_every_tensor(released, capsys):
    """Every tensor of the original is consumed and lands, bit for bit, where transformers' keys say."""
    root, hf, _ = released
    rc, out, err = _run([root / "edgetam.pt", root / "converted"], capsys)
    assert rc == 0, err
    assert out.splitlines()[-1].startswith(f"edgetam: {len(hf)} tensors, ")
    converted = load_file(root / "converted" / "model.safetensors")
    assert sorted(converted) == sorted(hf)
    differ = [k for k in hf if converted[k].dtype != hf[k].dtype or not torch.equal(converted[k], hf[k])]
    assert differ == []
    assert variant_name(read_checkpoint(root / "converted")[0]) == "edgetam"
    _, info = transformers.EdgeTamVideoModel.from_pretrained(root / "converted", output_loading_info=True)
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}


def test_transformers_to_original_is_bit_identical(released, capsys):
    root, _, original = released
    rc, out, err = _run([root / "hf", root / "back.pt", "--to", "original", "--verify"], capsys)
    assert rc == 0, err
    assert out.startswith("verify: the written file reads back to the same ")
    back = torch.load(root / "back.pt", weights_only=True)["model"]
    assert list(back) == list(original_shapes(CONFIG)) and sorted(back) == sorted(original)
    assert all(back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in original.items())


def test_original_without_batch_counters(released, tmp_path, capsys):
    """torch's BatchNorm loads a state dict without `num_batches_tracked`; so does the converter (as 0)."""
    _, hf, original = released
    without = {k: v for k, v in original.items() if not k.endswith(".num_batches_tracked")}
    assert len(without) < len(original)
    torch.save({"model": without}, tmp_path / "edgetam.pt")
    assert _run([tmp_path / "edgetam.pt", tmp_path / "out"], capsys)[0] == 0
    converted = load_file(tmp_path / "out" / "model.safetensors")
    assert sorted(converted) == sorted(hf)
    assert all(converted[k].item() == 0 for k in converted if k.endswith(".num_batches_tracked"))


BAD = {  # case: (change to the original state dict, what the error says)
    "perceiver tensor removed": (lambda sd: sd.pop("spatial_perceiver.layers.1.self_attn.to_kv.weight"),
                                 ("do not match an original edgetam checkpoint; 1 missing: "
                                  "spatial_perceiver.layers.1.self_attn.to_kv.weight")),
    "trunk tensor reshaped": (lambda sd: sd.update({"image_encoder.trunk.body.stem.conv1.c.weight": torch.zeros(3)}),
                              ("1 mis-shaped: image_encoder.trunk.body.stem.conv1.c.weight expected (24, 3, 3, 3), "
                               "got (3,)")),
    "tensor added": (lambda sd: sd.update({"spatial_perceiver.extra": torch.zeros(1)}),
                     "1 unexpected: spatial_perceiver.extra"),
    "SAM 2.1 tensor added": (lambda sd: sd.update({"no_obj_embed_spatial": torch.zeros(1, 64)}),
                             "1 unexpected: no_obj_embed_spatial"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_original_fails_cleanly(case, released, tmp_path, capsys):
    _, _, original = released
    state_dict = dict(original)
    change, message = BAD[case]
    change(state_dict)
    torch.save({"model": state_dict}, tmp_path / "bad.pt")
    rc, out, err = _run([tmp_path / "bad.pt", tmp_path / "out"], capsys)
    assert rc == 1 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert sorted(os.listdir(tmp_path)) == ["bad.pt"]


def test_released_variant_ignores_timm_metadata():
    """transformers' own checkpoint names its backbone with timm's pretrained config; the network is the same."""
    backbone = {**CONFIG.vision_config.backbone_config, "pretrained_cfg": {"hf_hub_id": "timm/repvit_m1.dist_in1k"}}
    config = replace(CONFIG, vision_config=replace(CONFIG.vision_config, backbone_config=backbone))
    assert config != CONFIG and variant_name(config) == "edgetam"
    assert variant_name(EdgeTamVideoConfig()) == "custom EdgeTAM"


def test_custom_edgetam_folder_converts_and_verifies(tmp_path, capsys):
    """`sam2-jax convert --verify` on a transformers EdgeTAM folder (small, 256 px): checked, copied, and run by
    transformers' EdgeTamModel and sam2-jax's on a generated frame and click."""
    s = 256 // 4
    config = replace(EdgeTamVideoConfig(), image_size=256, prompt_encoder_config={"image_size": 256},
                     memory_attention_rope_feat_sizes=(s // 4, s // 4), vision_config=replace(
                         EdgeTamVideoConfig().vision_config, backbone_feature_sizes=((s, s), (s // 2, s // 2),
                                                                                     (s // 4, s // 4))))
    torch.manual_seed(0)
    model = randomize_backbone_(randomize_(transformers.EdgeTamVideoModel(_hf(config)).eval(), seed=4), seed=4)
    model.save_pretrained(tmp_path / "small")
    rc, out, err = _run([tmp_path / "small", tmp_path / "out", "--verify"], capsys)
    assert rc == 0, err
    assert out.startswith("verify: max |mask logits, sam2-jax - transformers| ")
    with capsys.disabled():
        print(f"EdgeTAM 256 px {out.splitlines()[0]}")
    assert out.splitlines()[-1].startswith("custom EdgeTAM: ")
    rc, _, err = _run([tmp_path / "small", tmp_path / "small.pt", "--to", "original"], capsys)
    assert rc == 1 and "only the released variants can be written" in err and "custom EdgeTAM" in err


def test_sam2_jax_convert_takes_an_edgetam_folder(released, capsys):
    """`sam2-jax convert` (the command, which hands its arguments to `convert/`) on transformers' EdgeTAM folder."""
    from sam2_jax.commands.main import main as sam2_jax

    root, hf, _ = released
    assert sam2_jax(["convert", os.fspath(root / "hf"), os.fspath(root / "copy")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"edgetam: {len(hf)} tensors, ")
    copy = load_file(root / "copy" / "model.safetensors")
    assert sorted(copy) == sorted(hf) and all(torch.equal(copy[k], hf[k]) for k in hf)


def test_image_model_folder_is_refused(tmp_path, capsys):
    """The original format holds the whole tracker: an image model's folder (model_type edgetam) cannot be one."""
    from sam2_jax import EdgeTamModel
    from sam2_jax.config import edgetam_small_config

    EdgeTamModel.from_config(edgetam_small_config(128)).save_pretrained(tmp_path / "image")
    rc, out, err = _run([tmp_path / "image", tmp_path / "out"], capsys)
    assert rc == 1 and out == "" and err.count("\n") == 1
    assert "expected a video model's checkpoint (model_type 'sam2_video' or 'edgetam_video'" in err
    assert "got model_type 'edgetam'" in err and not (tmp_path / "out").exists()
