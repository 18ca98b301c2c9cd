"""The EdgeTAM video model (transformers `EdgeTamVideoModel`): SAM 2's video module (`Sam2VideoModule`) with
EdgeTAM's vision encoder (chosen by the config, as for the image model) and three differences, read from
transformers' `EdgeTamVideoModel`:

- memory encoding (`_encode_new_memory`): after SAM 2's memory encoder and occlusion embedding, the spatial
  perceiver (`spatial_perceiver`, `perceiver.PerceiverResampler`) compresses each memory to its N = N1 + N2
  latents (512), kept in the compute dtype (SAM 2 stores bfloat16);
- memory attention: `EdgeTamMemoryAttention` over those latents; each memory's position encoding is the
  perceiver's (`perceiver.latent_position_encoding`) plus the temporal encoding, as SAM 2 adds it;
- transformers runs the objects one at a time and binarises the mask for memory per object (its own point
  or mask inputs on the frame), where SAM 2 encodes all objects together with one flag (`StepInputs.binarize`
  carries it per object for both).

Everything else (prompt encoder, mask decoder, object pointers, mask prompts as output, memory encoder) is
SAM 2's code. Shapes as `sam2_video`, with L = N latents per stored memory.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..config import EdgeTamVideoConfig, Sam2VideoConfig
from .edgetam_memory_attention import EdgeTamMemoryAttention
from .perceiver import PerceiverResampler, latent_position_encoding
from .sam2_video import Sam2VideoModule


class EdgeTamVideoModule(Sam2VideoModule):
    """Params are the full transformers `EdgeTamVideoModel` checkpoint (SAM 2's video keys with EdgeTAM's
    `memory_attention.*`, plus `spatial_perceiver.*`)."""

    memory_attention_class = EdgeTamMemoryAttention

    def setup(self):
        super().setup()
        self.spatial_perceiver = PerceiverResampler(self.config)

    def memory_spatial_pos(self, h: int, w: int):
        """The perceiver's latent position encoding (N, M), whatever the feature map's size."""
        return latent_position_encoding(self.config)

    def encode_memory(self, level2, high_res_masks, object_score_logits, binarize, feature_dtype=None):
        """transformers `_encode_new_memory`: SAM 2's memory, then the perceiver. Returns latents (N_obj, N, M)
        in `feature_dtype` (default: the compute dtype, as transformers stores them)."""
        features, pos = self.spatial_memory(level2, high_res_masks, object_score_logits, binarize)
        latents, _ = self.spatial_perceiver(features, pos)
        return latents.astype(level2.dtype if feature_dtype is None else feature_dtype)


def video_module(config: Sam2VideoConfig | EdgeTamVideoConfig) -> Sam2VideoModule:
    """The video module a config describes: `EdgeTamVideoModule` for EdgeTAM, `Sam2VideoModule` for SAM 2."""
    if isinstance(config, EdgeTamVideoConfig):
        return EdgeTamVideoModule(config)
    if isinstance(config, Sam2VideoConfig):
        return Sam2VideoModule(config)
    raise TypeError(f"config: expected a Sam2VideoConfig or EdgeTamVideoConfig, got {type(config).__name__}")


def memory_feature_dtype(config: Sam2VideoConfig | EdgeTamVideoConfig, dtype) -> jnp.dtype:
    """The dtype a tracker stores memory features in for a model of compute `dtype`: bfloat16 for SAM 2 (as
    transformers' `Sam2VideoModel`), the compute dtype for EdgeTAM (as `EdgeTamVideoModel`)."""
    return jnp.dtype(dtype) if isinstance(config, EdgeTamVideoConfig) else jnp.dtype(jnp.bfloat16)


def memory_tokens(config: Sam2VideoConfig | EdgeTamVideoConfig) -> int:
    """Tokens per stored memory: the perceiver's latents for EdgeTAM, the h*w feature map for SAM 2."""
    if isinstance(config, EdgeTamVideoConfig):
        return config.perceiver_resampler_num_latents + config.perceiver_resampler_num_latents_2d
    return config.prompt_encoder_config.image_embedding_size ** 2
