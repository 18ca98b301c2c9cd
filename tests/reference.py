"""The torch side of the parity tests: transformers models built from our configs, every parameter
randomised (also those transformers initialises to zero or one), and their weights as Flax params."""

from __future__ import annotations

import numpy as np
import torch

from sam2_jax.config import Sam2Config


def hf_config(config: Sam2Config):
    """The transformers config object (Sam2Config or Sam2VideoConfig) for our config."""
    from transformers import Sam2Config as HFSam2Config, Sam2VideoConfig

    data = config.to_dict()
    cls = Sam2VideoConfig if config.model_type == "sam2_video" else HFSam2Config
    data = {k: v for k, v in data.items() if k not in ("model_type", "architectures")}
    return cls(**data)


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0, obj_score_bias: float | None = None) -> torch.nn.Module:
    """Give every parameter and persistent buffer random values, in place.

    Tensors that transformers leaves constant (zeros, ones, layer scales of 1e-6) get `const + N(0, 0.1)`,
    so no bug can hide behind a zero. Others keep their random init. `obj_score_bias` sets the bias of the
    object-score head, to make present and absent objects both occur.
    """
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in list(module.state_dict(keep_vars=True).items()):
        if not tensor.is_floating_point():
            continue
        flat = tensor.detach().reshape(-1)
        if flat.numel() == 1 or bool((flat == flat[0]).all()):
            noise = torch.randn(tensor.shape, generator=gen) * 0.1
            tensor.data.copy_(flat[0] + noise if flat[0].abs() >= 0.5 else noise)
    if obj_score_bias is not None:
        for name, param in module.named_parameters():
            if name.endswith("pred_obj_score_head.proj_out.bias"):
                param.fill_(obj_score_bias)
    return module


def state_dict_numpy(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """The module's checkpoint tensors (persistent only) as float32 numpy arrays."""
    return {k: v.detach().cpu().float().numpy() for k, v in module.state_dict().items()}


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x)


def assert_close(name: str, ours, ref, rel: float = 1e-4, atol: float | None = None) -> float:
    """Assert max |ours - ref| <= rel * max(1, max|ref|) (or <= atol), print the measured difference, return it."""
    ours, ref = np.asarray(ours, np.float64), to_numpy(ref).astype(np.float64)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != reference {ref.shape}"
    diff = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    bound = atol if atol is not None else rel * max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
    print(f"PARITY {name}: max|diff|={diff:.3g} bound={bound:.3g} max|ref|={np.max(np.abs(ref)):.3g}")
    assert diff <= bound, f"{name}: max |diff| {diff:.3g} > {bound:.3g}"
    return diff


def assert_same_binary(name: str, ours, ref, margin: float = 1e-3) -> None:
    """Thresholded masks agree wherever the reference logit is clearly away from 0."""
    ours, ref = np.asarray(ours), to_numpy(ref)
    clear = np.abs(ref) > margin
    mismatches = int(np.sum((ours > 0)[clear] != (ref > 0)[clear]))
    assert mismatches == 0, f"{name}: {mismatches} binarised pixels differ"
