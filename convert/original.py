"""The original facebookresearch/sam2 checkpoint layout and its renaming to transformers keys.

`original_shapes(config)` describes every tensor of an original `.pt` ("model" entry) for a config;
`to_transformers_key` is the renaming of transformers' `convert_sam2_video_to_hf.py`. Together they give
the expected transformers tensors (`transformers_shapes`) and the way back (`to_original`).
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import torch

from sam2_jax.config import PRESETS, Sam2VideoConfig

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


def original_shapes(config: Sam2VideoConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of an original checkpoint for `config`, with its shape, in the original's order."""
    shapes: dict[str, tuple[int, ...]] = {}

    def add(name, *shape):
        shapes[name] = tuple(int(s) for s in shape)

    def linear(name, out, inp):
        add(f"{name}.weight", out, inp)
        add(f"{name}.bias", out)

    def conv(name, out, inp, kernel):
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        add(f"{name}.weight", out, inp, kh, kw)
        add(f"{name}.bias", out)

    def norm(name, dim):
        add(f"{name}.weight", dim)
        add(f"{name}.bias", dim)

    def mlp(name, dims):
        for i, (inp, out) in enumerate(zip(dims[:-1], dims[1:])):
            linear(f"{name}.layers.{i}", out, inp)

    def attention(name, dim, internal, kv_dim=None):
        for proj in ("q_proj", "k_proj", "v_proj"):
            linear(f"{name}.{proj}", internal, dim if proj == "q_proj" or kv_dim is None else kv_dim)
        linear(f"{name}.out_proj", dim, internal)

    vision, backbone = config.vision_config, config.vision_config.backbone_config
    prompt, decoder = config.prompt_encoder_config, config.mask_decoder_config
    hidden, mem = vision.fpn_hidden_size, config.memory_encoder_output_channels

    add("maskmem_tpos_enc", config.num_maskmem, 1, 1, mem)
    add("no_mem_embed", 1, 1, hidden)
    add("no_mem_pos_enc", 1, 1, hidden)
    add("no_obj_ptr", 1, hidden)
    if config.enable_occlusion_spatial_embedding:
        add("no_obj_embed_spatial", 1, mem)

    trunk, width = "image_encoder.trunk", backbone.hidden_size
    add(f"{trunk}.pos_embed", 1, width, *backbone.window_positional_embedding_background_size)
    add(f"{trunk}.pos_embed_window", 1, width, backbone.window_size_per_stage[0], backbone.window_size_per_stage[0])
    conv(f"{trunk}.patch_embed.proj", width, backbone.num_channels, backbone.patch_kernel_size)
    dims = [d for d, n in zip(backbone.embed_dim_per_stage, backbone.blocks_per_stage) for _ in range(n)]
    for i, dim_out in enumerate(dims):
        dim, block = dims[i - 1] if i else dim_out, f"{trunk}.blocks.{i}"
        norm(f"{block}.norm1", dim)
        linear(f"{block}.attn.qkv", 3 * dim_out, dim)
        linear(f"{block}.attn.proj", dim_out, dim_out)
        norm(f"{block}.norm2", dim_out)
        mlp(f"{block}.mlp", (dim_out, int(dim_out * backbone.mlp_ratio), dim_out))
        if dim != dim_out:
            linear(f"{block}.proj", dim_out, dim)
    for i, channels in enumerate(vision.backbone_channel_list):
        conv(f"image_encoder.neck.convs.{i}.conv", hidden, channels, vision.fpn_kernel_size)

    conv("mask_downsample", 1, 1, 4)
    width = config.memory_attention_hidden_size
    internal = width // config.memory_attention_downsample_rate
    for i in range(config.memory_attention_num_layers):
        layer = f"memory_attention.layers.{i}"
        attention(f"{layer}.self_attn", width, internal)
        attention(f"{layer}.cross_attn_image", width, internal, kv_dim=64)  # 64 is fixed in both codes
        linear(f"{layer}.linear1", config.memory_attention_feed_forward_hidden_size, width)
        linear(f"{layer}.linear2", width, config.memory_attention_feed_forward_hidden_size)
        for j in (1, 2, 3):
            norm(f"{layer}.norm{j}", width)
    norm("memory_attention.norm", width)

    stride = config.mask_downsampler_stride
    num_layers = int(math.log2(config.mask_downsampler_total_stride) // math.log2(stride))
    channels = 1
    for i in range(num_layers):
        conv(f"memory_encoder.mask_downsampler.encoder.{3 * i}", channels * stride**2, channels,
             config.mask_downsampler_kernel_size)
        channels *= stride**2
        norm(f"memory_encoder.mask_downsampler.encoder.{3 * i + 1}", channels)
    conv(f"memory_encoder.mask_downsampler.encoder.{3 * num_layers}", config.mask_downsampler_embed_dim, channels, 1)
    width = config.memory_encoder_hidden_size
    conv("memory_encoder.pix_feat_proj", width, width, 1)
    fuser_width = config.memory_fuser_embed_dim
    for i in range(config.memory_fuser_num_layers):
        layer = f"memory_encoder.fuser.layers.{i}"
        add(f"{layer}.gamma", fuser_width)
        conv(f"{layer}.dwconv", fuser_width, 1, config.memory_fuser_kernel_size)
        norm(f"{layer}.norm", fuser_width)
        linear(f"{layer}.pwconv1", config.memory_fuser_intermediate_dim, fuser_width)
        linear(f"{layer}.pwconv2", fuser_width, config.memory_fuser_intermediate_dim)
    conv("memory_encoder.out_proj", mem, width, 1)

    width, channels = prompt.hidden_size, prompt.mask_input_channels
    add("sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", 2, width // 2)
    for i in range(prompt.num_point_embeddings):
        add(f"sam_prompt_encoder.point_embeddings.{i}.weight", 1, width)
    add("sam_prompt_encoder.not_a_point_embed.weight", 1, width)
    conv("sam_prompt_encoder.mask_downscaling.0", channels // 4, 1, 2)
    norm("sam_prompt_encoder.mask_downscaling.1", channels // 4)
    conv("sam_prompt_encoder.mask_downscaling.3", channels, channels // 4, 2)
    norm("sam_prompt_encoder.mask_downscaling.4", channels)
    conv("sam_prompt_encoder.mask_downscaling.6", width, channels, 1)
    add("sam_prompt_encoder.no_mask_embed.weight", 1, width)

    width, num_masks = decoder.hidden_size, decoder.num_multimask_outputs + 1
    internal = width // decoder.attention_downsample_rate
    for i in range(decoder.num_hidden_layers):
        layer = f"sam_mask_decoder.transformer.layers.{i}"
        attention(f"{layer}.self_attn", width, width)
        norm(f"{layer}.norm1", width)
        attention(f"{layer}.cross_attn_token_to_image", width, internal)
        norm(f"{layer}.norm2", width)
        mlp(f"{layer}.mlp", (width, decoder.mlp_dim, width))
        norm(f"{layer}.norm3", width)
        norm(f"{layer}.norm4", width)
        attention(f"{layer}.cross_attn_image_to_token", width, internal)
    attention("sam_mask_decoder.transformer.final_attn_token_to_image", width, internal)
    norm("sam_mask_decoder.transformer.norm_final_attn", width)
    add("sam_mask_decoder.iou_token.weight", 1, width)
    add("sam_mask_decoder.mask_tokens.weight", num_masks, width)
    add("sam_mask_decoder.obj_score_token.weight", 1, width)
    add("sam_mask_decoder.output_upscaling.0.weight", width, width // 4, 2, 2)  # ConvTranspose2d: (in, out, k, k)
    add("sam_mask_decoder.output_upscaling.0.bias", width // 4)
    norm("sam_mask_decoder.output_upscaling.1", width // 4)
    add("sam_mask_decoder.output_upscaling.3.weight", width // 4, width // 8, 2, 2)
    add("sam_mask_decoder.output_upscaling.3.bias", width // 8)
    conv("sam_mask_decoder.conv_s0", width // 8, width, 1)
    conv("sam_mask_decoder.conv_s1", width // 4, width, 1)
    for i in range(num_masks):
        mlp(f"sam_mask_decoder.output_hypernetworks_mlps.{i}", (width, width, width, width // 8))
    mlp("sam_mask_decoder.iou_prediction_head",
        (width, *[decoder.iou_head_hidden_dim] * (decoder.iou_head_depth - 1), num_masks))
    mlp("sam_mask_decoder.pred_obj_score_head", (width, width, width, 1))

    mlp("obj_ptr_proj", (hidden, hidden, hidden, hidden))
    if config.enable_temporal_pos_encoding_for_object_pointers:
        linear("obj_ptr_tpos_proj", mem, hidden)
    return shapes


def _key_map(config: Sam2VideoConfig) -> dict[str, str]:
    """original key -> transformers key, for every tensor but the point embeddings (joined in one)."""
    return {key: to_transformers_key(key) for key in original_shapes(config) if ".point_embeddings." not in key}


def transformers_shapes(config: Sam2VideoConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a transformers `Sam2VideoModel` checkpoint for `config`, with its shape."""
    original = original_shapes(config)
    shapes = {new: original[old] for old, new in _key_map(config).items()}
    prompt = config.prompt_encoder_config
    shapes[_POINT_EMBED] = (prompt.num_point_embeddings, prompt.hidden_size)
    shapes[_FOURIER_COPY] = shapes[_FOURIER]
    return shapes


def infer_preset(state_dict: Mapping[str, object]) -> str:
    """The released variant ("sam2.1-hiera-tiny", ...) of an original state dict, from the width and depth
    of its trunk and the SAM 2.1 tensors."""
    key = "image_encoder.trunk.patch_embed.proj.weight"
    if key not in state_dict:
        first = ", ".join(list(state_dict)[:5])
        raise ValueError(f"expected the weights of an original SAM 2 model (with {key}), got "
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


def to_transformers(state_dict: Mapping[str, torch.Tensor], config: Sam2VideoConfig) -> dict[str, torch.Tensor]:
    """A checked original state dict -> transformers tensors (the same tensor objects, renamed)."""
    out = {new: state_dict[old] for old, new in _key_map(config).items()}
    count = config.prompt_encoder_config.num_point_embeddings
    out[_POINT_EMBED] = torch.cat([state_dict[f"sam_prompt_encoder.point_embeddings.{i}.weight"]
                                   for i in range(count)])
    out[_FOURIER_COPY] = out[_FOURIER].clone()
    return out


def to_original(state_dict: Mapping[str, torch.Tensor], config: Sam2VideoConfig) -> dict[str, torch.Tensor]:
    """Checked transformers tensors -> an original state dict (in the original's key order)."""
    if not torch.equal(state_dict[_FOURIER], state_dict[_FOURIER_COPY]):
        raise ValueError(f"{_FOURIER_COPY} differs from {_FOURIER}; the original format stores "
                         "one Fourier matrix for both")
    names = _key_map(config)
    point_embed = state_dict[_POINT_EMBED]
    out = {}
    for key in original_shapes(config):
        if key in names:
            out[key] = state_dict[names[key]]
        else:  # sam_prompt_encoder.point_embeddings.{i}.weight
            i = int(key.split(".")[2])
            out[key] = point_embed[i:i + 1].clone()
    return out
