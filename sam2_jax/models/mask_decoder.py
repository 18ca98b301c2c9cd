"""Mask decoder: two-way transformer between prompt tokens and image embeddings, then mask, IoU and
object-score heads.

transformers `Sam2MaskDecoder` / `Sam2VideoMaskDecoder` (the same math). Shapes: B images (or objects),
P prompts per image (a batch axis here), N sparse prompt tokens, C = hidden_size, (h, w) the image-embedding
grid, k the number of masks returned. Output masks are logits at (4h, 4w).

`sparse_mask` is our addition for static-shape prompt buckets: tokens marked False are left out of every
attention where they are keys, so a padded prompt gives the numbers of the unpadded one. (transformers' -10
pad points are different: real zero tokens that do take part in attention.)
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ..config import MaskDecoderConfig
from . import layers

_TRANSFORMER_LN_EPS = 1e-5  # torch.nn.LayerNorm default, used in the two-way transformer
_UPSCALE_LN_EPS = 1e-6  # Sam2LayerNorm default


class Attention(nn.Module):
    """transformers `Sam2Attention`: q/k/v projected to hidden_size // downsample_rate, multi-head attention,
    projected back. query (..., Lq, C), key/value (..., Lk, C), key_mask (..., Lk) bool -> (..., Lq, C)."""

    config: MaskDecoderConfig
    downsample_rate: int

    @nn.compact
    def __call__(self, query, key, value, key_mask=None):
        cfg = self.config
        internal = cfg.hidden_size // self.downsample_rate
        head_dim = internal // cfg.num_attention_heads

        def project(x, name):
            return nn.Dense(internal, name=name)(x).reshape(*x.shape[:-1], cfg.num_attention_heads, head_dim)

        out = layers.attention(project(query, "q_proj"), project(key, "k_proj"), project(value, "v_proj"),
                               scale=head_dim ** -0.5, mask=key_mask)
        return nn.Dense(cfg.hidden_size, name="o_proj")(out.reshape(*out.shape[:-2], internal))


class TwoWayAttentionBlock(nn.Module):
    """transformers `Sam2TwoWayAttentionBlock` (post-norm): token self-attention, tokens -> image, MLP,
    image -> tokens. queries (B, P, T, C), keys (B, P, L, C), PEs broadcastable to them, token_mask (B, P, T)."""

    config: MaskDecoderConfig
    skip_first_layer_pe: bool

    @nn.compact
    def __call__(self, queries, keys, query_pe, key_pe, token_mask):
        cfg = self.config

        def norm(name):
            return layers.layer_norm(_TRANSFORMER_LN_EPS, name=name)

        self_attn = Attention(cfg, 1, name="self_attn")
        if self.skip_first_layer_pe:
            queries = self_attn(queries, queries, queries, token_mask)
        else:
            query = queries + query_pe
            queries = queries + self_attn(query, query, queries, token_mask)
        queries = norm("layer_norm1")(queries)

        attn = Attention(cfg, cfg.attention_downsample_rate, name="cross_attn_token_to_image")
        queries = norm("layer_norm2")(queries + attn(queries + query_pe, keys + key_pe, keys))

        # transformers builds this MLP with num_layers=config.num_hidden_layers.
        mlp = layers.FeedForward(cfg.mlp_dim, cfg.hidden_size, cfg.num_hidden_layers, name="mlp")
        queries = norm("layer_norm3")(queries + mlp(queries))

        attn = Attention(cfg, cfg.attention_downsample_rate, name="cross_attn_image_to_token")
        keys = norm("layer_norm4")(keys + attn(keys + key_pe, queries + query_pe, queries, token_mask))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """transformers `Sam2TwoWayTransformer`. tokens (B, P, T, C) (also their own PE), image (B, P, L, C),
    image_pe broadcastable to it, token_mask (B, P, T) or None -> (tokens, image) updated."""

    config: MaskDecoderConfig

    @nn.compact
    def __call__(self, tokens, image, image_pe, token_mask):
        cfg = self.config
        queries, keys = tokens, image
        for i in range(cfg.num_hidden_layers):
            block = TwoWayAttentionBlock(cfg, skip_first_layer_pe=i == 0, name=f"layers.{i}")
            queries, keys = block(queries, keys, tokens, image_pe, token_mask)
        attn = Attention(cfg, cfg.attention_downsample_rate, name="final_attn_token_to_image")
        queries = queries + attn(queries + tokens, keys + image_pe, keys)
        queries = layers.layer_norm(_TRANSFORMER_LN_EPS, name="layer_norm_final_attn")(queries)
        return queries, keys


class ConvTranspose2x2(nn.Module):
    """nn.ConvTranspose2d(kernel_size=2, stride=2) with the PyTorch params `weight` (in, out, 2, 2) and `bias`.

    No overlap: out[2i+a, 2j+b, o] = sum_c x[i, j, c] weight[c, o, a, b] + bias[o]. (..., H, W, in) ->
    (..., 2H, 2W, out).
    """

    features: int

    @nn.compact
    def __call__(self, x):
        weight = self.param("weight", nn.initializers.lecun_normal(in_axis=0, out_axis=1),
                            (x.shape[-1], self.features, 2, 2))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        y = jnp.einsum("...ijc,coab->...iajbo", x, weight)
        *lead, h, _, w, _, o = y.shape
        return y.reshape(*lead, 2 * h, 2 * w, o) + bias


def stability_scores(mask_logits, delta: float):
    """transformers `_get_stability_scores`: (..., H, W) logits -> (...,) area(> delta) / area(> -delta),
    1 where the latter is empty."""
    area_i = jnp.sum(mask_logits > delta, axis=(-2, -1)).astype(jnp.float32)
    area_u = jnp.sum(mask_logits > -delta, axis=(-2, -1)).astype(jnp.float32)
    return jnp.where(area_u > 0, area_i / jnp.maximum(area_u, 1.0), 1.0)


class MaskDecoder(nn.Module):
    """transformers `Sam2MaskDecoder`, in eval mode. Params are created lazily per method: to initialise them
    all, call both `project_high_res_features` and `__call__` inside one `init`."""

    config: MaskDecoderConfig

    def setup(self):
        cfg = self.config
        c = cfg.hidden_size
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.obj_score_token = nn.Embed(1, c)
        self.iou_token = nn.Embed(1, c)
        self.mask_tokens = nn.Embed(self.num_mask_tokens, c)
        self.transformer = TwoWayTransformer(cfg)
        self.upscale_conv1 = ConvTranspose2x2(c // 4)
        self.upscale_layer_norm = layers.layer_norm(_UPSCALE_LN_EPS)
        self.upscale_conv2 = ConvTranspose2x2(c // 8)
        self.output_hypernetworks_mlps = [
            layers.FeedForward(c, c // 8, 3, name=f"output_hypernetworks_mlps.{i}")
            for i in range(self.num_mask_tokens)]
        self.iou_prediction_head = layers.FeedForward(cfg.iou_head_hidden_dim, self.num_mask_tokens,
                                                      cfg.iou_head_depth, sigmoid_output=True)
        self.pred_obj_score_head = layers.FeedForward(c, 1, 3)
        self.conv_s0 = nn.Conv(c // 8, (1, 1))
        self.conv_s1 = nn.Conv(c // 4, (1, 1))

    def project_high_res_features(self, level0, level1):
        """FPN levels 0 (B, 4h, 4w, C) and 1 (B, 2h, 2w, C) -> (feat_s0 (B, 4h, 4w, C/8), feat_s1 (B, 2h, 2w, C/4))."""
        return self.conv_s0(level0), self.conv_s1(level1)

    def __call__(self, image_embeddings, image_positional_embeddings, sparse_prompt_embeddings,
                 dense_prompt_embeddings, multimask_output: bool, high_resolution_features, sparse_mask=None):
        """transformers `Sam2MaskDecoder.forward`.

        image_embeddings (B, h, w, C); image_positional_embeddings (B or 1, h, w, C); sparse_prompt_embeddings
        (B, P, N, C); dense_prompt_embeddings (B, h, w, C); multimask_output a static bool, or None for all
        K + 1 slots unselected;
        high_resolution_features (feat_s0 (B, 4h, 4w, C/8), feat_s1 (B, 2h, 2w, C/4)); sparse_mask (B, P, N)
        bool, True = real token, or None for all real.

        Returns masks (B, P, k, 4h, 4w) logits, iou_pred (B, P, k), sam_tokens_out (B, P, k, C) and
        object_score_logits (B, P, 1), with k = num_multimask_outputs if multimask_output else 1.
        """
        b, h, w, c = image_embeddings.shape
        p = sparse_prompt_embeddings.shape[1]
        output_tokens = jnp.concatenate(
            [self.obj_score_token.embedding, self.iou_token.embedding, self.mask_tokens.embedding], axis=0)
        num_out = output_tokens.shape[0]
        tokens = jnp.concatenate(
            [jnp.broadcast_to(output_tokens, (b, p, num_out, c)), sparse_prompt_embeddings], axis=2)
        token_mask = None
        if sparse_mask is not None:
            token_mask = jnp.concatenate([jnp.ones((b, p, num_out), bool), sparse_mask.astype(bool)], axis=2)

        image = (image_embeddings + dense_prompt_embeddings).reshape(b, 1, h * w, c)
        image = jnp.broadcast_to(image, (b, p, h * w, c))
        image_pe = image_positional_embeddings.reshape(-1, 1, h * w, c)
        tokens, image = self.transformer(tokens, image, image_pe, token_mask)
        mask_tokens_out = tokens[:, :, 2:2 + self.num_mask_tokens]

        feat_s0, feat_s1 = high_resolution_features
        upscaled = self.upscale_conv1(image.reshape(b, p, h, w, c)) + feat_s1[:, None]
        upscaled = layers.gelu(self.upscale_layer_norm(upscaled))
        upscaled = layers.gelu(self.upscale_conv2(upscaled) + feat_s0[:, None])  # (B, P, 4h, 4w, C/8)
        hyper_in = jnp.stack([mlp(mask_tokens_out[:, :, i])
                              for i, mlp in enumerate(self.output_hypernetworks_mlps)], axis=2)
        masks = jnp.einsum("bpkc,bpyxc->bpkyx", hyper_in, upscaled)

        iou_pred = self.iou_prediction_head(tokens[:, :, 1])
        object_score_logits = self.pred_obj_score_head(tokens[:, :, 0])

        if multimask_output is None:  # every slot, for callers that choose per prompt (the video tracker)
            return masks, iou_pred, mask_tokens_out, object_score_logits
        if multimask_output:
            masks, iou_pred, sam_tokens_out = masks[:, :, 1:], iou_pred[:, :, 1:], mask_tokens_out[:, :, 1:]
        else:
            if self.config.dynamic_multimask_via_stability:
                masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
            else:
                masks, iou_pred = masks[:, :, :1], iou_pred[:, :, :1]
            sam_tokens_out = mask_tokens_out[:, :, :1]
        return masks, iou_pred, sam_tokens_out, object_score_logits

    def _dynamic_multimask_via_stability(self, masks, iou_pred):
        """transformers `_dynamic_multimask_via_stability`: keep mask 0 where it is stable, else the multimask
        output with the best predicted IoU (first on ties). masks (B, P, K, H, W), iou_pred (B, P, K) ->
        (B, P, 1, H, W), (B, P, 1)."""
        best = jnp.argmax(iou_pred[:, :, 1:], axis=-1)[:, :, None] + 1  # (B, P, 1)
        best_masks = jnp.take_along_axis(masks, best[..., None, None], axis=2)
        best_iou = jnp.take_along_axis(iou_pred, best, axis=2)
        is_stable = stability_scores(masks[:, :, :1], self.config.dynamic_multimask_stability_delta) >= (
            self.config.dynamic_multimask_stability_thresh)
        return (jnp.where(is_stable[..., None, None], masks[:, :, :1], best_masks),
                jnp.where(is_stable, iou_pred[:, :, :1], best_iou))
