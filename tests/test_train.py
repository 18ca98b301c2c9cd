"""Training: the loss pieces by hand, gradients reaching exactly the trainable parameters, overfitting a
fixed batch, exact resumption, checkpoints that sam2-jax and transformers load strictly, held-out scoring,
clips from a DAVIS folder, and the training pass against the inference API (the packaged model's held-out
J&F is in test_shipped_model, which xdist can run beside this file).

Every training batch here has the same shapes and every run the same config and recipe, so the training
step compiles once for the whole module."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from flax.traverse_util import flatten_dict, unflatten_dict

from sam2_jax import weights
from sam2_jax.commands import train as train_command
from sam2_jax.commands.main import main
from sam2_jax.tracking import tracker
from sam2_jax.config import HieraConfig, MaskDecoderConfig, PromptEncoderConfig, Sam2VideoConfig, VisionConfig
from sam2_jax.io.clips import generate_clip, write_clip_davis
from sam2_jax.train import batches, loop, losses
from sam2_jax.train.conv import taps_convolutions
from sam2_jax.models.sam2_video import Sam2VideoModule
from sam2_jax.train.forward import (COND_WIDTH, decode, forward, pass_prompts, placeholder_rule, sample_correction,
                                    score_pass, training_config, with_memory_plan)
from sam2_jax.train.loop import Recipe, gradients, tiny_generated_config, with_image_size
from sam2_jax import Sam2VideoModel, Sam2VideoProcessor
from reference import hf_config
from test_shipped_model import track_with_api

SIZE = 64
CLIPS, FRAMES, SLOTS = 2, 3, 4  # the shapes of every training batch of this module
RECIPE = Recipe(freeze=("image_encoder",), num_corrections=2)


def _test_config() -> Sam2VideoConfig:
    """A small SAM 2.1 that compiles quickly: 64 px, Hiera 1-1-2-1, one memory-attention layer."""
    backbone = HieraConfig(hidden_size=16, embed_dim_per_stage=(16, 32, 64, 128),
                           num_attention_heads_per_stage=(1, 1, 2, 2), blocks_per_stage=(1, 1, 2, 1),
                           window_size_per_stage=(4, 4, 4, 2), global_attention_blocks=(3,),
                           window_positional_embedding_background_size=(2, 2))
    vision = VisionConfig(backbone_config=backbone, backbone_channel_list=(128, 64, 32, 16), fpn_hidden_size=64)
    config = Sam2VideoConfig(
        vision_config=vision, prompt_encoder_config=PromptEncoderConfig(hidden_size=64),
        mask_decoder_config=MaskDecoderConfig(hidden_size=64, mlp_dim=128, num_attention_heads=2,
                                              iou_head_hidden_dim=32),
        memory_attention_hidden_size=64, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=128,
        memory_encoder_hidden_size=64, mask_downsampler_embed_dim=64, memory_fuser_embed_dim=64,
        memory_fuser_intermediate_dim=64)
    return with_image_size(config, SIZE)


CONFIG = _test_config()


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "config.json"
    CONFIG.to_json_file(path)
    assert loop.build_config(str(path)) == CONFIG
    return str(path)


def _args(config_file, out, **overrides) -> argparse.Namespace:
    args = argparse.Namespace(
        config=config_file, init=None, data="generated", format="davis", steps=4, batch_clips=CLIPS,
        objects_per_step=SLOTS, frames=FRAMES, image_size=None, lr=1e-3, warmup=1, weight_decay=0.05,
        freeze=["image_encoder"], dtype="float32", corrections=2, later_corrections=0.5, prompt_frames=2,
        prompt_mix=None, seed=3, out=str(out), save_every=2, resume=False, eval_every=0, eval_clips=2,
        eval_only=False)
    vars(args).update(overrides)
    return args


@pytest.fixture(scope="module")
def params():
    """Random weights for CONFIG (flax's initialisers, wider than `loop.initial_params`), with the
    object-score head's bias at zero: objects come out present on some frames and absent on others, so both
    paths of the pointer and occlusion embeddings are used."""
    flat = flatten_dict(Sam2VideoModel.from_config(CONFIG, seed=0).params)
    flat[loop.PROMPT_FOURIER_FEATURES] = flat[loop.FOURIER_FEATURES].copy()  # one matrix, as in training
    params = unflatten_dict(flat)
    params["mask_decoder"]["pred_obj_score_head"]["proj_out"]["bias"] = jnp.zeros((1,))
    return params


@pytest.fixture(scope="module")
def batch():
    """Clicks, boxes and masks on two prompted frames (frame 0 and a later one, which the pass takes first),
    with correction clicks on both."""
    clips = batches.generated_clips(seed=5, step=0, count=CLIPS, num_frames=FRAMES, size=SIZE, max_objects=2)
    batch = batches.make_batch(clips, SLOTS, "random", np.random.default_rng(32))
    assert batch.prompt_frames.tolist() == [True, False, True]
    assert set(batch.labels[0, :3, 0].tolist()) == {1, 2, -1}  # a click, a box and a mask
    return with_memory_plan(CONFIG, batch)


# ----------------------------------------------------------------------------------------------- losses
def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_focal_loss_by_hand():
    def focal(x, positive):
        p_t, alpha = (_sigmoid(x), 0.25) if positive else (1 - _sigmoid(x), 0.75)
        return -alpha * (1 - p_t) ** 2 * math.log(p_t)

    logits = jnp.array([[2.0, -1.0], [0.0, 3.0]])
    targets = jnp.array([[True, False], [True, False]])
    expected = (focal(2.0, True) + focal(-1.0, False) + focal(0.0, True) + focal(3.0, False)) / 4
    assert float(losses.sigmoid_focal_loss(logits, targets)) == pytest.approx(expected, rel=1e-5)


def test_dice_loss_by_hand():
    logits = jnp.array([[0.0, 0.0], [0.0, 2.0]])
    targets = jnp.array([[True, True], [False, False]])
    p = [0.5, 0.5, 0.5, _sigmoid(2.0)]
    expected = 1 - (2 * (0.5 + 0.5) + 1) / (sum(p) + 2 + 1)
    assert float(losses.dice_loss(logits, targets)) == pytest.approx(expected, rel=1e-6)


def test_iou_loss_by_hand():
    logits = jnp.array([[1.0, 1.0], [-1.0, 1.0]])  # predicts 3 pixels, 2 of them true
    targets = jnp.array([[True, False], [False, True]])
    assert float(losses.mask_iou(logits, targets)) == pytest.approx(2 / 3)
    assert float(losses.iou_loss(jnp.array(0.9), logits, targets)) == pytest.approx(0.9 - 2 / 3, rel=1e-6)
    assert float(losses.mask_iou(-jnp.ones((2, 2)), jnp.zeros((2, 2), bool))) == 0.0  # the trainer's clamp


def test_object_score_loss_by_hand():
    assert float(losses.object_score_loss(jnp.array(2.0), jnp.array(True))) == pytest.approx(math.log(1 + math.exp(-2)))
    assert float(losses.object_score_loss(jnp.array(2.0), jnp.array(False))) == pytest.approx(math.log(1 + math.exp(2)))


def test_focal_and_dice_gradients_match_autodiff_of_the_formulas():
    """The fused custom gradient of the mask losses against JAX's autodiff of the textbook formulas
    (float64; targets broadcast over decoder slots, logits from confident to uncertain)."""
    def textbook(logits, targets, alpha=0.25):
        t = jnp.broadcast_to(targets, logits.shape).astype(logits.dtype)
        p = jax.nn.sigmoid(logits)
        p_t = p * t + (1 - p) * (1 - t)
        ce = -(t * jax.nn.log_sigmoid(logits) + (1 - t) * jax.nn.log_sigmoid(-logits))
        focal = ((alpha * t + (1 - alpha) * (1 - t)) * ce * (1 - p_t) ** 2).mean(axis=(-2, -1))
        dice = 1 - (2 * (p * t).sum(axis=(-2, -1)) + 1) / (p.sum(axis=(-2, -1)) + t.sum(axis=(-2, -1)) + 1)
        return focal, dice

    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.PRNGKey(0), 4)
        logits = 6 * jax.random.normal(keys[0], (3, 4, 9, 7), jnp.float64)
        targets = jax.random.bernoulli(keys[1], 0.3, (3, 1, 9, 7))
        weights = jax.random.normal(keys[2], (2, 3, 4), jnp.float64)

        def weighted(fn):
            return lambda x: sum((w * v).sum() for w, v in zip(weights, fn(x, targets)))

        for ours, theirs in zip(losses.focal_and_dice(logits, targets), textbook(logits, targets)):
            np.testing.assert_allclose(ours, theirs, rtol=1e-12)
        np.testing.assert_allclose(jax.grad(weighted(losses.focal_and_dice))(logits),
                                   jax.grad(weighted(textbook))(logits), rtol=1e-10, atol=1e-15)


def test_decoder_losses_supervise_the_best_multimask_output_and_every_iou():
    truth = jnp.array([[[True, False], [False, False]]] * 2)  # (N=2, 2, 2)
    right, wrong = jnp.array([[5.0, -5.0], [-5.0, -5.0]]), jnp.array([[-5.0, 5.0], [5.0, 5.0]])
    masks = jnp.stack([jnp.stack([wrong, right, wrong])] * 2)  # three outputs, the second right
    iou = jnp.array([[0.1, 0.2, 0.3]] * 2)
    terms = losses.decoder_losses(masks, iou, jnp.array([1.0, -1.0]), truth)
    focal = losses.sigmoid_focal_loss(masks, jnp.broadcast_to(truth[:, None], masks.shape))
    assert float(terms["focal"][0]) == pytest.approx(float(focal[0, 1]))  # the best output
    assert float(terms["iou"][0]) == pytest.approx((0.1 + 0.8 + 0.3) / 3)  # actual IoUs 0, 1, 0
    assert float(terms["score"][1]) == pytest.approx(math.log(1 + math.e))
    one = losses.decoder_losses(masks[:, :1], iou[:, :1], jnp.array([1.0, 1.0]), truth)  # a single output
    assert float(one["focal"][0]) == pytest.approx(float(focal[0, 0]))
    assert float(one["iou"][0]) == pytest.approx(0.1)
    absent = losses.decoder_losses(masks, iou, jnp.array([1.0, 1.0]), jnp.zeros_like(truth))
    for name in ("focal", "dice", "iou"):  # mask terms count only where the object is present
        assert np.all(np.asarray(absent[name]) == 0)
    assert float(absent["score"][0]) == pytest.approx(math.log(1 + math.e))


@pytest.mark.parametrize("shape", [(2, 17, 16, 8), (2, 8, 8, 8)])  # the second: depthwise as a dense matmul
def test_convolutions_by_taps_match_flax(shape):
    """Values and gradients (input and kernel) of `conv_by_taps` against `flax.linen.Conv`."""
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    for conv in (nn.Conv(5, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))), nn.Conv(4, (1, 1)),
                 nn.Conv(8, (7, 7), padding=((3, 3), (3, 3)), feature_group_count=8),
                 nn.Conv(3, (4, 4), strides=(4, 4), padding="VALID"), nn.Conv(6, (3, 3))):
        variables = conv.init(jax.random.PRNGKey(1), x)

        def loss(variables, x, taps):
            with taps_convolutions() if taps else contextlib.nullcontext():
                return jnp.sum(jnp.sin(conv.apply(variables, x)))

        with jax.default_matmul_precision("highest"):
            expected, got = (jax.value_and_grad(loss, argnums=(0, 1))(variables, x, taps) for taps in (False, True))
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------------------------ configs, arguments
def test_tiny_generated_config_is_the_feasibility_model_in_transformers():
    config = tiny_generated_config()
    abstract = Sam2VideoModel.abstract_params(config)
    ours = weights.params_to_state_dict(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, np.float32), abstract))
    theirs = transformers.Sam2VideoModel(hf_config(config))
    assert sum(p.numel() for p in theirs.parameters()) == 3_130_658
    assert {k: v.shape for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


def test_bad_arguments_name_themselves(config_file, tmp_path, capsys):
    with pytest.raises(ValueError, match="freeze"):
        loop.trainable_mask({"vision_encoder": {}}, ["hiera"])
    with pytest.raises(ValueError, match="prompt mix"):
        batches.PromptMix(0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="later corrections"):
        batches.PromptMix(later_correction=1.5)
    with pytest.raises(ValueError, match="prompt frames"):
        batches.PromptMix(prompt_frames=3)
    clips = batches.generated_clips(seed=5, step=0, count=1, num_frames=FRAMES, size=SIZE, max_objects=1)
    with pytest.raises(ValueError, match="prompt_frames"):
        batches.make_batch(clips, 1, "click", prompt_frames=(1,))
    unplanned = batches.make_batch(clips, 1, "click", prompt_frames=(0, 1))
    with pytest.raises(ValueError, match="batch"):
        with_memory_plan(CONFIG, unplanned._replace(correct=np.ones((FRAMES, 1), bool)))
    with pytest.raises(ValueError, match="memory plan"):
        forward(Sam2VideoModule(CONFIG), loop.initial_params(CONFIG, seed=0), unplanned, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="image_size"):
        with_image_size(CONFIG, 100)
    with pytest.raises(ValueError, match="name"):
        loop.build_config("sam3-huge")
    assert train_command.run(_args(config_file, tmp_path, steps=0)) == 1
    assert train_command.run(_args(config_file, tmp_path, data=str(tmp_path / "missing"))) == 1
    assert train_command.run(_args(config_file, tmp_path, resume=True)) == 1  # nothing to resume
    assert "sam2-jax train: error: resume" in capsys.readouterr().err
    assert main(["train", "--config", config_file, "--later-corrections", "2", "--out", str(tmp_path)]) == 1
    assert "later corrections" in capsys.readouterr().err


def test_initial_params_share_the_fourier_features_of_images_and_prompts():
    flat = flatten_dict(loop.initial_params(CONFIG, seed=4))
    np.testing.assert_array_equal(flat[loop.FOURIER_FEATURES], flat[loop.PROMPT_FOURIER_FEATURES])
    mask = flatten_dict(loop.trainable_mask(unflatten_dict(flat), ["image_encoder", "memory_attention"]))
    assert not mask[loop.FOURIER_FEATURES] and not mask[loop.PROMPT_FOURIER_FEATURES]
    assert not any(v for k, v in mask.items() if k[0] in ("vision_encoder", "memory_attention"))
    assert all(v for k, v in mask.items() if k[0] in ("mask_decoder", "memory_encoder"))


def test_initial_params_are_drawn_as_the_original_modules_draw_theirs():
    """Tensor by tensor against a freshly built original sam2.1-hiera-tiny (the sam2 package: PyTorch's
    defaults and SAM2Base's own choices), converted to our layout: the same constants, and random tensors
    with the same spread (within sampling error) around zero. Training from flax's defaults instead was
    several times slower (issue 7's notes)."""
    import torch
    from sam2.build_sam import build_sam2
    from convert.original import to_transformers

    config = Sam2VideoConfig.from_preset("sam2.1-hiera-tiny")
    torch.manual_seed(0)
    original = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu").state_dict()
    converted = {k: v.numpy() for k, v in to_transformers(original, config).items()}
    reference = flatten_dict(weights.state_dict_to_params(converted, Sam2VideoModel.abstract_params(config)))
    ours = flatten_dict(loop.initial_params(config, seed=0))
    assert ours.keys() == reference.keys()
    for key, ref in reference.items():
        got, ref, name = np.asarray(ours[key], np.float64), np.asarray(ref, np.float64), "/".join(key)
        if np.all(ref == ref.flat[0]) and ref.size > 1:  # zeros, ones, layer scales
            np.testing.assert_array_equal(got, ref, err_msg=name)
        elif ref.size >= 64:
            error = 6 / np.sqrt(2 * ref.size)  # 6 standard errors of a standard deviation
            assert abs(got.std() / ref.std() - 1) < error, (name, got.std(), ref.std())
            assert abs(got.mean()) < 6 * ref.std() / np.sqrt(ref.size), (name, got.mean())


def test_learning_rate_schedule():
    assert loop.learning_rate(0, 1e-3, 10, 100) == 0.0
    assert loop.learning_rate(5, 1e-3, 10, 100) == pytest.approx(5e-4)
    assert loop.learning_rate(10, 1e-3, 10, 100) == pytest.approx(1e-3)
    assert loop.learning_rate(55, 1e-3, 10, 100) == pytest.approx(0.55e-3, rel=1e-5)  # half-way down the cosine
    assert loop.learning_rate(100, 1e-3, 10, 100) == pytest.approx(1e-4)


def test_resolve_pretrained(tmp_path):
    assert weights.resolve_pretrained("sam2-jax-shapes").endswith("sam2_jax/pretrained/sam2-jax-shapes")
    assert weights.resolve_pretrained(tmp_path) == str(tmp_path)
    assert weights.resolve_pretrained("elsewhere/model") == "elsewhere/model"


def test_folder_clips_sample_windows_of_a_davis_folder(tmp_path):
    """Training clips from a DAVIS-layout folder: T consecutive annotated frames resized to the input size,
    with the objects visible on the window's first frame, as the generated source gives them."""
    clip = generate_clip(seed=11, num_frames=6, height=96, width=80, max_objects=3)
    write_clip_davis(clip, tmp_path, "shapes", frame_format="png")
    source = batches.FolderClips(tmp_path, "davis", num_frames=4, size=SIZE)
    for frames, masks in source.sample(np.random.default_rng(0), 3):
        assert frames.shape == (4, 96, 80, 3) and frames.dtype == np.uint8
        assert masks.shape[0] == 4 and masks.shape[2:] == (SIZE, SIZE) and masks.dtype == bool
        assert 1 <= masks.shape[1] <= len(clip.obj_ids) and masks[0].any(axis=(1, 2)).all()
        start = next(t for t in range(3) if np.array_equal(frames[0], clip.frames[t]))
        np.testing.assert_array_equal(frames, clip.frames[start:start + 4])
    with pytest.raises(ValueError, match="data"):
        batches.FolderClips(tmp_path, "davis", num_frames=7, size=SIZE)  # no sequence that long


# ---------------------------------------------------------------------------------------------- training
def test_correction_clicks_are_drawn_uniformly_from_the_error_region():
    truth = np.zeros((2, 4, 4), bool)
    truth[0, :2, :2] = True  # object 0: predicted in its top row only, and one false pixel at (x 3, y 3)
    pred = np.full((2, 4, 4), -1.0, np.float32)
    pred[0, 0, :2] = 1.0
    pred[0, 3, 3] = 1.0
    pred[1] = np.where(truth[1], 1.0, -1.0)  # object 1: perfect, nothing to correct
    active = jnp.array([True, True])
    sample = jax.jit(jax.vmap(lambda key: sample_correction(key, pred, truth, active, 0.0)))
    points, labels, used = (np.asarray(v) for v in sample(jax.random.split(jax.random.PRNGKey(0), 3000)))
    errors = {(0, 1): 1, (1, 1): 1, (3, 3): 0}  # (x, y) -> the label of a click there
    picked = [tuple(int(v) for v in p) for p in points[:, 0]]
    assert set(picked) == set(errors) and all(labels[i, 0] == errors[p] for i, p in enumerate(picked))
    counts = np.array([picked.count(p) for p in errors])
    assert np.all(np.abs(counts - 1000) < 120), counts  # uniform: 1000 each, 4 sigma is 103
    assert used[:, 0].all() and not used[:, 1].any()


def test_memory_plan_of_prompted_and_corrected_frames():
    """`with_memory_plan` by hand on 5 frames. Prompted on frame 0 with object 0 corrected on frame 2: frame 2
    becomes object 0's second conditioning memory, so frame 3 finds frame 2 there, not among its recent
    frames; object 1 keeps frame 2 in its ring. Prompted on frames 0 and 3: frame 3 goes second, and frame 1
    attends to both conditioning memories and takes both object pointers, frame 3's at offset -2, as the
    original trainer does; planned for inference, only frame 0's (3 is in its future)."""
    clips = batches.generated_clips(seed=5, step=0, count=1, num_frames=5, size=SIZE, max_objects=2)
    batch = batches.make_batch(clips, 2, "click")
    correct = np.zeros((5, 2), bool)
    correct[[0, 2], 0] = True
    plan = with_memory_plan(CONFIG, batch._replace(correct=correct)).plan
    ring = CONFIG.max_object_pointers_in_encoder
    assert plan["order"].tolist() == [0, 1, 2, 3, 4]
    assert plan["write_cond_slot"].T.tolist() == [[0, 2, 1, 2, 2], [0, 2, 2, 2, 2]]  # 2: none
    assert plan["write_recent_slot"].T.tolist() == [[ring, 0, ring, 1, 2], [ring, 0, 1, 2, 3]]
    frame3 = {k: v[3] for k, v in plan.items() if k != "order"}
    assert frame3["cond_mask"].tolist() == [[True, True], [True, False]]
    assert frame3["pointer_cond_offset"][0].tolist() == [3, 1]
    # Recent memories of frames 3-6 .. 3-1: object 0 has frame 1 (ring slot 0) only; object 1 frames 1 and 2.
    assert frame3["recent_mask"].tolist() == [[False] * 4 + [True, False], [False] * 4 + [True, True]]
    assert frame3["recent_index"][1, 4:].tolist() == [0, 1]
    assert frame3["pointer_mask"][:, :2].tolist() == [[False, True], [True, True]]  # frames 2 and 1

    two_prompts = batches.make_batch(clips, 2, "click", prompt_frames=(0, 3))
    for inference in (False, True):
        plan = with_memory_plan(CONFIG, two_prompts, inference=inference).plan
        assert plan["order"].tolist() == [0, 3, 1, 2, 4]
        assert plan["write_cond_slot"][:2].tolist() == [[0, 0], [1, 1]]
        frame1 = {k: v[2] for k, v in plan.items() if k != "order"}
        assert frame1["cond_mask"].all() and not frame1["recent_mask"].any() and not frame1["pointer_mask"].any()
        if inference:
            assert frame1["pointer_cond_mask"].tolist() == [[True, False]] * 2
            assert frame1["pointer_cond_offset"][:, 0].tolist() == [1, 1]
        else:
            assert frame1["pointer_cond_mask"].all()
            assert frame1["pointer_cond_offset"].tolist() == [[1, -2]] * 2


def test_each_decoder_pass_sees_the_prompt_and_the_clicks_before_it():
    points = jnp.arange(2 * 4 * 2, dtype=jnp.float32).reshape(2, 4, 2)
    labels = jnp.array([[1, -10, 0, 1], [-1, -1, 1, 0]])  # a click with two corrections; a tracked object
    mask = jnp.array([[True, False, True, True], [True, False, True, False]])  # its second correction unused
    p, l, m = pass_prompts(points, labels, mask, 3)
    np.testing.assert_array_equal(p, jnp.concatenate([points] * 3))
    np.testing.assert_array_equal(l, jnp.concatenate([labels] * 3))
    np.testing.assert_array_equal(m, [[True, False, False, False], [True, False, False, False],  # pass 0
                                      [True, False, True, False], [False, False, True, False],  # pass 1
                                      [True, False, True, True], [False, False, True, False]])  # pass 2


def test_correction_passes_are_the_original_trainers_loop():
    """On single images, `forward`'s loss terms and final masks are those of the original trainer's loop of
    decoder calls: each pass with the prompt, the clicks so far and the previous pass's low-res logits as its
    mask prompt; the next click drawn from the error region. Clicks come from the truth here
    (click_from_truth 1), so they do not hang on rounding; the loop without fed-back logits must differ."""
    clips = batches.generated_clips(seed=7, step=0, count=2, num_frames=1, size=SIZE, max_objects=2)
    batch = with_memory_plan(CONFIG, batches.make_batch(clips, SLOTS, "random", np.random.default_rng(1),
                                                        batches.PromptMix(0.5, 0.5, 0.0)))
    module, key, corrections = Sam2VideoModule(training_config(CONFIG)), jax.random.PRNGKey(3), 3
    params = loop.initial_params(CONFIG, seed=0)  # every object present
    masks, terms = jax.jit(lambda p: forward(module, p, batch, key, corrections, 1.0))(params)

    apply = functools.partial(module.apply, {"params": params})
    with taps_convolutions():
        (s0, s1, level2), pos = apply(jnp.asarray(batch.pixels[:, 0]), method=Sam2VideoModule.vision_features)
    ci, n, correct = batch.clip_index, SLOTS, jnp.asarray(batch.correct[0])
    assert np.array_equal(correct, batch.valid)  # every object clicked or boxed, then corrected
    plan = {k: jnp.asarray(v[0]) for k, v in batch.plan.items()}
    memory = tracker.read_memory(tracker.init_state(tracker.BankShape.for_config(CONFIG, n, COND_WIDTH)), plan)
    pix = apply(level2[ci], pos, *memory, plan["max_pointers"], jnp.zeros((n,), bool),
                method=Sam2VideoModule.conditioned_features)
    truth, valid = jnp.asarray(batch.masks[0]), jnp.asarray(batch.valid, jnp.float32)
    keys = jax.random.split(jax.random.split(key, 1)[0], corrections)

    @jax.jit
    def decode_pass(points, labels, point_mask, previous, weight):
        """One decoder call (previous: the fed-back logits, or None) and its loss terms."""
        out, *scored = decode(apply, CONFIG, (s0[ci], s1[ci]), pix, points, labels,
                              placeholder_rule(labels, point_mask), jnp.bool_(True), None, None,
                              previous, correct if previous is not None else None)
        return out, score_pass(*scored, truth, weight)

    def pass_by_pass(feed_back: bool):
        """(summed loss terms, final high-res logits) of the passes one after another."""
        points, labels, point_mask = (jnp.pad(jnp.asarray(v), ((0, 0), (0, corrections)) + ((0, 0),) * (v.ndim - 2))
                                      for v in (batch.points[0], batch.labels[0], batch.point_mask[0]))
        previous, total = None, {}
        for p in range(corrections + 1):
            out, terms = decode_pass(points, labels, point_mask, previous, valid if p == 0 else valid * correct)
            for k, v in terms.items():
                total[k] = total.get(k, 0.0) + float(v)
            if p < corrections:
                click, label, used = sample_correction(keys[p], out["high_res_masks"], truth, correct, 1.0)
                points = points.at[:, 2 + p].set(jnp.where(correct[:, None], click, points[:, 2 + p]))
                labels = labels.at[:, 2 + p].set(jnp.where(correct, label, labels[:, 2 + p]))
                point_mask = point_mask.at[:, 2 + p].set(correct & used)
                previous = out["pred_masks"] if feed_back else None
        return total, np.asarray(out["high_res_masks"])

    total, final = pass_by_pass(feed_back=True)
    for k in terms:
        np.testing.assert_allclose(float(terms[k]), total[k], rtol=2e-4, atol=1e-6, err_msg=k)
    real = batch.valid  # padding slots are empty mask prompts, left out of the loop's prompts
    np.testing.assert_allclose(np.asarray(masks[0])[real], final[real], atol=2e-3)
    _, without = pass_by_pass(feed_back=False)
    change = np.abs(without - final)[real].max()
    print(f"fed-back logits change the final logits by up to {change:.3g}")
    assert change > 0.05  # 25 times the tolerance above


def test_the_bfloat16_recipe_traces_with_float32_gradients(params, batch):
    """`--dtype bfloat16` (traced only, not compiled): the loss and the gradients come out in float32, the
    parameters' dtype, through the correction passes and the memory bank."""
    recipe = dataclasses.replace(RECIPE, dtype="bfloat16")
    metrics, grads = jax.eval_shape(gradients(CONFIG, recipe), params, batch, jax.random.PRNGKey(0))
    assert metrics["loss"].dtype == jnp.float32
    assert all(g.dtype == p.dtype == jnp.float32
               for g, p in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(params)))


def test_gradients_reach_exactly_the_trainable_parameters(params, batch):
    """Every trainable parameter gets a gradient, frozen ones and buffers none. Two weight sets: `params`
    (objects present on some frames, absent on others) and the same with every object present, since a mask
    prompt reaches the model only through the object pointer of its frame, which is `no_object_pointer`
    where the decoder calls the object absent (as in transformers and the original)."""
    assert batch.is_mask_prompt.any() and (~batch.is_mask_prompt).any() and batch.correct[1:].any()
    present = jax.tree_util.tree_map(jnp.array, params)
    present["mask_decoder"]["pred_obj_score_head"]["proj_out"]["bias"] = jnp.full((1,), 20.0, jnp.float32)
    reached = {}
    for weights_set in (params, present):
        metrics, grads = gradients(CONFIG, RECIPE)(weights_set, batch, jax.random.PRNGKey(0))
        assert np.isfinite(float(metrics["loss"]))
        for path, grad in flatten_dict(grads).items():
            grad = np.asarray(grad)
            assert np.all(np.isfinite(grad)), f"{'.'.join(path)}: gradient not finite"
            reached[path] = reached.get(path, False) | bool(np.any(grad != 0))
    untrained = {("no_memory_positional_encoding",),  # in checkpoints, not used by the forward pass
                 loop.FOURIER_FEATURES, loop.PROMPT_FOURIER_FEATURES}  # buffers in transformers
    # Only the best of the three multimask outputs is supervised (as in the original trainer), so the
    # hypernetwork of a multimask slot gets a gradient only where its mask was the best one.
    multimask_heads = {f"output_hypernetworks_mlps.{k}" for k in (1, 2, 3)}
    for path, nonzero in reached.items():
        name = ".".join(path)
        if path[0] == "vision_encoder" or path in untrained:
            assert not nonzero, f"{name}: frozen or untrained, but its gradient is not zero"
        elif not (path[0] == "mask_decoder" and path[1] in multimask_heads):
            assert nonzero, f"{name}: no gradient"
    assert any(v for k, v in reached.items() if k[0] == "mask_decoder" and k[1] in multimask_heads), \
        "no multimask output was supervised"


def test_a_few_steps_overfit_a_fixed_batch(params, batch):
    state = jax.tree_util.tree_map(jnp.array, params)  # the step donates its inputs
    opt_state = RECIPE.optimizer(state).init(state)
    seen = []
    for _ in range(8):
        state, opt_state, metrics = loop.train_step(CONFIG, RECIPE, state, opt_state, batch, jax.random.PRNGKey(1),
                                                    2e-3)
        seen.append(float(metrics["loss"]))
    assert seen[-1] < 0.7 * seen[0], seen
    for key, value in flatten_dict(params["vision_encoder"]).items():  # frozen: not one bit moved
        np.testing.assert_array_equal(np.asarray(flatten_dict(state["vision_encoder"])[key]), np.asarray(value))


def test_resume_gives_the_state_of_an_uninterrupted_run(config_file, tmp_path, monkeypatch):
    straight = loop.train(_args(config_file, tmp_path / "straight"))
    schedule = loop.learning_rate

    def stop_at_step_2(step, *args):  # a crash right after the step-2 checkpoint
        if step >= 2:
            raise KeyboardInterrupt
        return schedule(step, *args)

    monkeypatch.setattr(loop, "learning_rate", stop_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        loop.train(_args(config_file, tmp_path / "resumed"))
    monkeypatch.undo()
    resumed = loop.train(_args(config_file, tmp_path / "resumed", resume=True))
    assert resumed.step == straight.step == 4
    for a, b in zip(jax.tree_util.tree_leaves((straight.params, straight.opt_state)),
                    jax.tree_util.tree_leaves((resumed.params, resumed.opt_state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="resume"):
        loop.train(_args(config_file, tmp_path / "resumed", resume=True, lr=5e-4))

    # The checkpoint loads strictly, in sam2-jax and in transformers.
    folder = tmp_path / "straight"
    ours = Sam2VideoModel.from_pretrained(folder)
    for a, b in zip(jax.tree_util.tree_leaves(ours.params), jax.tree_util.tree_leaves(straight.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    _, info = transformers.Sam2VideoModel.from_pretrained(folder, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info

    # --eval-only scores the checkpoint with its own config.
    scores = loop.evaluate_checkpoint(_args("tiny-generated", tmp_path, init=str(folder), eval_clips=1))
    assert set(scores) == {"copy", "click", "box", "mask"}
    assert all(0 <= s["J&F"] <= 1 for s in scores.values()), scores


# -------------------------------------------------------------------------- training pass vs inference
def test_the_training_pass_tracks_as_the_inference_api(params):
    """The training pass without corrections, with `inference`, gives the masks of
    `Sam2VideoModel.propagate_in_video_iterator` (random weights, every object present so that the masks are
    not empty), prompted on frame 0, or on frames 0 and 4 (the pass takes frame 4 second, as the API runs it
    when it is prompted, before propagating). As the original trainer (sigmoid masks of prompted frames in
    memory, no stability fallback), clicked objects keep their prompted frames' masks and change on tracked
    frames."""
    params = jax.tree_util.tree_map(jnp.array, params)
    params["mask_decoder"]["pred_obj_score_head"]["proj_out"]["bias"] = jnp.full((1,), 20.0, jnp.float32)
    model = Sam2VideoModel(CONFIG, params)
    processor = Sam2VideoProcessor(size=SIZE)
    clips = batches.held_out_clips(2, 8, SIZE)
    run = jax.jit(lambda p, b, inference: forward(model.module, p, b, jax.random.PRNGKey(0), 0,
                                                  inference=inference)[0], static_argnums=2)
    for prompt_frames, kind in itertools.product([(0,), (0, 4)], ("click", "box", "mask")):
        prompted = np.isin(np.arange(8), prompt_frames)
        made = batches.make_batch(clips, 6, kind, prompt_frames=prompt_frames)
        trained = np.asarray(run(params, with_memory_plan(CONFIG, made, inference=True), True)) > 0
        if kind == "click":
            as_trainer = np.asarray(run(params, with_memory_plan(CONFIG, made), False)) > 0
            np.testing.assert_array_equal(as_trainer[prompted], trained[prompted])
            assert (as_trainer[~prompted] != trained[~prompted]).any(), kind  # random weights: a few pixels
        n = 0
        for frames, truth in clips:
            api = track_with_api(model, processor, frames, truth, kind, prompt_frames)
            count = truth.shape[1]
            # A mask prompt's own frame: the training pass gives the mask itself, the API gives it back through
            # the 32x32 low-resolution output (both as transformers does); DAVIS scoring leaves frame 0 out.
            scored = ~prompted if kind == "mask" else np.ones(8, bool)
            differ = np.mean(api[scored] != trained[scored, n:n + count])
            assert differ < 1e-3, f"{kind} on {prompt_frames}: {differ:.2%} of the pixels differ"
            assert api[1:].any() and not api[1:].all(), f"{kind}: masks all empty or all full"
            n += count
