"""The original trainer of the sam2 package (its `training/`): `SAM2Train` built at the sizes of a sam2-jax
config, and one training pass of it (`forward_tracking` and the `MultiStepMultiMasksAndIous` loss) on a
sam2-jax training batch. Shared by the parity test (tests/test_train_original.py) and the training-step
benchmark (benchmarks/train_step.py)."""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import torch

from sam2_jax.config import Sam2VideoConfig

# The sam2.1 training yaml's loss settings.
LOSS_WEIGHTS = {"loss_mask": 20, "loss_dice": 1, "loss_iou": 1, "loss_class": 1}
LOSS_SETTINGS = dict(supervise_all_iou=True, iou_use_l1_loss=True, pred_obj_scores=True,
                     focal_gamma_obj_score=0.0, focal_alpha_obj_score=-1.0)


def import_original_trainer():
    """training.model.sam2 and training.loss_fns. They import tensordict (for a batch class used as a type
    hint) and the trainer (for a constant), which pull in packages this project does not need: stand-ins."""
    stand_ins = {"training.utils.data_utils": {"BatchedVideoDatapoint": object},
                 "training.trainer": {"CORE_LOSS_KEY": "core_loss"}}
    for name, attributes in stand_ins.items():
        try:
            importlib.import_module(name)
        except ImportError:
            module = types.ModuleType(name)
            module.__dict__.update(attributes)
            sys.modules[name] = module
    return importlib.import_module("training.model.sam2"), importlib.import_module("training.loss_fns")


def _overrides(config: Sam2VideoConfig, corrections: int) -> list[str]:
    """Hydra overrides of sam2.1 tiny's yaml that give `config`'s sizes, dropout off."""
    vision, trunk = config.vision_config, config.vision_config.backbone_config
    tokens = config.memory_attention_rope_feat_sizes
    model, layer = "++model", "++model.memory_attention.layer"
    width, memory = config.memory_attention_hidden_size, config.memory_encoder_output_channels

    def listed(values):
        return "[" + ",".join(str(v) for v in values) + "]"

    settings = {
        "_target_": "training.model.sam2.SAM2Train", "image_size": config.image_size,
        "image_encoder.trunk.embed_dim": trunk.hidden_size, "image_encoder.trunk.num_heads": trunk.num_attention_heads,
        "image_encoder.trunk.stages": listed(trunk.blocks_per_stage),
        "image_encoder.trunk.global_att_blocks": listed(trunk.global_attention_blocks),
        "image_encoder.trunk.window_spec": listed(trunk.window_size_per_stage),
        "image_encoder.trunk.window_pos_embed_bkg_spatial_size":
            listed(trunk.window_positional_embedding_background_size),
        "image_encoder.neck.d_model": vision.fpn_hidden_size,
        "image_encoder.neck.position_encoding.num_pos_feats": vision.fpn_hidden_size,
        "image_encoder.neck.backbone_channel_list": listed(vision.backbone_channel_list),
        "memory_attention.d_model": width, "memory_attention.num_layers": config.memory_attention_num_layers,
        "memory_encoder.out_dim": memory, "memory_encoder.in_dim": config.memory_encoder_hidden_size,
        "memory_encoder.position_encoding.num_pos_feats": memory,
        "memory_encoder.mask_downsampler.embed_dim": config.mask_downsampler_embed_dim,
        "memory_encoder.fuser.layer.dim": config.memory_fuser_embed_dim,
        "num_correction_pt_per_frame": corrections, "add_all_frames_to_correct_as_cond": "true"}
    layers = {"d_model": width, "dim_feedforward": config.memory_attention_feed_forward_hidden_size, "dropout": 0.0}
    for attention in ("self_attention", "cross_attention"):
        layers.update({f"{attention}.embedding_dim": width, f"{attention}.feat_sizes": listed(tokens),
                       f"{attention}.dropout": 0.0})
    layers["cross_attention.kv_in_dim"] = memory
    return ([f"{model}.{k}={v}" for k, v in settings.items()] + [f"{layer}.{k}={v}" for k, v in layers.items()])


