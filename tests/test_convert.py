"""The converter (`convert/`) against the real originals: checkpoints built by facebookresearch/sam2 (the
`sam2` package, all eight variants), loaded by transformers `Sam2VideoModel`, and run by both."""

import os
import types

import pytest
import torch
from safetensors.torch import load_file, save_file
from sam2.build_sam import build_sam2
from transformers import Sam2VideoModel

from convert.__main__ import main
from convert.checkpoint import read_checkpoint
from convert.original import infer_preset, original_shapes, to_original, to_transformers, transformers_shapes
from convert.verify import generated_inputs, jax_logits, torch_logits
from sam2_jax.config import PRESETS, Sam2VideoConfig, small_config
from reference import assert_close, hf_config, randomize_

# The sam2 package's own config of each released variant.
SAM2_CONFIGS = {
    f"{prefix}-hiera-{size}": f"configs/{prefix}/{prefix}_hiera_{short}.yaml"
    for prefix in ("sam2.1", "sam2")
    for size, short in (("tiny", "t"), ("small", "s"), ("base-plus", "b+"), ("large", "l"))
}


def _shapes(state_dict):
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def _run(argv, capsys):
    rc = main([os.fspath(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_tensor_accounted_for(name):
    """The description, the renaming and the inferred config against both real models."""
    state_dict = build_sam2(SAM2_CONFIGS[name], None, device="cpu").state_dict()
    assert infer_preset(state_dict) == name
    config = Sam2VideoConfig.from_preset(name)
    assert list(_shapes(state_dict).items()) == list(original_shapes(config).items())

    with torch.device("meta"):
        expected = _shapes(Sam2VideoModel(hf_config(config)).state_dict())
    converted = to_transformers(state_dict, config)
    assert _shapes(converted) == expected == transformers_shapes(config)

    back = to_original(converted, config)
    assert list(back) == list(state_dict)
    assert all(back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in state_dict.items())


@pytest.mark.parametrize("version", ["2.0", "2.1"])
def test_custom_config_shapes_match_transformers(version):
    config = small_config(version)
    with torch.device("meta"):
        assert _shapes(Sam2VideoModel(hf_config(config)).state_dict()) == transformers_shapes(config)


# ------------------------------------------------------------------ tiny 2.0 / 2.1 through files
def _tiny(name, tmp_path_factory):
    """A randomised original tiny model, its .pt, the folder `python -m convert` made of it, and the
    original's image-path mask logits on the generated inputs."""
    model = randomize_(build_sam2(SAM2_CONFIGS[name], None, device="cpu"), seed=1)
    root = tmp_path_factory.mktemp(name)
    pt, folder = root / f"{name}.pt", root / name
    torch.save({"model": model.state_dict()}, pt)
    assert main([os.fspath(pt), os.fspath(folder)]) == 0
    inputs = generated_inputs(1024)
    return types.SimpleNamespace(name=name, state_dict=model.state_dict(), pt=pt, folder=folder, inputs=inputs,
                                 logits=_original_logits(model, inputs))


@torch.no_grad()
def _original_logits(model, inputs):
    """What `SAM2ImagePredictor.set_image` + `predict(multimask_output=True)` compute, before the clamp."""
    features = model.forward_image(torch.from_numpy(inputs["pixel_values"]))
    _, feats, _, sizes = model._prepare_backbone_features(features)
    feats[-1] = feats[-1] + model.no_mem_embed
    feats = [f.permute(1, 2, 0).view(1, -1, *s) for f, s in zip(feats[::-1], sizes[::-1])][::-1]
    points = (torch.from_numpy(inputs["input_points"][0]), torch.from_numpy(inputs["input_labels"][0]).int())
    sparse, dense = model.sam_prompt_encoder(points=points, boxes=None, masks=None)
    logits, _, _, _ = model.sam_mask_decoder(
        image_embeddings=feats[-1], image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
        repeat_image=False, high_res_features=feats[:-1])
    return logits.numpy()[None]  # (B=1, P=1, 3, 256, 256) as transformers


@pytest.fixture(scope="module")
def tiny21(tmp_path_factory):
    return _tiny("sam2.1-hiera-tiny", tmp_path_factory)


@pytest.fixture(scope="module")
def tiny20(tmp_path_factory):
    return _tiny("sam2-hiera-tiny", tmp_path_factory)


@pytest.fixture(params=["tiny21", "tiny20"])
def tiny(request):
    return request.getfixturevalue(request.param)


def test_original_folder_original_is_bit_identical(tiny, tmp_path, capsys):
    back = tmp_path / "back.pt"
    rc, out, err = _run([tiny.folder, back, "--to", "original", "--verify"], capsys)
    assert rc == 0, err
    count = {"sam2.1-hiera-tiny": 471, "sam2-hiera-tiny": 468}[tiny.name]
    assert out.splitlines()[-1].startswith(f"{tiny.name}: {count} tensors, ")
    restored = torch.load(back, weights_only=True)["model"]
    assert len(restored) == count and list(restored) == list(tiny.state_dict)
    for key, value in tiny.state_dict.items():
        assert restored[key].dtype == value.dtype and torch.equal(restored[key], value), key
    # A transformers folder read and written again is unchanged too.
    copy = tmp_path / "copy"
    assert _run([tiny.folder, copy], capsys)[0] == 0
    original, again = load_file(tiny.folder / "model.safetensors"), load_file(copy / "model.safetensors")
    assert list(original) == list(again) and all(torch.equal(original[k], again[k]) for k in original)


def test_transformers_loads_the_folder_strictly(tiny):
    model, info = Sam2VideoModel.from_pretrained(tiny.folder, output_loading_info=True)
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
    assert model.config.enable_occlusion_spatial_embedding == (tiny.name == "sam2.1-hiera-tiny")


def test_sam2_jax_gives_the_original_logits(tiny):
    """Each tensor lands where the model uses it: sam2-jax on the converted folder gives the original
    model's mask logits."""
    assert_close(f"{tiny.name} sam2-jax vs original", jax_logits(tiny.folder, tiny.inputs), tiny.logits)


def test_transformers_gives_the_original_logits(tiny21):
    """The folder means the same to transformers (the image path is the same in 2.0 and 2.1)."""
    assert_close("transformers vs original", torch_logits(tiny21.folder, tiny21.inputs), tiny21.logits)


def test_verify_runs_both_models(tmp_path, capsys):
    """`--verify` on a folder (a small random transformers model, to keep it fast)."""
    config = small_config("2.1")
    randomize_(Sam2VideoModel(hf_config(config)), seed=2).save_pretrained(tmp_path / "small")
    rc, out, err = _run([tmp_path / "small", tmp_path / "out", "--verify"], capsys)
    assert rc == 0, err
    assert out.startswith("verify: max |mask logits, sam2-jax - transformers| ")
    assert out.splitlines()[-1].startswith("custom SAM 2.1: ")


# ---------------------------------------------------------------------------------- bad input
def _save_original(path, state_dict):
    torch.save({"model": state_dict}, path)
    return path


def _save_folder(folder, config, state_dict):
    folder.mkdir()
    config.to_json_file(folder / "config.json")
    save_file({k: v.contiguous() for k, v in state_dict.items()}, folder / "model.safetensors",
              metadata={"format": "pt"})
    return folder


def _without(state_dict, key):
    return {k: v for k, v in state_dict.items() if k != key}


def _bad_source(case, tiny, folder):
    """Write the bad source named `case` into `folder`; return its path."""
    path = folder / "model.pt"
    if case == "not a checkpoint":
        path.write_text("not a checkpoint")
    elif case == "truncated":
        path.write_bytes(tiny.pt.read_bytes()[:50_000_000])
    elif case == "no model entry":
        torch.save({"state_dict": tiny.state_dict}, path)
    elif case == "another model":
        _save_original(path, torch.nn.Linear(3, 4).state_dict())
    elif case == "tensor removed":
        _save_original(path, _without(tiny.state_dict, "no_obj_ptr"))
    elif case == "tensor reshaped":
        _save_original(path, {**tiny.state_dict, "sam_mask_decoder.iou_token.weight": torch.zeros(2, 256)})
    elif case == "tensor added":
        _save_original(path, {**tiny.state_dict, "extra.weight": torch.zeros(1)})
    elif case == "missing path":
        pass
    else:
        tensors = load_file(tiny.folder / "model.safetensors")
        if case == "folder tensor removed":
            tensors = _without(tensors, "mask_decoder.iou_token.weight")
        else:
            tensors["no_object_pointer"] = torch.zeros(2)
        path = _save_folder(folder / "model", Sam2VideoConfig.from_preset(tiny.name), tensors)
    return path


BAD_SOURCES = {  # case: what the error says
    "not a checkpoint": "not a readable PyTorch checkpoint",
    "truncated": "not a readable PyTorch checkpoint",
    "no model entry": "a dict whose 'model' entry is the state dict, got a dict with keys ['state_dict']",
    "another model": "expected the weights of an original SAM 2 model",
    "tensor removed": "do not match an original sam2.1-hiera-tiny checkpoint; 1 missing: no_obj_ptr",
    "tensor reshaped": "1 mis-shaped: sam_mask_decoder.iou_token.weight expected (1, 256), got (2, 256)",
    "tensor added": "1 unexpected: extra.weight",
    "folder tensor removed": "do not match a transformers sam2.1-hiera-tiny checkpoint; 1 missing: "
                             "mask_decoder.iou_token.weight",
    "folder tensor reshaped": "1 mis-shaped: no_object_pointer expected (1, 256), got (2,)",
    "missing path": "a path that does not exist",
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_source_fails_cleanly(case, tiny21, tmp_path, capsys):
    src_dir, out_dir = tmp_path / "src", tmp_path / "out"
    src_dir.mkdir()
    out_dir.mkdir()
    src = _bad_source(case, tiny21, src_dir)
    for dst, to in ((out_dir / "model", "transformers"), (out_dir / "model.pt", "original")):
        rc, out, err = _run([src, dst, "--to", to], capsys)
        assert rc == 1 and out == ""
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert BAD_SOURCES[case] in err, err
        assert list(out_dir.iterdir()) == []


def test_destination_is_kept_unless_overwrite(tiny21, tmp_path, capsys):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "config.json").write_text("{}")
    rc, _, err = _run([tiny21.pt, dst], capsys)
    assert rc == 1 and "already exists; pass --overwrite" in err
    assert (dst / "config.json").read_text() == "{}"
    # A failed conversion leaves the old destination as it was, even with --overwrite.
    bad = _save_original(tmp_path / "bad.pt", _without(tiny21.state_dict, "no_obj_ptr"))
    assert _run([bad, dst, "--overwrite"], capsys)[0] == 1
    assert os.listdir(dst) == ["config.json"] and sorted(os.listdir(tmp_path)) == ["bad.pt", "out"]
    assert _run([tiny21.pt, dst, "--overwrite"], capsys)[0] == 0
    assert sorted(os.listdir(dst)) == ["config.json", "model.safetensors"]
    # A folder that is not a checkpoint is never replaced.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    rc, _, err = _run([tiny21.pt, other, "--overwrite"], capsys)
    assert rc == 1 and "is a folder that is not a checkpoint" in err and os.listdir(other) == ["notes.txt"]


def test_custom_config_cannot_become_an_original_file(tmp_path, capsys):
    """The original format has no config; the failure comes while writing, and the staging is removed."""
    config = small_config("2.1")
    folder = _save_folder(tmp_path / "small", config,
                          {k: torch.zeros(s) for k, s in transformers_shapes(config).items()})
    assert read_checkpoint(folder)[0] == config
    rc, _, err = _run([folder, tmp_path / "small.pt", "--to", "original"], capsys)
    assert rc == 1 and "only the released variants can be written" in err
    assert os.listdir(tmp_path) == ["small"]
