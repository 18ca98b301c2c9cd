"""Checks of a written checkpoint: the two models agree on it (folder), or it reads back unchanged (.pt)."""

from __future__ import annotations

import os

import numpy as np
import torch

from sam2_jax.config import replace
from sam2_jax.weights import read_config

from .checkpoint import read_checkpoint

# A conversion error moves logits by their own size; agreement within this is float32 rounding.
RELATIVE_TOLERANCE = 1e-3


def generated_inputs(image_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A generated, already normalised frame (1,3,S,S) and one positive click, as `Sam2Model` takes them."""
    rng = np.random.default_rng(seed)
    return {
        "pixel_values": rng.standard_normal((1, 3, image_size, image_size), dtype=np.float32),
        "input_points": np.array([[[[0.4 * image_size, 0.6 * image_size]]]], np.float32),
        "input_labels": np.array([[[1]]], np.int64),
    }


def torch_logits(folder: str | os.PathLike, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Mask logits (B,P,3,h,w) of transformers `Sam2Model` or `EdgeTamModel` (by the folder's config; float32)
    loaded from `folder`, on `inputs`."""
    try:
        from transformers import EdgeTamModel, Sam2Model
        from transformers.utils import logging
    except ImportError as err:
        raise ValueError(f"verify: needs transformers ({err})") from None
    model_class = EdgeTamModel if read_config(folder).version == "edgetam" else Sam2Model
    verbosity, progress_bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()  # the image model ignores the video tensors, and says so at length
    logging.disable_progress_bar()
    try:
        model = model_class.from_pretrained(os.fspath(folder), dtype=torch.float32).eval()
    finally:
        logging.set_verbosity(verbosity)
        if progress_bar:
            logging.enable_progress_bar()
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in inputs.items()}, multimask_output=True).pred_masks.numpy()


def jax_logits(folder: str | os.PathLike, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Mask logits (B,P,3,h,w) of sam2-jax's `Sam2Model` loaded from `folder` (the EdgeTAM image model for an
    EdgeTAM folder), on `inputs`."""
    import jax

    from sam2_jax import Sam2Model

    with jax.default_matmul_precision("highest"):
        return np.asarray(Sam2Model.from_pretrained(folder)(**inputs, multimask_output=True).pred_masks)


def verify_folder(folder: str | os.PathLike) -> str:
    """Compare the two models on `folder`; a one-line report, or ValueError if they disagree."""
    inputs = generated_inputs(read_config(folder).prompt_encoder_config.image_size)
    expected, got = torch_logits(folder, inputs), jax_logits(folder, inputs)
    if got.shape != expected.shape:
        raise ValueError(f"verify: sam2-jax pred_masks have shape {got.shape}, transformers' {expected.shape}")
    diff, scale = float(np.max(np.abs(got - expected))), float(np.max(np.abs(expected)))
    bound = RELATIVE_TOLERANCE * max(1.0, scale)
    if not diff <= bound:
        raise ValueError(f"verify: mask logits of sam2-jax and transformers differ by {diff:.3g} (more than "
                         f"{bound:.3g}, max |logit| {scale:.3g})")
    return f"max |mask logits, sam2-jax - transformers| {diff:.2g} (max |logit| {scale:.3g})"


def verify_original(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Read the written `.pt` back and compare every tensor with the source, bit for bit; a one-line report,
    or ValueError."""
    config, expected, _ = read_checkpoint(src)
    config_back, got, _ = read_checkpoint(dst)
    if replace(config_back, model_type=config.model_type) != config:
        raise ValueError(f"verify: the written file reads back as another model than {os.fspath(src)}")
    differ = [k for k in expected if not torch.equal(expected[k], got[k])]
    if differ:
        raise ValueError(f"verify: {len(differ)} tensors changed in the written file: {', '.join(differ)}")
    return f"the written file reads back to the same {len(got)} tensors, bit for bit"
