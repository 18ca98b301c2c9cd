"""Prompt encoder: points, boxes and masks to sparse and dense embeddings.

transformers `Sam2PromptEncoder` / `Sam2VideoPromptEncoder` (the same math). Shapes: B images (or objects),
P prompts per image, N points per prompt, C = hidden_size, (h, w) the image-embedding grid
(image_size // patch_size), masks at 4h x 4w. Point and box coordinates are in pixels of the model's input
frame (image_size x image_size).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ..config import PromptEncoderConfig
from . import layers


class MaskEmbedding(nn.Module):
    """transformers `Sam2MaskEmbedding`: (B, 4h, 4w, 1) mask logits -> (B, h, w, C).

    conv 2x2 s2 -> LayerNorm -> GELU -> conv 2x2 s2 -> LayerNorm -> GELU -> conv 1x1.
    """

    config: PromptEncoderConfig

    @nn.compact
    def __call__(self, masks):
        cfg = self.config
        x = nn.Conv(cfg.mask_input_channels // 4, (2, 2), strides=(2, 2), padding="VALID", name="conv1")(masks)
        x = layers.gelu(layers.layer_norm(cfg.layer_norm_eps, name="layer_norm1")(x))
        x = nn.Conv(cfg.mask_input_channels, (2, 2), strides=(2, 2), padding="VALID", name="conv2")(x)
        x = layers.gelu(layers.layer_norm(cfg.layer_norm_eps, name="layer_norm2")(x))
        return nn.Conv(cfg.hidden_size, (1, 1), name="conv3")(x)


class PromptEncoder(nn.Module):
    """transformers `Sam2PromptEncoder`. Params are created lazily per method: to initialise them all, call
    `__call__` with points and masks, and `no_mask_dense`, inside one `init`."""

    config: PromptEncoderConfig

    def setup(self):
        cfg = self.config
        self.shared_embedding = layers.FourierPositionEmbedding(cfg.hidden_size // 2, cfg.scale)
        self.point_embed = nn.Embed(cfg.num_point_embeddings, cfg.hidden_size)
        self.not_a_point_embed = nn.Embed(1, cfg.hidden_size)
        self.no_mask_embed = nn.Embed(1, cfg.hidden_size)
        self.mask_embed = MaskEmbedding(cfg)

    def embed_points(self, points, labels, pad: bool):
        """transformers `_embed_points`: points (B, P, N, 2) float pixels (x, y), labels (B, P, N) int
        -> (B, P, N + pad, C).

        Labels: 0 negative, 1 positive, 2 / 3 box corners, -1 not-a-point, -10 padding (a zero token that still
        takes part in attention). With `pad`, a not-a-point token is appended.
        """
        points = points.astype(jnp.float32) + 0.5  # pixel centres; the pad point is appended after the shift
        if pad:
            points = jnp.pad(points, ((0, 0), (0, 0), (0, 1), (0, 0)))
            labels = jnp.pad(labels, ((0, 0), (0, 0), (0, 1)), constant_values=-1)
        embedding = self.shared_embedding(points / self.config.image_size)
        label = labels[..., None]
        embedding = jnp.where(label == -1, self.not_a_point_embed.embedding[0], embedding)
        embedding = jnp.where(label == -10, 0.0, embedding)
        return embedding + jnp.where(label >= 0, self.point_embed(jnp.maximum(labels, 0)), 0.0)

    def embed_boxes(self, boxes):
        """transformers `_embed_boxes` (image path): boxes (B, P, 4) pixels (x0, y0, x1, y1) -> (B, P, 3, C),
        the two corners then a not-a-point token."""
        corners = (boxes.astype(jnp.float32) + 0.5).reshape(*boxes.shape[:-1], 2, 2)
        embedding = self.shared_embedding(corners / self.config.image_size) + self.point_embed.embedding[2:4]
        pad = jnp.broadcast_to(self.not_a_point_embed.embedding, (*boxes.shape[:-1], 1, self.config.hidden_size))
        return jnp.concatenate([embedding, pad], axis=-2)

    def embed_masks(self, masks):
        """Mask prompts (B, 4h, 4w, 1) logits -> dense embeddings (B, h, w, C)."""
        return self.mask_embed(masks)

    def no_mask_dense(self, batch_size: int):
        """The dense embedding without a mask prompt: `no_mask_embed` broadcast to (B, h, w, C)."""
        size = self.config.image_embedding_size
        return jnp.broadcast_to(self.no_mask_embed.embedding[0], (batch_size, size, size, self.config.hidden_size))

    def __call__(self, input_points=None, input_labels=None, input_boxes=None, input_masks=None):
        """transformers `Sam2PromptEncoder.forward`: points (B, P, N, 2) with labels (B, P, N), boxes (B, P, 4),
        masks (B, 4h, 4w, 1), each optional -> (sparse (B, P, N', C) or None, dense (B, h, w, C)).

        Points get the not-a-point pad token only when there are no boxes; box tokens follow point tokens.
        """
        sparse, batch_size = None, 1
        if input_points is not None:
            if input_labels is None:
                raise ValueError("input_labels: expected labels for the given input_points, got None")
            batch_size = input_points.shape[0]
            sparse = self.embed_points(input_points, input_labels, pad=input_boxes is None)
        if input_boxes is not None:
            batch_size = input_boxes.shape[0]
            boxes = self.embed_boxes(input_boxes)
            sparse = boxes if sparse is None else jnp.concatenate([sparse, boxes], axis=2)
        dense = self.no_mask_dense(batch_size) if input_masks is None else self.embed_masks(input_masks)
        return sparse, dense
