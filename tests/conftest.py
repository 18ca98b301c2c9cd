import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

# Under `pytest -n N`, the workers share the cores: torch's OpenMP threads, which spin while waiting for
# work, then take the cores from the other workers' JAX (on 2 cores, 2 workers ran the torch reference
# 2 to 6 times slower than alone). Each worker gets its share of the cores for torch (set before torch is
# imported; JAX's own thread pool is left as it is).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

# `benchmarks/gpu_run.sh --rehearse` sets this to "cpu": the GPU tests then run on the CPU, so that the script
# and the tests it names cannot rot where there is no GPU.
GPU_TESTS_ON = os.environ.get("SAM2_JAX_GPU_TESTS_ON", "gpu")


def pytest_configure(config):
    """JAX runs on the CPU in the tests, except in the GPU parity run (`-m gpu`), where it takes the GPU."""
    if config.getoption("markexpr") != "gpu" or GPU_TESTS_ON == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _no_gpu() -> str | None:
    """Why the GPU tests cannot run here, or None when torch and JAX both see a GPU (or they rehearse)."""
    if GPU_TESTS_ON == "cpu":
        return None
    import torch

    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    import jax

    try:
        jax.devices("gpu")
    except RuntimeError:
        return "JAX sees no GPU (run the GPU tests alone: python -m pytest -m gpu)"
    return None


# The longest files (about 10 minutes each on 2 cores): collected first, so that `-n 2 --dist loadfile` starts
# them at once on the two workers and shares the other files out around them.
LONGEST_FILES = ("test_video_model.py", "test_train.py")


def pytest_collection_modifyitems(config, items):
    """Run the longest files first; skip, not fail, the tests marked `gpu` where there is no GPU."""
    items.sort(key=lambda item: item.path.name not in LONGEST_FILES)  # stable: the order within files holds
    gpu_items = [item for item in items if "gpu" in item.keywords]
    reason = _no_gpu() if gpu_items else None
    for item in gpu_items if reason else []:
        item.add_marker(pytest.mark.skip(reason=reason))
