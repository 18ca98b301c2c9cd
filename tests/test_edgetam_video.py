"""Parity of EdgeTAM video tracking against transformers `EdgeTamVideoModel`, flow by flow, frame by frame, with
every parameter randomised (RepViT's BatchNorm statistics included), at 256 px on a short video; the strict
weight mapping both ways; `functional.propagate` on EdgeTAM; the session's memory accessors."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from reference import assert_close, randomize_, to_numpy
from test_edgetam_image import randomize_backbone_
from test_functional import FLOWS, check_propagate
from test_video_model import SIZE, Pair, _run, _video, pts, run_flow

from sam2_jax import EdgeTamVideoInferenceSession, EdgeTamVideoModel, Sam2VideoModel, Sam2VideoProcessor, weights
from sam2_jax.config import EdgeTamVideoConfig, EdgeTamVisionConfig, Sam2VideoConfig, small_config
from sam2_jax.models.edgetam_video import EdgeTamVideoModule
from sam2_jax.tracking import tracker

pytest.importorskip("timm")

NUM_FRAMES = 10  # past the 7-frame memory ring; the pointer window (16) is cut by the video's end


def edgetam_video_config() -> EdgeTamVideoConfig:
    """EdgeTAM video at 256 px: 16 x 16 level-2 features, 8 + 16 perceiver latents (4 x 4 windows of 4 x 4),
    a 4 x 4 key RoPE grid; narrower feed-forwards to keep the tests fast."""
    s = SIZE // 4
    return EdgeTamVideoConfig(
        vision_config=EdgeTamVisionConfig(backbone_feature_sizes=((s, s), (s // 2, s // 2), (s // 4, s // 4))),
        prompt_encoder_config={"image_size": SIZE}, image_size=SIZE, memory_attention_rope_feat_sizes=(16, 16),
        memory_attention_rope_k_sizes=(4, 4), memory_attention_mlp_hidden_size=512, perceiver_resampler_num_latents=8,
        perceiver_resampler_num_latents_2d=16, perceiver_resampler_mlp_intermediate_size=128)


CONFIG = edgetam_video_config()
LATENTS = 8 + 16


def hf_edgetam_config(config: EdgeTamVideoConfig):
    data = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "architectures")}
    return transformers.EdgeTamVideoConfig(**data)


@torch.no_grad()
def spread_weights_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Linear and conv weights at N(0, 1/fan_in): at transformers' N(0, 0.02) the memory encoder and the perceiver
    shrink what a frame adds to its memory to ~1e-6 of the learned latents, and the memories of all frames
    would be the same (hiding any mix-up of frames)."""
    gen = torch.Generator().manual_seed(seed)
    for sub in module.modules():
        if isinstance(sub, (torch.nn.Linear, torch.nn.Conv2d)):
            fan_in = sub.weight[0].numel()
            sub.weight.copy_(torch.randn(sub.weight.shape, generator=gen) / fan_in ** 0.5)
    return module


class EdgeTamPair(Pair):
    """transformers' EdgeTamVideoModel with every parameter random, saved and loaded by sam2-jax."""

    def __init__(self, tmp_path, seed=1, bias_frames=6):
        super().__init__(CONFIG, tmp_path, seed, bias_frames)

    @staticmethod
    def reference_model(config, seed):
        """transformers' EdgeTamVideoModel with every parameter random (RepViT's BatchNorm statistics too), the
        memory encoder's and perceiver's weights spread (`spread_weights_`)."""
        hf = transformers.EdgeTamVideoModel(hf_edgetam_config(config)).eval()
        hf = randomize_backbone_(randomize_(hf, seed=seed), seed=seed)
        spread_weights_(hf.memory_encoder, seed)
        spread_weights_(hf.spatial_perceiver, seed)
        return hf

    @torch.no_grad()
    def _bias_object_scores(self, num_frames):
        """Objects absent on some frames and present on others, with a margin: EdgeTAM's random object scores
        vary little between tracked frames (~1e-4 after SAM 2's x100) but much with the prompts (~0.3), so the
        tracked frames are put at +0.05 (present) and a prompt can make its object absent on its frame (the
        -1024 mask, `no_object_pointer` and the occlusion embedding then enter the memory bank)."""
        head = self.hf.mask_decoder.pred_obj_score_head.proj_out
        head.weight.mul_(100.0)
        session = self.hf_processor.init_video_session(video=video(num_frames=num_frames), inference_device="cpu")
        self.hf_processor.add_inputs_to_inference_session(session, **copy.deepcopy(TWO_OBJECTS))
        scores = torch.cat([o.object_score_logits.ravel() for o in self.hf.propagate_in_video_iterator(
            session, start_frame_idx=0) if o.frame_idx > 0])
        head.bias.sub_(scores.median() - 0.05)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return EdgeTamPair(tmp_path_factory.mktemp("edgetam_video"))


