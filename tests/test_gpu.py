"""Parity on the GPU: the image and video parity flows with transformers on CUDA (TF32 off) and sam2-jax on the
GPU (float32, "highest" matmul precision); and sam2-jax bfloat16 masks against its float32 masks (IoU >= 0.99),
on the GPU and, with the small config, on the CPU.

    python -m pytest -m gpu    # JAX then takes the GPU (tests/conftest.py); skipped where there is none

`benchmarks/gpu_run.sh --rehearse` runs the GPU tests on the CPU (`SAM2_JAX_GPU_TESTS_ON=cpu`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import GPU_TESTS_ON
from test_image_model import CASES, _pixels, _run_both, make_models
from test_video_model import ONE_CLICK, Pair, _run, _video, run_flow

from sam2_jax.config import small_config
from sam2_jax.models import layers
from sam2_jax import Sam2VideoModel

TORCH_DEVICE = "cuda" if GPU_TESTS_ON == "gpu" else "cpu"
ON_CPU_AND_GPU = pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
TWO_OBJECTS = [("add", dict(frame_idx=0, obj_ids=[1, 2], input_points=[[[[70, 80]], [[180, 150]]]],
                            input_labels=[[[1], [1]]])),
               ("forward", 0), ("propagate", {})]


@pytest.fixture(scope="module")
def strict_float32_torch():
    """torch without TF32 (matmuls and convolutions in full float32), as the parity tests need."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class PresentObjects(Pair):
    """`Pair` with every object present: its calibrated object scores sit at the present/absent threshold on
    purpose, where bfloat16 flips whole objects; IoU then measures presence, not masks."""

    @torch.no_grad()
    def _bias_object_scores(self, num_frames):  # present on every frame, whatever the calibration clip
        self.hf.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(10.0)


def _iou(a, b) -> float:
    a, b = np.asarray(a, np.float32) > 0, np.asarray(b, np.float32) > 0
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.mark.gpu
@pytest.mark.parametrize("case", sorted(CASES))
def test_image_model_matches_transformers_on_gpu(strict_float32_torch, tmp_path, case):
    hf, ours, folder = make_models(tmp_path)
    assert jax.default_backend() == GPU_TESTS_ON
    _run_both((hf.to(TORCH_DEVICE), ours, folder), f"{GPU_TESTS_ON} {case}", True, **CASES[case])


@pytest.mark.gpu
@pytest.mark.parametrize("name,actions", [("one click", ONE_CLICK), ("two objects", TWO_OBJECTS)],
                         ids=["one click", "two objects"])
def test_video_model_matches_transformers_on_gpu(strict_float32_torch, tmp_path, name, actions):
    pair = Pair(small_config(), tmp_path)  # calibrated on the CPU, then moved
    pair.hf.to(TORCH_DEVICE)
    assert jax.default_backend() == GPU_TESTS_ON
    run_flow(pair, actions, video=_video(num_frames=8), name=f"{GPU_TESTS_ON} {name}")


@pytest.mark.gpu
def test_cudnn_attention_matches_xla_attention():
    """bfloat16 attention on the GPU runs cuDNN's fused kernel (memory attention's shapes: one head of 256, keys
    partly masked, values narrower than keys) and agrees with the XLA path; the rehearsal on the CPU checks the
    XLA path alone."""
    rng = np.random.default_rng(0)
    q, k = (jnp.asarray(rng.standard_normal((2, n, 1, 256)), jnp.bfloat16) for n in (512, 1088))
    v = jnp.asarray(rng.standard_normal((2, 1088, 1, 64)), jnp.bfloat16)
    mask = jnp.asarray(rng.random((2, 1088)) > 0.3)
    fused = jax.jit(lambda *a: layers.attention(*a, scale=256 ** -0.5, mask=mask))
    plain = jax.jit(lambda q, k, v: layers._xla_attention(q, k, v, 256 ** -0.5, mask))
    hlo = fused.lower(q, k, v).as_text()
    assert ("__cudnn$fmha" in hlo) == (jax.default_backend() == "gpu")
    expected = np.asarray(plain(q, k, v), np.float32)
    assert np.abs(np.asarray(fused(q, k, v), np.float32) - expected).max() <= 0.02 * np.abs(expected).max()


@ON_CPU_AND_GPU
def test_image_model_bfloat16_masks_match_float32(tmp_path, device):
    assert jax.default_backend() == device
    _, ours, folder = make_models(tmp_path)
    _, ours16, _ = make_models(tmp_path, dtype=jnp.bfloat16)
    prompt = CASES["box + click"]
    with jax.default_matmul_precision("highest"):
        masks = ours(pixel_values=_pixels(), **prompt).pred_masks
    masks16 = ours16(pixel_values=_pixels(), **prompt).pred_masks
    assert ours16.dtype == jnp.bfloat16
    iou = _iou(masks16, masks)
    print(f"IoU bfloat16 vs float32 ({device}, image): {iou:.5f}")
    assert iou >= 0.99


@ON_CPU_AND_GPU
def test_video_model_bfloat16_masks_match_float32(tmp_path, device):
    assert jax.default_backend() == device
    pair = PresentObjects(small_config(), tmp_path)
    runs = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        model = pair.ours if dtype == jnp.float32 else Sam2VideoModel.from_pretrained(tmp_path, dtype=dtype)
        session = pair.processor.init_video_session(video=_video(), dtype=dtype)
        with jax.default_matmul_precision("highest" if dtype == jnp.float32 else "default"):
            runs[dtype] = _run(model, pair.processor, session, TWO_OBJECTS, hf=False)
    ious = [_iou(b.pred_masks, a.pred_masks) for a, b in zip(runs[jnp.float32], runs[jnp.bfloat16])]
    print(f"IoU bfloat16 vs float32 ({device}, video): min {min(ious):.5f} over {len(ious)} frames")
    assert min(ious) >= 0.99
