"""PyTorch SAM 2 and EdgeTAM checkpoints to sam2-jax and back (the torch side of the project).

An original facebookresearch/sam2 or facebookresearch/EdgeTAM `.pt` becomes a transformers folder (config.json +
model.safetensors), which is sam2-jax's checkpoint format, with transformers' own renaming; and back, bit for bit.
Command line: `python -m convert SRC DST [--to transformers|original] [--verify] [--overwrite]`.
"""

from .checkpoint import FORMATS, Summary, convert, read_checkpoint, variant_name
from .original import infer_preset, original_shapes, to_transformers_key, transformers_shapes

__all__ = ["FORMATS", "Summary", "convert", "read_checkpoint", "variant_name", "infer_preset", "original_shapes",
           "to_transformers_key", "transformers_shapes"]
