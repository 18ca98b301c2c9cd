"""The torch side of the benchmarks: transformers `Sam2VideoModel` with every parameter randomised (the
parity tests' `randomize_`), saved where sam2-jax loads the same weights, and its processor."""

from __future__ import annotations

import copy

import torch
import transformers
from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

from sam2_jax.config import Sam2VideoConfig
from tests.reference import hf_config, randomize_

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
no_grad = torch.no_grad


def randomised_model(config: Sam2VideoConfig, folder: str, seed: int = 0) -> transformers.Sam2VideoModel:
    """transformers `Sam2VideoModel` with random weights on DEVICE, also saved to `folder` (a checkpoint folder)."""
    torch.manual_seed(seed)
    model = randomize_(transformers.Sam2VideoModel(hf_config(config)).eval(), seed=seed)
    model.save_pretrained(folder)
    return model.to(DEVICE)


def in_dtype(model: transformers.Sam2VideoModel, dtype: str) -> transformers.Sam2VideoModel:
    """`model` in `dtype` ("float32": itself; else a converted copy)."""
    return model if dtype == "float32" else copy.deepcopy(model).to(getattr(torch, dtype))


def peak_memory() -> int | None:
    """torch's peak CUDA memory allocated in this process, in bytes; None without CUDA."""
    return torch.cuda.max_memory_allocated() if DEVICE == "cuda" else None


def allocated_memory() -> int | None:
    """torch's CUDA memory allocated now in this process, in bytes; None without CUDA."""
    return torch.cuda.memory_allocated() if DEVICE == "cuda" else None


def load(folder: str) -> transformers.Sam2VideoModel:
    return transformers.Sam2VideoModel.from_pretrained(folder).to(DEVICE).eval()


def processor(size: int) -> transformers.Sam2VideoProcessor:
    """transformers `Sam2VideoProcessor` resizing frames to size x size."""
    size = {"height": size, "width": size}
    return transformers.Sam2VideoProcessor(image_processor=transformers.Sam2ImageProcessor(size=size),
                                           video_processor=Sam2VideoVideoProcessor(size=size))
