"""One `Sam2VideoModel` driving two sessions from two threads at once gives the masks it gives run one after
the other, bitwise (the web annotator serves several users with one model). The threads start together
(a barrier), on a model that has compiled nothing yet, so they also race on the first compilation of
every jitted step; both sessions have two objects, so they race on the same programs."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from sam2_jax.config import replace, small_config
from sam2_jax.io.clips import generate_clip
from sam2_jax import Sam2VideoModel, Sam2VideoProcessor

SIZE, FRAMES = 128, 11  # more than one scan of 8 tracked frames, then the frame-by-frame tail


def tiny_config(image_size: int = SIZE):
    """`small_config` with one Hiera block per stage and one memory-attention layer: the same programs, about
    two thirds of the compilation time (test_kill.py uses it too)."""
    config = small_config(image_size=image_size)
    backbone = dataclasses.replace(config.vision_config.backbone_config, blocks_per_stage=(1, 1, 1, 1),
                                   global_attention_blocks=(2,))
    return replace(config, vision_config=dataclasses.replace(config.vision_config, backbone_config=backbone),
                   memory_attention_num_layers=1)


def _jobs():
    """Two different videos with different prompts: (frames, add_inputs keyword arguments) each. Both have two
    objects of two clicks each, so that both threads need the same programs."""
    first = generate_clip(1, FRAMES, 96, 128, max_objects=2, min_objects=2)
    second = generate_clip(2, FRAMES, 80, 112, max_objects=2, min_objects=2)
    return [
        (first.frames, dict(frame_idx=0, obj_ids=[1, 2], input_points=[[[[30, 40], [5, 5]], [[90, 60], [100, 70]]]],
                            input_labels=[[[1, 0], [1, 1]]])),
        (second.frames, dict(frame_idx=0, obj_ids=[3, 7], input_points=[[[[20, 20], [60, 50]], [[80, 30], [10, 70]]]],
                             input_labels=[[[1, 0], [1, 1]]])),
    ]


def _track(model, processor, frames, prompts, barrier=None) -> dict[int, np.ndarray]:
    """{frame_idx: low-res mask logits (N, 1, h, w)} of one session: prompts on frame 0, then propagation."""
    session = processor.init_video_session(video=frames)
    processor.add_inputs_to_inference_session(session, **prompts)
    if barrier is not None:
        barrier.wait()
    outputs = {0: np.asarray(model(inference_session=session, frame_idx=0).pred_masks)}
    for out in model.propagate_in_video_iterator(session, start_frame_idx=0):
        outputs[out.frame_idx] = np.asarray(out.pred_masks)
    return outputs


def test_two_sessions_in_two_threads_equal_one_after_the_other():
    config = tiny_config()
    jobs = _jobs()
    processor = Sam2VideoProcessor(size=SIZE)

    model = Sam2VideoModel.from_config(config, seed=5)  # fresh: nothing compiled yet
    barrier = threading.Barrier(len(jobs), timeout=120)
    results, errors = [None] * len(jobs), []

    def work(i):
        try:
            results[i] = _track(model, processor, *jobs[i], barrier)
        except BaseException as err:  # noqa: BLE001 (reported below, with the thread's job)
            errors.append((i, err))
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)

    for (frames, prompts), concurrent in zip(jobs, results):  # one after the other
        alone = _track(model, processor, frames, prompts)
        assert sorted(alone) == sorted(concurrent) == list(range(FRAMES))
        for t in alone:
            np.testing.assert_array_equal(concurrent[t], alone[t], err_msg=f"frame {t}")
    for concurrent in results:  # the masks are the model's own: neither empty nor everything everywhere
        masks = np.stack(list(concurrent.values())) > 0
        assert 0 < masks.mean() < 1
