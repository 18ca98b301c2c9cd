"""Bad input to the image API: each raises ValueError/TypeError naming the argument."""

import numpy as np
import pytest

from sam2_jax import Sam2Model, Sam2Processor
from sam2_jax.config import replace, small_config

CONFIG = replace(small_config(), model_type="sam2")


@pytest.fixture(scope="module")
def model():
    return Sam2Model.from_config(CONFIG)


def _pixels():
    return np.zeros((1, 3, 256, 256), np.float32)


ONE_POINT = dict(input_points=np.array([[[[10.0, 10.0]]]], np.float32), input_labels=np.array([[[1]]]))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(pixel_values=np.zeros((3, 256, 256), np.float32)), ValueError, "pixel_values"),
    (dict(pixel_values=np.zeros((1, 4, 256, 256), np.float32)), ValueError, "pixel_values"),
    (dict(pixel_values=np.zeros((1, 3, 128, 128), np.float32)), ValueError, "pixel_values"),
    (dict(pixel_values=np.zeros((1, 3, 256, 256), np.uint8)), TypeError, "pixel_values"),
    (dict(), ValueError, "exactly one"),
    (dict(pixel_values=_pixels(), input_points=ONE_POINT["input_points"]), ValueError, "input_labels"),
    (dict(pixel_values=_pixels(), input_labels=ONE_POINT["input_labels"]), ValueError, "input_points"),
    (dict(pixel_values=_pixels(), input_points=ONE_POINT["input_points"], input_labels=np.array([[[1, 1]]])),
     ValueError, "input_labels"),
    (dict(pixel_values=_pixels(), input_points=np.array([[[[300.0, 10.0]]]], np.float32),
          input_labels=np.array([[[1]]])), ValueError, "input_points"),
    (dict(pixel_values=_pixels(), input_points=np.array([[[[np.nan, 10.0]]]], np.float32),
          input_labels=np.array([[[1]]])), ValueError, "input_points"),
    (dict(pixel_values=_pixels(), input_boxes=np.array([[[50.0, 10.0, 20.0, 40.0]]], np.float32)), ValueError,
     "input_boxes"),
    (dict(pixel_values=_pixels(), input_boxes=np.array([[[5.0, 50.0, 20.0, 40.0]]], np.float32)), ValueError,
     "input_boxes"),
    (dict(pixel_values=_pixels(), input_masks=np.zeros((1, 2, 64, 64), np.float32)), ValueError, "input_masks"),
    (dict(pixel_values=_pixels(), input_masks=np.zeros((64, 64), np.float32)), ValueError, "input_masks"),
])
def test_model_rejects_bad_input(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        model(**kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(images=np.zeros((8, 8, 3, 2), np.uint8)), ValueError, "images"),
    (dict(images=np.zeros((8, 8, 5), np.uint8)), ValueError, "images"),
    (dict(images=np.zeros((8, 8, 3), np.complex64)), TypeError, "images"),
    (dict(images=np.zeros((8, 8, 3), np.uint8), input_points=[[[[1.0, 2.0]]]]), ValueError, "labels"),
    (dict(images=np.zeros((8, 8, 3), np.uint8), input_labels=[[[1]]]), ValueError, "points"),
    (dict(images=np.zeros((8, 8, 3), np.uint8), input_points=[[[[1.0, 2.0]]]], input_labels=[[[1, 1]]]),
     ValueError, "labels"),
    (dict(images=np.zeros((8, 8, 3), np.uint8), input_points=[[[[9.0, 2.0]]]], input_labels=[[[1]]]),
     ValueError, "points"),
    (dict(images=np.zeros((8, 8, 3), np.uint8), input_boxes=[[[5.0, 1.0, 2.0, 4.0]]]), ValueError, "boxes"),
    (dict(), ValueError, "images"),
])
def test_processor_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        Sam2Processor(size=256)(**kwargs)


def test_checkpoint_folder_errors(tmp_path, model):
    with pytest.raises(ValueError, match="config.json"):
        Sam2Model.from_pretrained(tmp_path)
    CONFIG.to_json_file(tmp_path / "config.json")
    with pytest.raises(ValueError, match="model.safetensors"):
        Sam2Model.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        Sam2Model.from_pretrained(tmp_path / "missing")


def test_weights_that_do_not_fit_the_config_list_every_problem(tmp_path, model):
    from safetensors.numpy import load_file, save_file

    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["mask_decoder.iou_token.weight"]
    tensors["prompt_encoder.point_embed.weight"] = np.zeros((3, 256), np.float32)
    tensors["surprise.weight"] = np.zeros(1, np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as err:
        Sam2Model.from_pretrained(tmp_path)
    message = str(err.value)
    for expected in ("1 missing: mask_decoder.iou_token.weight", "1 unexpected: surprise.weight",
                     "prompt_encoder.point_embed.weight: expected (4, 256), got (3, 256)"):
        assert expected in message


def test_truncated_weights_file(tmp_path, model):
    model.save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="safetensors"):
        Sam2Model.from_pretrained(tmp_path)
