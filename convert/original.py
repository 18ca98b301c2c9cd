"""The original facebookresearch/sam2 checkpoint layout and its renaming to transformers keys.

`original_shapes(config)` describes every tensor of an original `.pt` ("model" entry) for a config;
`to_transformers_key` is the renaming of transformers' `convert_sam2_video_to_hf.py`. Together they give
the expected transformers tensors (`transformers_shapes`) and the way back (`to_original`). The parts SAM 2 and
EdgeTAM share (`Shapes` and the functions that fill it) serve `original_edgetam`, where EdgeTAM's layout and
renaming are; the functions here take either family's video config.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import torch

from sam2_jax.config import EDGETAM_PRESETS, PRESETS, EdgeTamVideoConfig, Sam2VideoConfig

# Substring renames, applied in this order, each to the result of the previous ones.
_RENAMES = (
    ("iou_prediction_head.layers.0", "iou_prediction_head.proj_in"),
    ("iou_prediction_head.layers.1", "iou_prediction_head.layers.0"),
    ("iou_prediction_head.layers.2", "iou_prediction_head.proj_out"),
    ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
    ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
    ("mask_downscaling.0", "mask_embed.conv1"),
    ("mask_downscaling.1", "mask_embed.layer_norm1"),
    ("mask_downscaling.3", "mask_embed.conv2"),
    ("mask_downscaling.4", "mask_embed.layer_norm2"),
    ("mask_downscaling.6", "mask_embed.conv3"),
    ("dwconv", "depthwise_conv"),
    ("pwconv", "pointwise_conv"),
    ("fuser", "memory_fuser"),
    ("point_embeddings", "point_embed"),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("obj_ptr_tpos_proj", "temporal_positional_encoding_projection_layer"),
    ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
    ("sam_prompt_encoder", "prompt_encoder"),
    ("sam_mask_decoder", "mask_decoder"),
    ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
    ("gamma", "scale"),
    ("image_encoder.neck", "vision_encoder.neck"),
    ("image_encoder", "vision_encoder.backbone"),
    ("pix_feat_proj", "feature_projection"),
    ("patch_embed.proj", "patch_embed.projection"),
    ("no_mem_embed", "no_memory_embedding"),
    ("no_mem_pos_enc", "no_memory_positional_encoding"),
    ("obj_ptr", "object_pointer"),
    (".norm", ".layer_norm"),
    ("trunk.", ""),
    ("out_proj", "o_proj"),
)  # (transformers' table also renames "neck.0".."neck.3", SAM 1 names that no SAM 2 key contains)
# Then the numbered sub-layers: two-layer MLPs, three-layer MLPs, and the mask downsampler's Sequential.
_MLP2 = re.compile(r"^((?:vision_encoder\.backbone\.blocks|mask_decoder\.transformer\.layers)\.\d+\.mlp)"
                   r"\.layers\.([01])\.")
_MLP3 = re.compile(r"^(.*(?:pred_obj_score_head|output_hypernetworks_mlps\.\d+|object_pointer_proj))"
                   r"\.layers\.([012])\.")
_NECK = re.compile(r"^(vision_encoder\.neck\.convs\.\d+)\.conv\.")
_DOWNSAMPLER = re.compile(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.")
_POINT_EMBED = "prompt_encoder.point_embed.weight"
_FOURIER = "prompt_encoder.shared_embedding.positional_embedding"
_FOURIER_COPY = "shared_image_embedding.positional_embedding"


def to_transformers_key(key: str) -> str:
    """An original checkpoint key -> its transformers name (before the point embeddings are joined)."""
    for old, new in _RENAMES:
        key = key.replace(old, new)
    key = _MLP2.sub(lambda m: f"{m[1]}.{('proj_in', 'proj_out')[int(m[2])]}.", key)
    key = _MLP3.sub(lambda m: f"{m[1]}.{('proj_in', 'layers.0', 'proj_out')[int(m[2])]}.", key)
    key = _NECK.sub(r"\1.", key)
    key = key.replace("memory_encoder.o_proj.", "memory_encoder.projection.")
    match = _DOWNSAMPLER.match(key)
    if match:  # Sequential(conv, LayerNorm2d, GELU) x 4, conv: index 3k, 3k+1 and 12 hold weights
        index = int(match[1])
        if index == 12:
            key = key.replace("encoder.12.", "final_conv.")
        elif index % 3 != 2:
            key = key.replace(f"encoder.{index}.", f"layers.{index // 3}.{('conv', 'layer_norm')[index % 3]}.")
    return key


class Shapes(dict):
    """An ordered {original key: shape} being built, with the layers both families use."""

    def add(self, name, *shape):
        self[name] = tuple(int(s) for s in shape)

    def linear(self, name, out, inp, bias=True):
        self.add(f"{name}.weight", out, inp)
        if bias:
            self.add(f"{name}.bias", out)

    def conv(self, name, out, inp, kernel):
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.add(f"{name}.weight", out, inp, kh, kw)
        self.add(f"{name}.bias", out)

    def norm(self, name, dim):
        self.add(f"{name}.weight", dim)
        self.add(f"{name}.bias", dim)

    def mlp(self, name, dims):
        for i, (inp, out) in enumerate(zip(dims[:-1], dims[1:])):
            self.linear(f"{name}.layers.{i}", out, inp)

    def attention(self, name, dim, internal, kv_dim=None):
        for proj in ("q_proj", "k_proj", "v_proj"):
            self.linear(f"{name}.{proj}", internal, dim if proj == "q_proj" or kv_dim is None else kv_dim)
        self.linear(f"{name}.out_proj", dim, internal)


def memory_tokens(s: Shapes, config) -> None:
    """SAM2Base's own tensors: the memory position encodings, no-memory and no-object tokens."""
    hidden, mem = config.vision_config.fpn_hidden_size, config.memory_encoder_output_channels
    s.add("maskmem_tpos_enc", config.num_maskmem, 1, 1, mem)
    s.add("no_mem_embed", 1, 1, hidden)
    s.add("no_mem_pos_enc", 1, 1, hidden)
    s.add("no_obj_ptr", 1, hidden)
    if config.enable_occlusion_spatial_embedding:
        s.add("no_obj_embed_spatial", 1, mem)


