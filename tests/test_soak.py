"""The soaks of `benchmarks/soak.py` at a reduced length (full length: `python -m benchmarks.soak`): a stream keeps
host and device memory flat and compiles nothing after its first frames, a whole video keeps the host within its
uint8 size plus a constant, and reruns give the same masks bit for bit. Small config at 128 px."""

from __future__ import annotations

import pytest

from benchmarks import soak
from sam2_jax.config import small_config
from sam2_jax import runtime
from sam2_jax import Sam2VideoModel

STREAMED, WARM_UP = 150, 30  # one object: the stream then compiles the step that the offline video runs too


@pytest.fixture(scope="module")
def model():
    return Sam2VideoModel.from_config(small_config(image_size=128), seed=0)


def summary(run: dict) -> dict:
    return {k: v for k, v in run.items() if k not in ("samples", "compiled")}


def test_stream_stays_flat_and_compiles_nothing_after_warm_up(model, monkeypatch):
    """The device reading (the bytes of live jax arrays on the CPU) and the session's size are exact: any jax
    array kept per frame breaks them. RSS swings by about 1% here; its 5% bound (about 32 MiB over the 120 frames
    after warm-up) catches host leaks above 270 KiB per frame, such as keeping each 1080p uint8 frame (6 MiB).
    The free pages of the C heap go back to the OS every 100 frames (glibc; its fragmentation grew RSS by 5%
    over 10,000 frames, which a short stream cannot show)."""
    trims = []
    monkeypatch.setattr(runtime, "release_free_host_memory", lambda: trims.append(1))
    monkeypatch.setattr(runtime, "heap_trimmer", runtime.HeapTrimmer(every=100))
    run = soak.stream(model, STREAMED, objects=1, warm_up=WARM_UP)
    assert all(soak.stream_checks(run).values()), summary(run)
    assert run["session_growth"] == 0 and run["compilations_after_warm_up"] == 0, summary(run)
    assert trims == [1], trims  # once, at frame 100 of 150


def test_the_checks_catch_a_stream_that_keeps_its_frames(model):
    """A frame cache sized past the stream keeps every frame and its features: the device reading grows."""
    run = soak.stream(model, 60, objects=1, warm_up=20, max_vision_features_cache_size=10**6)
    assert not soak.stream_checks(run)["device_flat"], summary(run)


def test_reruns_are_bit_identical(model):
    run = soak.rerun(model, 20, objects=1)
    assert run["identical"], run


def test_offline_host_memory_is_the_video_plus_a_constant(model):
    """150 frames of 512x512 (112.5 MiB of uint8), without the host archive of memories (the default keeps one,
    which grows with the video: `python -m benchmarks.soak` reports it). RSS moves in steps of up to ~7 MiB as the
    allocator settles, so the bound allows 15% of the video (17 MiB) after its first tenth: a leak of 130 KiB per
    frame breaks it (a 128 px model input is 192 KiB, a kept uint8 frame 768 KiB)."""
    run = soak.offline(model, 150, 512, keep_memory_archive=False)
    assert all(soak.offline_checks(run, tolerance=0.15).values()), summary(run)
