"""The original facebookresearch/EdgeTAM checkpoint layout (`edgetam.pt`) and its renaming to transformers keys.

EdgeTAM's original model is SAM 2's (`SAM2Base`) with three changes to its tensors: the trunk is timm's RepViT-M1
(`image_encoder.trunk.body.*`, timm's own names, as transformers' `TimmWrapperModel` keeps them under
`timm_model.*`), the memory attention has EdgeTAM's widths, and a spatial perceiver (`spatial_perceiver.*`)
compresses each memory frame. The renaming is transformers' `convert_edgetam_video_to_hf.py`: SAM 2's, plus
`body.` -> `timm_model.`, the perceiver's names, the memory attention's `linear1`/`linear2` -> `mlp.up_proj`/
`mlp.down_proj`, and each fused `to_kv` projection split into `k_proj` (first half of the rows) and `v_proj`.
The key order of `original_shapes` follows the original modules' registration as far as known (no original
EdgeTAM package is installed to compare with); conversion does not depend on it.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np

from sam2_jax import weights
from sam2_jax.config import EdgeTamVideoConfig
from sam2_jax.models.repvit import RepVit

from .original import (Shapes, _check_video_config, memory_attention, memory_encoder, memory_tokens, neck,
                       sam_heads, to_transformers_key)

TRUNK = "image_encoder.trunk.body."  # timm's features_only RepViT in the original (`TimmBackbone.body`)
PERCEIVER = "spatial_perceiver"

# EdgeTAM's substring renames after SAM 2's (transformers' table, in its order).
_RENAMES = (("body.", "timm_model."), ("ff.0", "mlp.layer_norm"), ("ff.1", "mlp.up_proj"), ("ff.3", "mlp.down_proj"))
# A perceiver layer's attention tensors (after SAM 2's ".norm" -> ".layer_norm"): (module, tensor) -> new name.
_PERCEIVER_LAYER = re.compile(rf"^({PERCEIVER}\.layers\.\d+)\.(attn|self_attn)\.(\w+)\.(weight|bias)$")
_PERCEIVER_NAMES = {("attn", "layer_norm_x"): "layer_norm_input", ("attn", "layer_norm_latents"): "layer_norm_latents",
                    ("self_attn", "layer_norm"): "layer_norm_self"}
_PERCEIVER_ATTENTION = {"attn": "cross_attention", "self_attn": "self_attention"}
_PERCEIVER_PROJECTIONS = {"to_q": ("q_proj",), "to_kv": ("k_proj", "v_proj"), "to_out": ("o_proj",)}


def to_transformers_keys(key: str) -> str | tuple[str, str]:
    """An original EdgeTAM key -> its transformers name, or the (k, v) names of a fused `to_kv` projection, whose
    rows split in two halves (before the point embeddings are joined)."""
    key = to_transformers_key(key)
    for old, new in _RENAMES:
        key = key.replace(old, new)
    if key == f"{PERCEIVER}.latents":
        return f"{PERCEIVER}.latents_1d"
    if key.startswith("memory_attention."):
        return key.replace("linear1", "mlp.up_proj").replace("linear2", "mlp.down_proj")
    match = _PERCEIVER_LAYER.match(key)
    if not match:
        return key
    layer, module, name, leaf = match.groups()
    if (module, name) in _PERCEIVER_NAMES:
        return f"{layer}.{_PERCEIVER_NAMES[module, name]}.{leaf}"
    if name not in _PERCEIVER_PROJECTIONS:
        return key  # not an EdgeTAM tensor: left as it is, so that the checks report it
    names = tuple(f"{layer}.{_PERCEIVER_ATTENTION[module]}.{proj}.{leaf}" for proj in _PERCEIVER_PROJECTIONS[name])
    return names if len(names) > 1 else names[0]


@functools.cache
def trunk_shapes(architecture: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """timm's tensors of the features_only backbone (`stem.conv1.c.weight`, ..., BatchNorm statistics and
    counters), with their shapes: sam2-jax's RepViT under the `weights` rules, whose names are timm's."""
    module = RepVit(architecture)
    abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))))["params"]
    zeros = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), abstract)
    return tuple((key, tuple(value.shape)) for key, value in weights.params_to_state_dict(zeros).items())


def _perceiver(s: Shapes, config: EdgeTamVideoConfig) -> None:
    """The spatial perceiver (`PerceiverResampler` with self-attention): latents, layers, final norm."""
    dim, inner = config.perceiver_resampler_hidden_size, (config.perceiver_resampler_attention_head_dim
                                                           * config.perceiver_resampler_num_attention_heads)
    if config.perceiver_resampler_num_latents > 0:
        s.add(f"{PERCEIVER}.latents", config.perceiver_resampler_num_latents, dim)
    if config.perceiver_resampler_num_latents_2d > 0:
        s.add(f"{PERCEIVER}.latents_2d", config.perceiver_resampler_num_latents_2d, dim)

    def attention(name):
        s.linear(f"{name}.to_q", inner, dim, bias=False)
        s.linear(f"{name}.to_kv", 2 * inner, dim, bias=False)
        s.linear(f"{name}.to_out", dim, inner, bias=False)

    def feed_forward(name):  # Sequential(LayerNorm, Linear, GELU, Linear)
        s.norm(f"{name}.0", dim)
        s.linear(f"{name}.1", config.perceiver_resampler_mlp_intermediate_size, dim, bias=False)
        s.linear(f"{name}.3", dim, config.perceiver_resampler_mlp_intermediate_size, bias=False)

    for i in range(config.perceiver_resampler_num_layers):
        layer = f"{PERCEIVER}.layers.{i}"
        s.norm(f"{layer}.attn.norm_x", dim)
        s.norm(f"{layer}.attn.norm_latents", dim)
        attention(f"{layer}.attn")
        feed_forward(f"{layer}.ff")
        s.norm(f"{layer}.self_attn.norm", dim)
        attention(f"{layer}.self_attn")
        feed_forward(f"{layer}.self_ff")
    s.norm(f"{PERCEIVER}.norm", dim)


def original_shapes(config: EdgeTamVideoConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of an original EdgeTAM checkpoint for `config`, with its shape."""
    _check_video_config(config)
    s = Shapes()
    memory_tokens(s, config)
    for key, shape in trunk_shapes(config.vision_config.backbone_config["architecture"]):
        s.add(TRUNK + key, *shape)
    neck(s, config.vision_config)
    memory_attention(s, config, config.memory_attention_mlp_hidden_size)
    memory_encoder(s, config)
    _perceiver(s, config)
    sam_heads(s, config)
    return dict(s)