def build_original_trainer(config: Sam2VideoConfig, corrections: int):
    """SAM2Train at `config`'s sizes in training mode (`corrections` correction clicks a corrected frame),
    as initialised. Its mask decoder is rebuilt with the config's widths, as `_build_sam_heads` builds it:
    that fixes them at SAM's."""
    from sam2.build_sam import build_sam2
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam.transformer import TwoWayTransformer

    original_trainer, _ = import_original_trainer()
    torch.manual_seed(0)
    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu", mode="train",
                       hydra_overrides_extra=_overrides(config, corrections), apply_postprocessing=False)
    assert isinstance(model, original_trainer.SAM2Train) and model.training
    decoder = config.mask_decoder_config
    model.sam_mask_decoder = MaskDecoder(
        num_multimask_outputs=3, transformer_dim=model.sam_prompt_embed_dim, iou_head_depth=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=model.sam_prompt_embed_dim, mlp_dim=decoder.mlp_dim,
                                      num_heads=decoder.num_attention_heads),
        iou_head_hidden_dim=decoder.iou_head_hidden_dim, use_high_res_features=model.use_high_res_features_in_sam,
        iou_prediction_use_sigmoid=model.iou_prediction_use_sigmoid, pred_obj_scores=model.pred_obj_scores,
        pred_obj_scores_mlp=model.pred_obj_scores_mlp,
        use_multimask_token_for_obj_ptr=model.use_multimask_token_for_obj_ptr,
        **(model.sam_mask_decoder_extra_args or {})).train()
    return model


def loss_of_batch(model, batch, kind: str) -> torch.Tensor:
    """The original's `forward_tracking` with `batch`'s prompted and corrected frames, every object prompted
    with `kind` ("mask", or "click" and "box" from `batch.points`), and its loss summed over frames (a mask
    prompt's own frame left out: it is the prompt, with no gradient)."""
    _, loss_fns = import_original_trainer()
    num_frames, num_objects = batch.masks.shape[:2]
    img_batch = torch.from_numpy(np.ascontiguousarray(batch.pixels.transpose(1, 0, 4, 2, 3)))  # (T, B, 3, S, S)
    masks = torch.from_numpy(batch.masks)
    data = types.SimpleNamespace(  # the fields of `BatchedVideoDatapoint` that forward_tracking reads
        num_frames=num_frames, flat_img_batch=img_batch.transpose(0, 1).flatten(0, 1),
        flat_obj_to_img_idx=torch.from_numpy(batch.clip_index[None] * num_frames + np.arange(num_frames)[:, None]))
    prompted = [int(t) for t in np.flatnonzero(batch.prompt_frames)]
    points = {"click": 1, "box": 2}.get(kind)
    backbone_out = model.forward_image(data.flat_img_batch)
    backbone_out.update(
        gt_masks_per_frame={t: masks[t].unsqueeze(1) for t in range(num_frames)}, num_frames=num_frames,
        init_cond_frames=prompted, frames_not_in_init_cond=[t for t in range(num_frames) if t not in prompted],
        frames_to_add_correction_pt=[int(t) for t in np.flatnonzero(batch.correct.any(axis=1))],
        mask_inputs_per_frame={t: masks[t].unsqueeze(1) for t in prompted} if kind == "mask" else {},
        point_inputs_per_frame={} if kind == "mask" else {
            t: {"point_coords": torch.from_numpy(batch.points[t, :, :points].copy()),
                "point_labels": torch.from_numpy(batch.labels[t, :, :points].copy())} for t in prompted})
    outputs = model.forward_tracking(backbone_out, data)
    loss_fn = loss_fns.MultiStepMultiMasksAndIous(LOSS_WEIGHTS, **LOSS_SETTINGS)
    count = torch.tensor(float(num_objects))
    return sum(loss_fn._forward(outputs[t], masks[t].float(), count)["core_loss"]
               for t in range(num_frames) if not (kind == "mask" and t in prompted))
