"""`sam2-jax info`: JAX's devices, which memory attention formulation runs and why, and with --model, a
checkpoint's config."""

from __future__ import annotations

import argparse

from .options import model_config, model_name


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of `sam2-jax info`."""
    p.add_argument("--model", help="a checkpoint folder or sam2-jax-shapes")


def run(args) -> int:
    """`sam2-jax info`: JAX's devices, the memory attention formulation (measured now on a CPU that has no
    choice cached yet: a few seconds), and a checkpoint's config."""
    import jax

    from .. import __version__
    from ..models import attention_choice

    print(f"sam2-jax {__version__}, jax {jax.__version__}")
    for device in jax.devices():
        print(f"device: {device.platform} {device.device_kind} (id {device.id})")
    print(attention_choice.describe())
    if args.model:
        config = model_config(args.model)
        print(f"model: {args.model}: model_type {config.model_type}, {model_name(config)}, image size "
              f"{config.image_size}, {backbone_summary(config)}")
    return 0


def backbone_summary(config) -> str:
    """The image encoder's trunk of a config in a few words: Hiera's stage widths and depths (SAM 2), or RepViT's
    (EdgeTAM, from timm's architecture table that `models.repvit` follows)."""
    backbone = config.vision_config.backbone_config
    if config.version == "edgetam":
        from ..models.repvit import ARCHITECTURES

        name = backbone["architecture"]
        arch = ARCHITECTURES[name]
        return f"RepViT {name} dims {list(arch['embed_dim'])}, blocks {list(arch['depth'])}"
    return f"Hiera dims {list(backbone.embed_dim_per_stage)}, blocks {list(backbone.blocks_per_stage)}"
