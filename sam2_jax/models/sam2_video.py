"""The SAM 2 video model (transformers `Sam2VideoModel`): the image model plus memory.

Every method works on all objects at once: N objects are the batch axis (transformers runs them one by one).
Shapes: N objects, h = w = 64 and L = h*w at 1024 px, C = 256, M = 64 (memory width).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from .layers import (FeedForward, antialias_bilinear_matrix, bilinear_matrix, resize_with,
                     sine_position_encoding)
from .memory_attention import MemoryAttention, get_1d_sine_pe, object_pointer_tokens
from .mask_decoder import stability_scores
from .memory_encoder import MemoryEncoder, memory_mask_input
from .sam2 import Sam2ImageModule

NO_OBJ_SCORE = -1024.0  # transformers replaces the whole mask with this where the object is absent


class Sam2VideoModule(Sam2ImageModule):
    """Params are the full transformers `Sam2VideoModel` checkpoint. EdgeTAM's video module
    (`edgetam_video.EdgeTamVideoModule`) is a subclass: its own `memory_attention_class`, memory positions
    (`memory_spatial_pos`) and memory encoding (`encode_memory`)."""

    memory_attention_class: ClassVar[type[nn.Module]] = MemoryAttention

    def setup(self):
        super().setup()
        cfg = self.config
        c, m = cfg.vision_config.fpn_hidden_size, cfg.memory_encoder_output_channels
        self.memory_encoder = MemoryEncoder(cfg)
        self.memory_attention = self.memory_attention_class(cfg)
        self.object_pointer_proj = FeedForward(c, c, 3)
        self.mask_downsample = nn.Conv(1, (4, 4), strides=(4, 4), padding="VALID")
        self.no_memory_positional_encoding = self.param(  # in checkpoints, unused by the forward pass
            "no_memory_positional_encoding", nn.initializers.zeros, (1, 1, c))
        self.memory_temporal_positional_encoding = self.param(
            "memory_temporal_positional_encoding", nn.initializers.zeros, (cfg.num_maskmem, 1, 1, m))
        self.no_object_pointer = self.param("no_object_pointer", nn.initializers.zeros, (1, c))
        if cfg.enable_occlusion_spatial_embedding:
            self.occlusion_spatial_embedding_parameter = self.param(
                "occlusion_spatial_embedding_parameter", nn.initializers.zeros, (1, m))
        if cfg.enable_temporal_pos_encoding_for_object_pointers:
            self.temporal_positional_encoding_projection_layer = nn.Dense(m)

    # ------------------------------------------------------------------------------ memory attention
    def memory_spatial_pos(self, h: int, w: int):
        """The position encoding of one stored memory's tokens, (L, M): the h x w sine encoding for SAM 2."""
        return sine_position_encoding(h, w, self.config.memory_encoder_output_channels // 2).reshape(h * w, -1)

    def conditioned_features(self, level2, level2_pos, memory, memory_tpos, memory_mask, pointers,
                             pointer_offsets, pointer_mask, max_pointers, use_memory):
        """transformers `_prepare_memory_conditioned_features` for all objects.

        level2 (N,h,w,C) raw features; level2_pos (h,w,C); memory (N,S,L,M) stored features;
        memory_tpos (N,S) index into memory_temporal_positional_encoding; memory_mask (N,S);
        pointers (N,P,C); pointer_offsets (N,P) temporal offsets; pointer_mask (N,P); max_pointers: the
        normaliser + 1 (traced scalar); use_memory (N,) False on initial conditioning frames, which get
        `no_memory_embedding` instead. Returns pix_feat (N,h,w,C).
        """
        cfg = self.config
        n, h, w, c = level2.shape
        without = level2 + self.no_memory_embedding.astype(level2.dtype)

        def attend(module):
            spatial_pos = module.memory_spatial_pos(h, w)[None, None]
            tpos = module.memory_temporal_positional_encoding[:, 0, 0][memory_tpos]  # (N,S,M)
            memory_pos = spatial_pos + tpos[:, :, None, :]
            if cfg.enable_temporal_pos_encoding_for_object_pointers:
                normalised = pointer_offsets.astype(jnp.float32) / (max_pointers - 1).astype(jnp.float32)
                pointer_pos = module.temporal_positional_encoding_projection_layer(get_1d_sine_pe(normalised, c))
            else:
                pointer_pos = jnp.zeros(pointer_offsets.shape + (cfg.memory_encoder_output_channels,),
                                        level2.dtype)
            tokens, tokens_pos, tokens_mask = object_pointer_tokens(
                pointers, pointer_pos, pointer_mask, cfg.memory_encoder_output_channels)
            out = module.memory_attention(
                level2.reshape(n, h * w, c), level2_pos.reshape(1, h * w, c), memory.astype(level2.dtype),
                memory_pos, memory_mask, tokens, tokens_pos, tokens_mask)
            return out.reshape(n, h, w, c).astype(level2.dtype)

        if self.is_initializing():  # create the params (a cond cannot create them in one branch only)
            attended = attend(self)
        else:  # skip the attention when no object uses memory (e.g. the first frame)
            attended = nn.cond(jnp.any(use_memory), attend, lambda module: without, self)
        return jnp.where(use_memory[:, None, None, None], attended, without)

    # ------------------------------------------------------------------------------- mask decoding
    def segment(self, high_res_features, pix_feat, points, labels, point_mask, multimask, mask_inputs,
                is_mask_prompt, previous_logits=None, has_previous=None):
        """transformers `_single_frame_forward` (points/tracking) and `_use_mask_as_output` (mask prompts),
        batched over objects with per-object choices.

        high_res_features (s0 (1,4h,4w,C/8), s1 (1,2h,2w,C/4)) of the frame; pix_feat (N,h,w,C);
        points (N,K,2) in input pixels, labels (N,K), point_mask (N,K) real points (objects without points
        carry the single (0, 0) label -1 point transformers uses); multimask (N,) bool; mask_inputs
        (N,H,W,1) at the input size or None; is_mask_prompt (N,) bool. Training only: previous_logits
        (N,4h,4w), the low-res logits of the previous decoder pass, become the dense prompt where has_previous
        (N,) is set, as the original trainer feeds them to correction passes (transformers never does).
        Returns dict: pred_masks (N,4h,4w) low-res logits, high_res_masks (N,H,W), object_pointer (N,C),
        object_score_logits (N,), iou_scores (N,).
        """
        cfg = self.config
        n = pix_feat.shape[0]
        feat_s0, feat_s1 = (jnp.broadcast_to(f, (n,) + f.shape[1:]) for f in high_res_features)
        sparse = self.prompt_encoder.embed_points(points[:, None], labels[:, None], pad=True)
        sparse_mask = jnp.concatenate([point_mask, jnp.ones((n, 1), bool)], axis=1)[:, None]
        dense = self.prompt_encoder.no_mask_dense(n)
        if mask_inputs is not None:
            downsampled = self.mask_downsample(mask_inputs.astype(pix_feat.dtype))
            dense = jnp.where(is_mask_prompt[:, None, None, None], self.prompt_encoder.embed_masks(downsampled),
                              dense)
        if previous_logits is not None:
            fed_back = self.prompt_encoder.embed_masks(previous_logits[..., None].astype(pix_feat.dtype))
            dense = jnp.where(has_previous[:, None, None, None], fed_back, dense)
        pe = self.image_positional_embeddings()[None].astype(pix_feat.dtype)
        masks, iou, tokens, obj = self.mask_decoder(pix_feat, pe, sparse, dense, None, (feat_s0, feat_s1),
                                                    sparse_mask=sparse_mask)
        masks, iou, tokens, obj = masks[:, 0], iou[:, 0], tokens[:, 0], obj[:, 0, 0]  # drop P = 1

        # Mask-prompt objects use multimask output for their pointer, like transformers.
        multimask = multimask | is_mask_prompt
        best = jnp.argmax(iou[:, 1:], axis=-1) + 1
        decoder_cfg = cfg.mask_decoder_config
        stable = stability_scores(masks[:, 0], decoder_cfg.dynamic_multimask_stability_delta) >= (
            decoder_cfg.dynamic_multimask_stability_thresh)
        if not decoder_cfg.dynamic_multimask_via_stability:
            stable = jnp.ones_like(stable)
        slot = jnp.where(multimask, best, jnp.where(stable, 0, best))
        token_slot = jnp.where(multimask, best, 0)
        low = jnp.take_along_axis(masks, slot[:, None, None, None], axis=1)[:, 0]
        iou_out = jnp.take_along_axis(iou, slot[:, None], axis=1)[:, 0]
        token = jnp.take_along_axis(tokens, token_slot[:, None, None], axis=1)[:, 0]

        is_obj = obj > 0
        low = jnp.where(is_obj[:, None, None], low, NO_OBJ_SCORE)
        size = cfg.image_size
        high = resize_with(low[..., None], bilinear_matrix(low.shape[1], size), bilinear_matrix(low.shape[2], size))
        pointer = self.blend_pointer(self.object_pointer_proj(token), is_obj)

        if mask_inputs is not None:  # transformers `_use_mask_as_output`
            m = mask_inputs.astype(jnp.float32)
            mask_high = m * 20.0 - 10.0
            s = cfg.prompt_encoder_config.mask_input_size
            mask_low = resize_with(mask_high, antialias_bilinear_matrix(size, s), antialias_bilinear_matrix(size, s))
            mask_is_obj = jnp.any(m > 0, axis=(1, 2, 3))
            sel = is_mask_prompt
            low = jnp.where(sel[:, None, None], mask_low[..., 0], low)
            high = jnp.where(sel[:, None, None, None], mask_high, high)
            pointer = jnp.where(sel[:, None], self.blend_pointer(pointer, mask_is_obj), pointer)
            obj = jnp.where(sel, 20.0 * mask_is_obj - 10.0, obj)
            iou_out = jnp.where(sel, 1.0, iou_out)
        return {"pred_masks": low, "high_res_masks": high[..., 0], "object_pointer": pointer,
                "object_score_logits": obj, "iou_scores": iou_out}

    def blend_pointer(self, pointer, is_obj):
        """Hard blend with `no_object_pointer` where the object is absent (transformers MV:2146)."""
        lam = is_obj.astype(pointer.dtype)[:, None]
        return lam * pointer + (1 - lam) * self.no_object_pointer.astype(pointer.dtype)

    # ----------------------------------------------------------------------------- memory encoding
    def encode_memory(self, level2, high_res_masks, object_score_logits, binarize, feature_dtype=jnp.bfloat16):
        """transformers `_encode_new_memory`: level2 (N,h,w,C) raw features; high_res_masks (N,H,W) logits;
        object_score_logits (N,); binarize: bool (scalar or (N,)). Returns features (N,h,w,M) in
        `feature_dtype` (bfloat16 as inference stores them; training keeps its compute dtype)."""
        features, _ = self.spatial_memory(level2, high_res_masks, object_score_logits, binarize)
        return features.astype(feature_dtype)

    def spatial_memory(self, level2, high_res_masks, object_score_logits, binarize):
        """The memory encoder's output with the occlusion embedding added where the object is absent:
        features (N,h,w,M) in the compute dtype and their sine encoding (h,w,M)."""
        masks = memory_mask_input(high_res_masks[..., None], binarize, self.config)
        features, pos = self.memory_encoder(level2, masks)
        if self.config.enable_occlusion_spatial_embedding:
            absent = (object_score_logits <= 0).astype(features.dtype)[:, None, None, None]
            features = features + absent * self.occlusion_spatial_embedding_parameter[0]
        return features, pos

    def __call__(self, pixel_values):
        """Used by `init`: touches every parameter once."""
        super().__call__(pixel_values)
        cfg = self.config
        (s0, s1, level2), pos = self.vision_features(pixel_values[:1])
        h, w, c = level2.shape[1:]
        m = cfg.memory_encoder_output_channels
        tokens = self.memory_spatial_pos(h, w).shape[0]
        pix = self.conditioned_features(level2, pos, jnp.zeros((1, 1, tokens, m)), jnp.zeros((1, 1), jnp.int32),
                                        jnp.ones((1, 1), bool), jnp.zeros((1, 1, c)), jnp.zeros((1, 1), jnp.int32),
                                        jnp.ones((1, 1), bool), jnp.asarray(16), jnp.ones((1,), bool))
        size = cfg.image_size
        out = self.segment((s0, s1), pix, jnp.zeros((1, 1, 2)), -jnp.ones((1, 1), jnp.int32), jnp.ones((1, 1), bool),
                           jnp.ones((1,), bool), jnp.zeros((1, size, size, 1)), jnp.ones((1,), bool))
        return self.encode_memory(level2, out["high_res_masks"], out["object_score_logits"], True)
