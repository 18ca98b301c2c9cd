"""EdgeTAM's memory attention (transformers `EdgeTamVideoMemoryAttention`, keys `memory_attention.*`): SAM 2's
`MemoryAttention` (same RoPE self- and cross-attention, same fixed-slot bank with masks) with three changes:

- each memory slot holds the perceiver's N = N1 + N2 latents (`PerceiverResampler`, 256 + 256), not h*w
  tokens; the queries are still the h*w level-2 features on the `memory_attention_rope_feat_sizes` grid;
- the keys' RoPE grid is `memory_attention_rope_k_sizes` (16 x 16, the perceiver's window grid) and only the
  last k_w*k_h tokens of each slot (the 2-D latents) are rotated by it; the first N - k_w*k_h (the 1-D latents)
  are not, nor are the pointer tokens;
- the feed-forward is `mlp.up_proj` / `mlp.down_proj` (`memory_attention_mlp_hidden_size`,
  `memory_attention_mlp_hidden_act`), not `linear1` / `linear2`; 2 layers by default.

What the tracker gives it (transformers `_prepare_memory_conditioned_features` and `_encode_new_memory`):
- features (B, L, 256), L = h*w = 4096 and position_embeddings (B or 1, L, 256): as for SAM 2.
- memory (B, S, N, 64): per memory frame, the perceiver's latents, stored in the model's dtype (float32 for
  parity; transformers does not round them through bfloat16 as SAM 2 does). Slot order as SAM 2's (conditioning
  frames, then t-6 .. t-1); frames it lacks are masked slots (transformers skips them).
- memory_pos (B or 1, S, N, 64): the perceiver's position encoding (zeros for the N1 1-D latents, the 16 x 16
  sine encoding for the N2 2-D latents) plus `memory_temporal_positional_encoding[offset - 1]` added to every
  one of the N tokens, 1-D latents included (offset 0 for conditioning frames gives index -1).
- memory_mask (B or 1, S); pointers, pointer_pos, pointer_mask: SAM 2's (`object_pointer_tokens`), unrotated.
transformers passes `rope_k_repeat` = the number of memory frames and `num_k_exclude_rope` = the number of
pointer tokens; it rotates token j of every frame's block by the key grid at position j - N1 when j >= N1.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import gelu
from .memory_attention import MemoryAttention, MemoryAttentionLayer, identity_rope, rope_tables

_ACTIVATIONS = {"relu": jax.nn.relu, "gelu": gelu}  # transformers ACT2FN names; "gelu" is the exact erf GELU


class EdgeTamMemoryAttentionMLP(nn.Module):
    """transformers `EdgeTamVideoMemoryAttentionMLP`: down_proj(act(up_proj x)), with biases."""

    config: object  # EdgeTamVideoConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        act = cfg.memory_attention_mlp_hidden_act
        if act not in _ACTIVATIONS:
            raise ValueError(f"config.memory_attention_mlp_hidden_act: expected one of {sorted(_ACTIVATIONS)}, "
                             f"got {act!r}")
        h = nn.Dense(cfg.memory_attention_mlp_hidden_size, name="up_proj")(x)
        return nn.Dense(cfg.memory_attention_hidden_size, name="down_proj")(_ACTIVATIONS[act](h))


class EdgeTamMemoryAttentionLayer(MemoryAttentionLayer):
    """transformers `EdgeTamVideoMemoryAttentionLayer`: SAM 2's layer with the feed-forward under `mlp`."""

    def feed_forward(self, h):
        """`mlp.down_proj(act(mlp.up_proj(h)))`."""
        return EdgeTamMemoryAttentionMLP(self.config, name="mlp")(h)


class EdgeTamMemoryAttention(MemoryAttention):
    """transformers `EdgeTamVideoMemoryAttention` over a fixed-slot bank of perceiver latents; the arguments
    and the result are `MemoryAttention`'s with memory (B, S, N, 64) and memory_pos (B or 1, S, N, 64), N the
    perceiver's latents per frame (see the module docstring)."""

    layer_class = EdgeTamMemoryAttentionLayer

    def slot_rope(self, rope, slot_len: int):
        """No rotation for the slot's first slot_len - k_w*k_h tokens (the 1-D latents), the
        `memory_attention_rope_k_sizes` grid for the last k_w*k_h (the 2-D latents)."""
        cos_k, sin_k = rope_tables(self.config, tuple(self.config.memory_attention_rope_k_sizes))
        unrotated = slot_len - cos_k.shape[0]
        if unrotated < 0:
            raise ValueError(f"memory: expected at least {cos_k.shape[0]} tokens per slot (the key RoPE grid "
                             f"{self.config.memory_attention_rope_k_sizes}), got {slot_len}")
        none_cos, none_sin = identity_rope(unrotated, cos_k.shape[-1])
        return jnp.concatenate([none_cos, cos_k]), jnp.concatenate([none_sin, sin_k])