def neck(s: Shapes, vision) -> None:
    """The FPN neck's lateral convs (both families)."""
    for i, channels in enumerate(vision.backbone_channel_list):
        s.conv(f"image_encoder.neck.convs.{i}.conv", vision.fpn_hidden_size, channels, vision.fpn_kernel_size)


def memory_attention(s: Shapes, config, feed_forward: int) -> None:
    """`mask_downsample` and the memory attention's layers (the same tensors in both families)."""
    s.conv("mask_downsample", 1, 1, 4)
    width = config.memory_attention_hidden_size
    internal = width // config.memory_attention_downsample_rate
    for i in range(config.memory_attention_num_layers):
        layer = f"memory_attention.layers.{i}"
        s.attention(f"{layer}.self_attn", width, internal)
        s.attention(f"{layer}.cross_attn_image", width, internal, kv_dim=64)  # 64 is fixed in both codes
        s.linear(f"{layer}.linear1", feed_forward, width)
        s.linear(f"{layer}.linear2", width, feed_forward)
        for j in (1, 2, 3):
            s.norm(f"{layer}.norm{j}", width)
    s.norm("memory_attention.norm", width)


def memory_encoder(s: Shapes, config) -> None:
    """The memory encoder: mask downsampler, feature projection, fuser, output projection."""
    stride = config.mask_downsampler_stride
    num_layers = int(math.log2(config.mask_downsampler_total_stride) // math.log2(stride))
    channels = 1
    for i in range(num_layers):
        s.conv(f"memory_encoder.mask_downsampler.encoder.{3 * i}", channels * stride**2, channels,
               config.mask_downsampler_kernel_size)
        channels *= stride**2
        s.norm(f"memory_encoder.mask_downsampler.encoder.{3 * i + 1}", channels)
    s.conv(f"memory_encoder.mask_downsampler.encoder.{3 * num_layers}", config.mask_downsampler_embed_dim, channels, 1)
    width = config.memory_encoder_hidden_size
    s.conv("memory_encoder.pix_feat_proj", width, width, 1)
    fuser_width = config.memory_fuser_embed_dim
    for i in range(config.memory_fuser_num_layers):
        layer = f"memory_encoder.fuser.layers.{i}"
        s.add(f"{layer}.gamma", fuser_width)
        s.conv(f"{layer}.dwconv", fuser_width, 1, config.memory_fuser_kernel_size)
        s.norm(f"{layer}.norm", fuser_width)
        s.linear(f"{layer}.pwconv1", config.memory_fuser_intermediate_dim, fuser_width)
        s.linear(f"{layer}.pwconv2", fuser_width, config.memory_fuser_intermediate_dim)
    s.conv("memory_encoder.out_proj", config.memory_encoder_output_channels, width, 1)


def sam_heads(s: Shapes, config) -> None:
    """The prompt encoder, the mask decoder and the object pointer projections."""
    prompt, decoder = config.prompt_encoder_config, config.mask_decoder_config
    width, channels = prompt.hidden_size, prompt.mask_input_channels
    s.add("sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", 2, width // 2)
    for i in range(prompt.num_point_embeddings):
        s.add(f"sam_prompt_encoder.point_embeddings.{i}.weight", 1, width)
    s.add("sam_prompt_encoder.not_a_point_embed.weight", 1, width)
    s.conv("sam_prompt_encoder.mask_downscaling.0", channels // 4, 1, 2)
    s.norm("sam_prompt_encoder.mask_downscaling.1", channels // 4)
    s.conv("sam_prompt_encoder.mask_downscaling.3", channels, channels // 4, 2)
    s.norm("sam_prompt_encoder.mask_downscaling.4", channels)
    s.conv("sam_prompt_encoder.mask_downscaling.6", width, channels, 1)
    s.add("sam_prompt_encoder.no_mask_embed.weight", 1, width)

    width, num_masks = decoder.hidden_size, decoder.num_multimask_outputs + 1
    internal = width // decoder.attention_downsample_rate
    for i in range(decoder.num_hidden_layers):
        layer = f"sam_mask_decoder.transformer.layers.{i}"
        s.attention(f"{layer}.self_attn", width, width)
        s.norm(f"{layer}.norm1", width)
        s.attention(f"{layer}.cross_attn_token_to_image", width, internal)
        s.norm(f"{layer}.norm2", width)
        s.mlp(f"{layer}.mlp", (width, decoder.mlp_dim, width))
        s.norm(f"{layer}.norm3", width)
        s.norm(f"{layer}.norm4", width)
        s.attention(f"{layer}.cross_attn_image_to_token", width, internal)
    s.attention("sam_mask_decoder.transformer.final_attn_token_to_image", width, internal)
    s.norm("sam_mask_decoder.transformer.norm_final_attn", width)
    s.add("sam_mask_decoder.iou_token.weight", 1, width)
    s.add("sam_mask_decoder.mask_tokens.weight", num_masks, width)
    s.add("sam_mask_decoder.obj_score_token.weight", 1, width)
    s.add("sam_mask_decoder.output_upscaling.0.weight", width, width // 4, 2, 2)  # ConvTranspose2d: (in, out, k, k)
    s.add("sam_mask_decoder.output_upscaling.0.bias", width // 4)
    s.norm("sam_mask_decoder.output_upscaling.1", width // 4)
    s.add("sam_mask_decoder.output_upscaling.3.weight", width // 4, width // 8, 2, 2)
    s.add("sam_mask_decoder.output_upscaling.3.bias", width // 8)
    s.conv("sam_mask_decoder.conv_s0", width // 8, width, 1)
    s.conv("sam_mask_decoder.conv_s1", width // 4, width, 1)
    for i in range(num_masks):
        s.mlp(f"sam_mask_decoder.output_hypernetworks_mlps.{i}", (width, width, width, width // 8))
    s.mlp("sam_mask_decoder.iou_prediction_head",
          (width, *[decoder.iou_head_hidden_dim] * (decoder.iou_head_depth - 1), num_masks))
    s.mlp("sam_mask_decoder.pred_obj_score_head", (width, width, width, 1))

    hidden = config.vision_config.fpn_hidden_size
    s.mlp("obj_ptr_proj", (hidden, hidden, hidden, hidden))
    if config.enable_temporal_pos_encoding_for_object_pointers:
        s.linear("obj_ptr_tpos_proj", config.memory_encoder_output_channels, hidden)


def _hiera_trunk(s: Shapes, backbone) -> None:
    trunk, width = "image_encoder.trunk", backbone.hidden_size
    s.add(f"{trunk}.pos_embed", 1, width, *backbone.window_positional_embedding_background_size)
    s.add(f"{trunk}.pos_embed_window", 1, width, backbone.window_size_per_stage[0], backbone.window_size_per_stage[0])
    s.conv(f"{trunk}.patch_embed.proj", width, backbone.num_channels, backbone.patch_kernel_size)
    dims = [d for d, n in zip(backbone.embed_dim_per_stage, backbone.blocks_per_stage) for _ in range(n)]
    for i, dim_out in enumerate(dims):
        dim, block = dims[i - 1] if i else dim_out, f"{trunk}.blocks.{i}"
        s.norm(f"{block}.norm1", dim)
        s.linear(f"{block}.attn.qkv", 3 * dim_out, dim)
        s.linear(f"{block}.attn.proj", dim_out, dim_out)
        s.norm(f"{block}.norm2", dim_out)
        s.mlp(f"{block}.mlp", (dim_out, int(dim_out * backbone.mlp_ratio), dim_out))
        if dim != dim_out:
            s.linear(f"{block}.proj", dim_out, dim)


def original_shapes(config: Sam2VideoConfig | EdgeTamVideoConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of an original checkpoint for `config` (SAM 2 or EdgeTAM), with its shape, in the original's
    order."""
    if isinstance(config, EdgeTamVideoConfig):
        from .original_edgetam import original_shapes as edgetam_shapes

        return edgetam_shapes(config)
    _check_video_config(config)
    s = Shapes()
    memory_tokens(s, config)
    _hiera_trunk(s, config.vision_config.backbone_config)
    neck(s, config.vision_config)
    memory_attention(s, config, config.memory_attention_feed_forward_hidden_size)
    memory_encoder(s, config)
    sam_heads(s, config)
    return dict(s)


def _check_video_config(config) -> None:
    if not isinstance(config, (Sam2VideoConfig, EdgeTamVideoConfig)):
        raise ValueError(f"config: expected a video model's config (Sam2VideoConfig or EdgeTamVideoConfig: the "
                         f"original checkpoints hold the whole tracker), got a {type(config).__name__}")


def key_map(config) -> dict[str, str | tuple[str, ...]]:
    """original key -> its transformers key, or the keys of its equal slices along dim 0 (EdgeTAM's fused k/v
    projections); every tensor but the point embeddings (joined in one)."""
    if isinstance(config, EdgeTamVideoConfig):
        from .original_edgetam import to_transformers_keys as rename
    else:
        rename = to_transformers_key
    return {key: rename(key) for key in original_shapes(config) if ".point_embeddings." not in key}


def transformers_shapes(config: Sam2VideoConfig | EdgeTamVideoConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a transformers `Sam2VideoModel` / `EdgeTamVideoModel` checkpoint for `config`, with its
    shape."""
    original = original_shapes(config)
    shapes = {}
    for old, new in key_map(config).items():
        if isinstance(new, tuple):
            first, *rest = original[old]
            shapes.update({key: (first // len(new), *rest) for key in new})
        else:
            shapes[new] = original[old]
    prompt = config.prompt_encoder_config
    shapes[_POINT_EMBED] = (prompt.num_point_embeddings, prompt.hidden_size)
    shapes[_FOURIER_COPY] = shapes[_FOURIER]
    return shapes


def infer_preset(state_dict: Mapping[str, object]) -> str:
    """The released variant ("sam2.1-hiera-tiny", ..., or "edgetam") of an original state dict: EdgeTAM by its
    RepViT trunk or its perceiver, SAM 2 by the width and depth of its Hiera trunk and the SAM 2.1 tensors."""
    if any(k.startswith(("image_encoder.trunk.body.", "spatial_perceiver.")) for k in state_dict):
        return "edgetam"  # one released EdgeTAM; its tensors are checked against it next
    key = "image_encoder.trunk.patch_embed.proj.weight"
    if key not in state_dict:
        first = ", ".join(list(state_dict)[:5])
        raise ValueError(f"expected the weights of an original SAM 2 model (with {key}) or EdgeTAM model (with "
                         f"image_encoder.trunk.body.* and spatial_perceiver.*), got "
                         f"{len(state_dict)} tensors without it (first: {first or 'none'})")
    width = tuple(state_dict[key].shape)[0]
    blocks = len({k.split(".")[3] for k in state_dict if k.startswith("image_encoder.trunk.blocks.")})
    version = "2.1" if any(k == "no_obj_embed_spatial" or k.startswith("obj_ptr_tpos_proj.") for k in state_dict) \
        else "2.0"
    known = []
    for name, config in PRESETS.items():
        backbone = config.vision_config.backbone_config
        if config.version != version:
            continue
        if backbone.hidden_size == width and sum(backbone.blocks_per_stage) == blocks:
            return name
        known.append(f"{name} ({backbone.hidden_size} channels, {sum(backbone.blocks_per_stage)} blocks)")
    raise ValueError(f"expected the trunk of a released SAM {version} model, one of {', '.join(known)}; "
                     f"got {width} channels and {blocks} blocks")


RELEASED = {**PRESETS, **EDGETAM_PRESETS}  # every variant an original checkpoint can be (it holds no config)


def released_config(name: str) -> Sam2VideoConfig | EdgeTamVideoConfig:
    """The config of a released variant by its name ("sam2.1-hiera-tiny", ..., "edgetam")."""
    if name not in RELEASED:
        raise ValueError(f"name: expected one of {', '.join(RELEASED)}, got {name!r}")
    return RELEASED[name]


def complete_batch_counters(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) \
        -> dict[str, torch.Tensor]:
    """`state_dict` with each expected BatchNorm `num_batches_tracked` it lacks added as 0, as torch's BatchNorm
    loads a state dict without it (a training counter that inference never reads)."""
    counters = {k: torch.zeros((), dtype=torch.int64) for k in expected
                if k.endswith(".num_batches_tracked") and k not in state_dict}
    return {**state_dict, **counters}


def check_tensors(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]],
                  what: str) -> None:
    """Raise one ValueError listing every unexpected, missing and mis-shaped tensor of `state_dict`;
    `what` names the expected checkpoint in the message."""
    unexpected = [k for k in state_dict if k not in expected]
    missing = [k for k in expected if k not in state_dict]
    misshaped = [f"{k} expected {expected[k]}, got {tuple(v.shape)}" for k, v in state_dict.items()
                 if k in expected and tuple(v.shape) != expected[k]]
    problems = [f"{len(items)} {title}: {', '.join(items)}" for title, items in
                (("unexpected", unexpected), ("missing", missing), ("mis-shaped", misshaped)) if items]
    if problems:
        raise ValueError(f"the tensors do not match {what}; " + "; ".join(problems))


def to_transformers(state_dict: Mapping[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """A checked original state dict -> transformers tensors (the same tensor objects renamed; EdgeTAM's fused
    k/v projections split in two)."""
    out = {}
    for old, new in key_map(config).items():
        if isinstance(new, tuple):
            out.update(zip(new, (t.clone() for t in torch.chunk(state_dict[old], len(new), dim=0))))
        else:
            out[new] = state_dict[old]
    count = config.prompt_encoder_config.num_point_embeddings
    out[_POINT_EMBED] = torch.cat([state_dict[f"sam_prompt_encoder.point_embeddings.{i}.weight"]
                                   for i in range(count)])
    out[_FOURIER_COPY] = out[_FOURIER].clone()
    return out


def to_original(state_dict: Mapping[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """Checked transformers tensors -> an original state dict (in the original's key order)."""
    if not torch.equal(state_dict[_FOURIER], state_dict[_FOURIER_COPY]):
        raise ValueError(f"{_FOURIER_COPY} differs from {_FOURIER}; the original format stores "
                         "one Fourier matrix for both")
    names = key_map(config)
    point_embed = state_dict[_POINT_EMBED]
    out = {}
    for key in original_shapes(config):
        if key not in names:  # sam_prompt_encoder.point_embeddings.{i}.weight
            i = int(key.split(".")[2])
            out[key] = point_embed[i:i + 1].clone()
        elif isinstance(names[key], tuple):
            out[key] = torch.cat([state_dict[k] for k in names[key]])
        else:
            out[key] = state_dict[names[key]]
    return out
