"""The torch side of the benchmarks: transformers `Sam2VideoModel` or `EdgeTamVideoModel` (by the config) with
every parameter randomised (the parity tests' `randomize_`, BatchNorm statistics included), saved where sam2-jax
loads the same weights, and its processor (transformers' `Sam2VideoProcessor` serves both)."""

from __future__ import annotations

import copy

import torch
import transformers
from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

from sam2_jax.config import EdgeTamVideoConfig, Sam2VideoConfig
from sam2_jax.weights import read_config
from tests.reference import hf_config, randomize_

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
no_grad = torch.no_grad


def model_class(config: Sam2VideoConfig | EdgeTamVideoConfig) -> type:
    """transformers' video model class of `config`: `EdgeTamVideoModel` (needs timm) or `Sam2VideoModel`."""
    return transformers.EdgeTamVideoModel if isinstance(config, EdgeTamVideoConfig) else transformers.Sam2VideoModel


def randomised_model(config: Sam2VideoConfig | EdgeTamVideoConfig, folder: str, seed: int = 0) -> torch.nn.Module:
    """transformers' video model of `config` with random weights on DEVICE, also saved to `folder` (a checkpoint
    folder)."""
    torch.manual_seed(seed)
    if isinstance(config, EdgeTamVideoConfig):
        hf = transformers.EdgeTamVideoConfig.from_dict(config.to_dict())
    else:
        hf = hf_config(config)
    model = randomize_(model_class(config)(hf).eval(), seed=seed)
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


def load(folder: str) -> torch.nn.Module:
    """transformers' video model of the checkpoint in `folder` (by its config), on DEVICE."""
    return model_class(read_config(folder)).from_pretrained(folder).to(DEVICE).eval()


def processor(size: int) -> transformers.Sam2VideoProcessor:
    """transformers `Sam2VideoProcessor` resizing frames to size x size."""
    size = {"height": size, "width": size}
    return transformers.Sam2VideoProcessor(image_processor=transformers.Sam2ImageProcessor(size=size),
                                           video_processor=Sam2VideoVideoProcessor(size=size))
