import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


def pytest_configure(config):
    """JAX runs on the CPU in the tests, except in the GPU parity run (`-m gpu`), where it takes the GPU."""
    if config.getoption("markexpr") != "gpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _no_gpu() -> str | None:
    """Why the GPU tests cannot run here, or None when torch and JAX both see a GPU."""
    import torch

    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    import jax

    try:
        jax.devices("gpu")
    except RuntimeError:
        return "JAX sees no GPU (run the GPU tests alone: python -m pytest -m gpu)"
    return None


def pytest_collection_modifyitems(config, items):
    """Skip, not fail, the tests marked `gpu` where there is no GPU."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    reason = _no_gpu() if gpu_items else None
    for item in gpu_items if reason else []:
        item.add_marker(pytest.mark.skip(reason=reason))