def video(seed=0, num_frames=NUM_FRAMES):
    return _video(num_frames=num_frames, seed=seed)


def flow(pair, actions, name, **options):
    return run_flow(pair, actions, video=video(), name=name, **options)


ONE_CLICK = [("add", dict(frame_idx=0, obj_ids=1, input_points=pts((70, 80)), input_labels=[[[1]]])),
             ("forward", 0), ("propagate", {})]
TWO_OBJECTS = dict(frame_idx=0, obj_ids=[1, 2], input_points=[[[[70, 80]], [[180, 150]]]], input_labels=[[[1], [1]]])


# -------------------------------------------------------------------------------------------- the model
def test_loads_as_edgetam_and_round_trips_the_checkpoint(pair, tmp_path):
    ours = pair.ours
    assert isinstance(ours.config, EdgeTamVideoConfig) and isinstance(ours.module, EdgeTamVideoModule)
    expected = {k: to_numpy(v) for k, v in pair.hf.state_dict().items()}
    written = weights.params_to_state_dict(ours.params)
    assert set(written) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(written[key].astype(value.dtype), value, err_msg=key)
    ours.save_pretrained(tmp_path)
    back = transformers.EdgeTamVideoModel.from_pretrained(tmp_path).eval()
    for key, value in back.state_dict().items():
        np.testing.assert_array_equal(to_numpy(value), expected[key], err_msg=key)
    assert isinstance(EdgeTamVideoModel.from_pretrained(pair.folder).module, EdgeTamVideoModule)


def test_config_chooses_the_model_and_initialises():
    model = Sam2VideoModel(CONFIG)  # transformers' initialisation
    assert isinstance(model.module, EdgeTamVideoModule)
    assert model.params["spatial_perceiver"]["latents_2d"].shape == (16, 64)
    assert "mlp" in model.params["memory_attention"]["layers.0"]
    assert isinstance(EdgeTamVideoModel(CONFIG).module, EdgeTamVideoModule)
    with pytest.raises(ValueError, match="EdgeTamVideoModel takes EdgeTAM configs"):
        EdgeTamVideoModel(small_config())
    assert EdgeTamVideoInferenceSession is Sam2VideoProcessor(size=SIZE).init_video_session().__class__
    shape = tracker.BankShape.for_config(CONFIG, 1, 1)
    assert (shape.tokens, shape.feature_dtype) == (LATENTS, jnp.float32)
    sam2 = tracker.BankShape.for_config(small_config(), 1, 1)
    assert (sam2.tokens, sam2.feature_dtype) == (16 * 16, jnp.bfloat16)
    assert isinstance(small_config(), Sam2VideoConfig)


# ---------------------------------------------------------------------------------------------- flows
def test_one_click(pair):
    flow(pair, ONE_CLICK, "edgetam one click")


def test_three_objects_with_ragged_clicks(pair):
    points = [[[[70, 80], [75, 90], [10, 10]], [[180, 150]], [[120, 200], [30, 30]]]]
    _, _, absent, present = flow(pair, [("add", dict(frame_idx=0, obj_ids=[2, 3, 4], input_points=points,
                                                     input_labels=[[[1, 1, 0], [1], [1, 1]]])),
                                        ("forward", 0), ("propagate", {})], "edgetam three objects")
    assert absent > 0 and present > 0, "the flow should exercise present and absent objects"


def test_box(pair):
    flow(pair, [("add", dict(frame_idx=0, obj_ids=1, input_boxes=[[[30, 50, 100, 120]]])), ("forward", 0),
                ("propagate", {})], "edgetam box")


