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
    """JAX runs on the CPU in the tests, except in the GPU parity run (`-m gpu`), where it takes the GPU.
    xdist keeps the files in the order collected (its default reorders them by their number of tests)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
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


# The longest files, longest first (seconds under `-n 2` on 2 cores, 2026-12-07): `--dist loadfile` hands
# them out first and the shorter files fill in around them, so that the two workers end together.
LONGEST_FILES = ("test_video_model.py", "test_train.py", "test_distributed.py", "test_functional.py",  # 250-410 s
                 "test_sharding.py", "test_train_original.py", "test_docs.py", "test_batch.py",  # 115-180 s
                 "test_cli.py", "test_image_model.py", "test_kill.py", "test_app.py", "test_shipped_model.py")


def pytest_collection_modifyitems(config, items):
    """Run the longest files first; skip, not fail, the tests marked `gpu` where there is no GPU."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within files holds
    gpu_items = [item for item in items if "gpu" in item.keywords]
    reason = _no_gpu() if gpu_items else None
    for item in gpu_items if reason else []:
        item.add_marker(pytest.mark.skip(reason=reason))
