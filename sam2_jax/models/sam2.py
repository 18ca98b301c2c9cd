"""The SAM 2 image model (transformers `Sam2Model`): vision encoder, prompt encoder and mask decoder. The
EdgeTAM image model (transformers `EdgeTamModel`) is the same module with RepViT's vision encoder, chosen by
the config (`edgetam.vision_encoder`).

Top-level names mirror transformers: `vision_encoder`, `prompt_encoder`, `mask_decoder`,
`shared_image_embedding`, `no_memory_embedding`. Shapes: B images, P prompts (objects) per image,
N points per prompt, C = 256, h = w = 64 at 1024 px.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from ..config import Sam2Config
from .edgetam import vision_encoder
from .layers import FourierPositionEmbedding, resize_bilinear
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder


class Sam2ImageModule(nn.Module):
    """Image segmentation from prompts; its params are the image subset of a SAM 2 checkpoint."""

    config: Sam2Config

    def setup(self):
        cfg = self.config
        self.vision_encoder = vision_encoder(cfg.vision_config)
        self.prompt_encoder = PromptEncoder(cfg.prompt_encoder_config)
        self.mask_decoder = MaskDecoder(cfg.mask_decoder_config)
        self.shared_image_embedding = FourierPositionEmbedding(
            num_pos_feats=cfg.prompt_encoder_config.hidden_size // 2, scale=cfg.prompt_encoder_config.scale)
        self.no_memory_embedding = self.param(
            "no_memory_embedding", nn.initializers.zeros, (1, 1, cfg.vision_config.fpn_hidden_size))

    def vision_features(self, pixel_values):
        """pixel_values (B,H,W,3) -> raw FPN features (high-res s0 (B,4h,4w,32), s1 (B,2h,2w,64) already
        projected by conv_s0/conv_s1, and the level-2 map (B,h,w,C)) plus the level-2 sine PE (h,w,C)."""
        out = self.vision_encoder(pixel_values)
        level0, level1, level2 = out["fpn_hidden_states"][-3:]
        feat_s0, feat_s1 = self.mask_decoder.project_high_res_features(level0, level1)
        return (feat_s0, feat_s1, level2), out["fpn_position_encoding"][-1]

    def image_embeddings(self, pixel_values):
        """transformers `get_image_embeddings`: the decoder inputs, with no_memory_embedding added to level 2."""
        (feat_s0, feat_s1, level2), _ = self.vision_features(pixel_values)
        return feat_s0, feat_s1, level2 + self.no_memory_embedding.astype(level2.dtype)

    def image_positional_embeddings(self):
        """transformers `get_image_wide_positional_embeddings` as (h,w,C)."""
        size = self.config.prompt_encoder_config.image_embedding_size
        grid = (np.arange(size, dtype=np.float32) + np.float32(0.5)) / np.float32(size)
        coords = np.stack(np.meshgrid(grid, grid, indexing="xy"), axis=-1)  # (h,w,2) as (x,y)
        return self.shared_image_embedding(jnp.asarray(coords))

    def decode(self, image_embeddings, input_points=None, input_labels=None, input_boxes=None, input_masks=None,
               point_mask=None, multimask_output: bool = True):
        """transformers `Sam2Model.forward` after the vision encoder.

        image_embeddings: (s0, s1, level2) channels-last; input_points (B,P,N,2) in input-frame pixels;
        input_labels (B,P,N); input_boxes (B,P,4); input_masks (B,H,W,1); point_mask (B,P,N) bool marks the
        real points of a prompt padded to a static bucket (padding is left out of attention).
        Returns masks (B,P,k,4h,4w), iou (B,P,k), object score logits (B,P,1).
        """
        feat_s0, feat_s1, level2 = image_embeddings
        batch = level2.shape[0]
        if input_points is None and input_boxes is None:
            input_points = jnp.zeros((batch, 1, 1, 2), level2.dtype)
            input_labels = -jnp.ones((batch, 1, 1), jnp.int32)
            point_mask = None
        if input_masks is not None:
            size = self.config.prompt_encoder_config.mask_input_size
            if input_masks.shape[1:3] != (size, size):
                # As transformers: resize in float32, then back to the caller's dtype.
                resized = resize_bilinear(input_masks.astype(jnp.float32), (size, size), antialias=True)
                input_masks = resized.astype(input_masks.dtype)
        sparse, dense = self.prompt_encoder(input_points, input_labels, input_boxes, input_masks)
        sparse_mask = None
        if point_mask is not None:
            # Real points, then the (always real) pad point or box tokens appended by the prompt encoder.
            extra = sparse.shape[2] - point_mask.shape[2]
            sparse_mask = jnp.concatenate(
                [point_mask, jnp.ones(point_mask.shape[:2] + (extra,), bool)], axis=2)
        pe = self.image_positional_embeddings()[None].astype(level2.dtype)
        masks, iou, _, object_score_logits = self.mask_decoder(
            level2, pe, sparse, dense, multimask_output, (feat_s0, feat_s1), sparse_mask=sparse_mask)
        return masks, iou, object_score_logits

    def __call__(self, pixel_values):
        """Used by `init`: runs every prompt type (points, boxes, masks, none) so that every parameter exists."""
        batch = pixel_values.shape[0]
        size = self.config.prompt_encoder_config.mask_input_size
        embeddings = self.image_embeddings(pixel_values)
        self.decode(embeddings)
        return self.decode(embeddings, jnp.zeros((batch, 1, 1, 2)), jnp.ones((batch, 1, 1), jnp.int32),
                           jnp.zeros((batch, 1, 4)), jnp.zeros((batch, size, size, 1)))