def test_mask_prompt(pair):
    """One object: transformers' EdgeTAM fails on a frame where a mask-prompted object meets another object
    (its mask-as-output score has one dimension less, and `torch.cat` refuses the mix)."""
    mask = np.zeros((SIZE, SIZE), bool)
    mask[50:110, 30:100] = True
    flow(pair, [("add", dict(frame_idx=0, obj_ids=1, input_masks=mask)), ("forward", 0), ("propagate", {})],
         "edgetam mask prompt")


def test_refinement_click_then_propagate_again(pair):
    actions = ONE_CLICK + [("add", dict(frame_idx=6, obj_ids=1, input_points=pts((100, 85)), input_labels=[[[0]]])),
                           ("forward", 6), ("propagate", {"start_frame_idx": 6, "max_frame_num_to_track": 3}),
                           ("propagate", {"start_frame_idx": 0})]
    flow(pair, actions, "edgetam refinement")


def test_object_added_on_a_later_frame(pair):
    """Frame 5 runs a clicked object beside a tracked one: EdgeTAM binarises the memory mask of the clicked one
    only (SAM 2 of both)."""
    actions = ONE_CLICK + [("add", dict(frame_idx=5, obj_ids=5, input_points=pts((180, 150)), input_labels=[[[1]]])),
                           ("forward", 5), ("propagate", {"start_frame_idx": 5})]
    flow(pair, actions, "edgetam added object")


def test_reverse_and_both_directions(pair):
    actions = [("add", dict(frame_idx=7, obj_ids=1, input_points=pts((110, 80)), input_labels=[[[1]]])),
               ("forward", 7), ("propagate", {"reverse": True}), ("propagate", {"start_frame_idx": 7})]
    flow(pair, actions, "edgetam reverse, then forward (both directions)")
    session = pair.processor.init_video_session(video=video())
    pair.processor.add_inputs_to_inference_session(session, frame_idx=4, obj_ids=1, input_points=pts((90, 80)),
                                                   input_labels=[[[1]]])
    outputs = pair.ours.propagate_in_video(session, start_frame_idx=4, both_directions=True)
    assert sorted(outputs) == list(range(NUM_FRAMES))


def test_streaming(pair):
    stream = [("stream", (frame, TWO_OBJECTS if i == 0 else None)) for i, frame in enumerate(video(seed=4))]
    run_flow(pair, stream, video=[], name="edgetam streaming")


def test_remove_object_matches_a_session_that_never_had_it(pair):
    """transformers has no remove_object: after removing object 1, object 2 (EdgeTAM runs each object alone)
    must track as in a transformers session prompted with object 2 only."""
    session = pair.processor.init_video_session(video=video())
    pair.processor.add_inputs_to_inference_session(session, **copy.deepcopy(TWO_OBJECTS))
    with jax.default_matmul_precision("highest"):
        list(pair.ours.propagate_in_video_iterator(session, start_frame_idx=0))
        session.remove_object(1)
        got = list(pair.ours.propagate_in_video_iterator(session, start_frame_idx=0))
    with torch.no_grad():
        hf_session = pair.hf_processor.init_video_session(video=video(), inference_device="cpu")
        pair.hf_processor.add_inputs_to_inference_session(hf_session, frame_idx=0, obj_ids=2,
                                                          input_points=pts((180, 150)), input_labels=[[[1]]])
        expected = list(pair.hf.propagate_in_video_iterator(hf_session, start_frame_idx=0))
    worst = 0.0
    for a, b in zip(got, expected, strict=True):
        assert a.object_ids == [2]
        ref = to_numpy(b.pred_masks)
        scale = max(1.0, float(np.abs(ref[ref > -1000]).max()) if (ref > -1000).any() else 1.0)
        worst = max(worst, assert_close(f"removed object, frame {a.frame_idx}", a.pred_masks, ref, atol=1e-3 * scale)
                    / scale)
    print(f"PARITY edgetam remove object: worst max|diff|/scale={worst:.3g}")


