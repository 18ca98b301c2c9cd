"""transformers' `Sam2VideoModel.get_image_features`, as a mixin of `Sam2VideoModel`."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..models.layers import sine_position_encoding
from ..tracking import tracker
from .image import ModelOutput

# The finer levels' encodings follow from their sizes alone (the tracker computes only the last level's).
_position_encoding = functools.lru_cache(jax.jit(sine_position_encoding, static_argnums=(0, 1, 2),
                                                 static_argnames="dtype"))


@dataclasses.dataclass
class Sam2VideoVisionEncoderOutput(ModelOutput):
    """fpn_hidden_states: [(4h*4w, B, 32), (2h*2w, B, 64), (h*w, B, 256)] (transformers' (HW, B, C) layout, the
    first two already through the mask decoder's conv_s0/conv_s1, as transformers precomputes them);
    fpn_position_encoding: the levels' sine encodings, [(4h*4w, B, 256), (2h*2w, B, 256), (h*w, B, 256)]."""

    fpn_hidden_states: list
    fpn_position_encoding: list


class VideoFeatures:
    """`get_image_features` for a model with `params`, `dtype`, `config` and `module`."""

    @functools.cached_property
    def _encode(self):
        """The vision encoder on a batch of any size: a program of its own (sessions use their program set's)."""
        return jax.jit(functools.partial(tracker.encode_frames, self.module))

    def get_image_features(self, pixel_values) -> Sam2VideoVisionEncoderOutput:
        """transformers `get_image_features`: pixel_values (B,3,S,S) from the processor -> the frames' features
        as the tracker uses them (see `Sam2VideoVisionEncoderOutput`)."""
        shape = tuple(np.shape(pixel_values))
        size = self.config.prompt_encoder_config.image_size
        if len(shape) != 4 or shape[1:] != (3, size, size):
            raise ValueError(f"pixel_values: expected shape (batch, 3, {size}, {size}) as the processor returns, got "
                             f"{shape}")
        if not jnp.issubdtype(jnp.asarray(pixel_values).dtype, jnp.floating):
            raise TypeError(f"pixel_values: expected floating point values (normalised by the processor), got dtype "
                            f"{jnp.asarray(pixel_values).dtype}")
        frames = jnp.transpose(jnp.asarray(pixel_values, self.dtype), (0, 2, 3, 1))
        levels, pe = self._encode(self.params, frames)

        def hw_b_c(x):
            x = jnp.asarray(x)
            x = x[None] if x.ndim == 3 else x  # the position encoding has no batch axis
            x = jnp.broadcast_to(x, (shape[0], *x.shape[1:])) if x.shape[0] == 1 else x
            return jnp.transpose(x.reshape(x.shape[0], -1, x.shape[-1]), (1, 0, 2))

        channels = self.config.vision_config.fpn_hidden_size
        fine = [_position_encoding(x.shape[1], x.shape[2], channels // 2, dtype=pe.dtype) for x in levels[:-1]]
        return Sam2VideoVisionEncoderOutput(fpn_hidden_states=[hw_b_c(x) for x in levels],
                                            fpn_position_encoding=[hw_b_c(x) for x in (*fine, pe)])


__all__ = ["VideoFeatures", "Sam2VideoVisionEncoderOutput"]