def test_memories_match_transformers_and_the_accessors(pair):
    """The stored memory of a prompted and of a tracked frame: perceiver latents (1,24,64) in float32 as
    transformers stores them; `store_output` takes them back."""
    with torch.no_grad():
        hf_session = pair.hf_processor.init_video_session(video=video(), inference_device="cpu")
        pair.hf_processor.add_inputs_to_inference_session(hf_session, **copy.deepcopy(TWO_OBJECTS))
        list(pair.hf.propagate_in_video_iterator(hf_session, start_frame_idx=0, max_frame_num_to_track=3))
    session = pair.processor.init_video_session(video=video())
    pair.processor.add_inputs_to_inference_session(session, **copy.deepcopy(TWO_OBJECTS))
    with jax.default_matmul_precision("highest"):
        list(pair.ours.propagate_in_video_iterator(session, start_frame_idx=0, max_frame_num_to_track=3))
    for obj in (0, 1):
        for frame, cond in ((0, True), (3, False)):
            ours = session.get_output(obj, frame, "maskmem_features", is_conditioning_frame=cond)
            ref = hf_session.get_output(obj, frame, "maskmem_features", is_conditioning_frame=cond)
            assert ours.shape == tuple(ref.shape) == (1, LATENTS, 64) and ours.dtype == jnp.float32
            assert_close(f"maskmem_features object {obj} frame {frame}", ours, ref, rel=1e-3)
            pointer = session.get_output(obj, frame, "object_pointer", is_conditioning_frame=cond)
            assert_close(f"object_pointer object {obj} frame {frame}", pointer,
                         hf_session.get_output(obj, frame, "object_pointer", is_conditioning_frame=cond), rel=1e-3)
    stored = session.get_output(0, 0, "maskmem_features", is_conditioning_frame=True)
    session.store_output(0, 0, "maskmem_features", np.asarray(stored) * 0.5, is_conditioning_frame=True)
    np.testing.assert_allclose(session.get_output(0, 0, "maskmem_features", is_conditioning_frame=True),
                               np.asarray(stored) * 0.5)
    with pytest.raises(ValueError, match=rf"maskmem_features'\]: expected shape \(1, {LATENTS}, 64\)"):
        session.store_output(0, 0, "maskmem_features", np.zeros((256, 1, 64)), is_conditioning_frame=True)


@pytest.mark.parametrize("flow", ["boxes, an object starting late", "both directions"])
def test_functional_propagate_matches_the_session_and_transformers(pair, flow):
    """`functional.propagate` on EdgeTAM against the session and transformers (test_functional's check)."""
    check_propagate(pair, np.stack(video(seed=2)), f"edgetam functional {flow}", *FLOWS[flow])


def test_bfloat16_tracks_as_transformers_float32(pair):
    """EdgeTAM in bfloat16 (the model and the session, as GPU users run it) against transformers' float32: the
    objects' presence is the same on every frame, and the masks' signs agree wherever transformers' logit is
    clear of zero (random weights give logits below one, where bfloat16's rounding flips the near-zero pixels)."""
    actions = [("add", TWO_OBJECTS), ("forward", 0), ("propagate", {})]
    with torch.no_grad():
        hf_session = pair.hf_processor.init_video_session(video=video(), inference_device="cpu")
        expected = _run(pair.hf, pair.hf_processor, hf_session, copy.deepcopy(actions), hf=True)
    model = EdgeTamVideoModel.from_pretrained(pair.folder, dtype=jnp.bfloat16)
    assert model.params["spatial_perceiver"]["latents_2d"].dtype == jnp.bfloat16
    session = pair.processor.init_video_session(video=video(), dtype=jnp.bfloat16)
    got = _run(model, pair.processor, session, copy.deepcopy(actions), hf=False)
    assert [o.frame_idx for o in got] == [o.frame_idx for o in expected] and len(got) == NUM_FRAMES + 1
    worst, present = 1.0, 0
    for ours, ref in zip(got, expected):
        a, b = np.asarray(ours.pred_masks, np.float32), to_numpy(ref.pred_masks)
        np.testing.assert_array_equal((a > 0).any(axis=(1, 2, 3)), (b > 0).any(axis=(1, 2, 3)),
                                      err_msg=f"frame {ref.frame_idx}: presence")
        present += int((b > 0).any(axis=(1, 2, 3)).sum())
        shown = b > -1000
        clear = shown & (np.abs(b) > 0.05 * np.abs(b[shown]).max()) if shown.any() else shown
        if clear.any():
            worst = min(worst, float(((a > 0) == (b > 0))[clear].mean()))
    print(f"EdgeTAM bfloat16 vs transformers float32: {present} present object masks, signs agree on "
          f"{worst:.5f} of the clear pixels (worst frame)")
    assert present > 0 and worst >= 0.999
