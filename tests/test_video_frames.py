"""`Sam2VideoVideoProcessor` and the `Sam2VideoProcessor` constructor against transformers'."""

import numpy as np
import pytest
import torch
import transformers
from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor as HFVideoProcessor

from sam2_jax import Sam2VideoProcessor, Sam2VideoVideoProcessor

SIZE = 64


def _video(frames=3, height=40, width=50, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def test_call_matches_transformers():
    video = _video()
    ours = Sam2VideoVideoProcessor(size={"height": SIZE, "width": SIZE})(videos=video)
    theirs = HFVideoProcessor(size={"height": SIZE, "width": SIZE})(videos=[video], return_tensors="pt")
    assert set(ours) == set(theirs)
    for key in ("original_sizes", "reshaped_input_sizes"):
        np.testing.assert_array_equal(np.asarray(ours[key]), theirs[key].numpy())
    diff = np.abs(np.asarray(ours["pixel_values_videos"]) - theirs["pixel_values_videos"].numpy()).max()
    assert ours["pixel_values_videos"].shape == (1, 3, 3, SIZE, SIZE) and diff < 0.05, diff


@pytest.mark.parametrize("binarize, pad_size, reshaped", [(True, None, (SIZE, SIZE)), (False, None, (48, 56)),
                                                          (False, {"height": 80, "width": 80}, (80, 72))])
def test_post_process_masks_matches_transformers(binarize, pad_size, reshaped):
    masks = [np.random.default_rng(1).normal(size=(2, 1, 16, 16)).astype(np.float32)]
    kwargs = dict(original_sizes=[[40, 50]], reshaped_input_sizes=[list(reshaped)], mask_threshold=0.1,
                  binarize=binarize, pad_size=pad_size)
    ours = Sam2VideoVideoProcessor(size=SIZE).post_process_masks(masks, **kwargs)
    theirs = HFVideoProcessor(size={"height": SIZE, "width": SIZE}).post_process_masks(
        [torch.from_numpy(m) for m in masks], **kwargs)
    assert ours[0].shape == tuple(theirs[0].shape) == (2, 1, 40, 50)
    if binarize:
        assert np.mean(np.asarray(ours[0]) != theirs[0].numpy()) < 1e-3
    else:
        np.testing.assert_allclose(np.asarray(ours[0]), theirs[0].numpy(), atol=1e-4)


def test_post_process_masks_bad_input():
    proc = Sam2VideoVideoProcessor(size=SIZE)
    masks = [np.zeros((1, 1, 16, 16), np.float32)]
    with pytest.raises(ValueError, match="original_sizes: expected one positive"):
        proc.post_process_masks(masks, [[40, 50], [1, 1]], [[SIZE, SIZE]])
    with pytest.raises(ValueError, match="reshaped_input_sizes: expected sizes within pad_size"):
        proc.post_process_masks(masks, [[40, 50]], [[SIZE + 1, SIZE]])
    with pytest.raises(ValueError, match=r"masks\[0\]: expected logits"):
        proc.post_process_masks([np.zeros((16, 16))], [[40, 50]], [[SIZE, SIZE]])
    with pytest.raises(ValueError, match="size: expected a square"):
        Sam2VideoVideoProcessor(size={"height": 64, "width": 32})


def test_processor_from_its_parts():
    video_processor = Sam2VideoVideoProcessor(size={"height": SIZE, "width": SIZE})
    processor = Sam2VideoProcessor(image_processor=video_processor, video_processor=video_processor,
                                   target_size=SIZE, point_pad_value=-10)
    assert processor.size == SIZE and processor.video_processor is video_processor
    assert processor.image_processor is video_processor
    assert processor(videos=_video())["pixel_values_videos"].shape == (1, 3, 3, SIZE, SIZE)
    assert Sam2VideoProcessor().video_processor.size == {"height": 1024, "width": 1024}
    hf = transformers.Sam2VideoProcessor(image_processor=transformers.Sam2ImageProcessor(size={"height": SIZE, "width": SIZE}),
                                         video_processor=HFVideoProcessor(size={"height": SIZE, "width": SIZE}))
    assert Sam2VideoProcessor(hf.image_processor, hf.video_processor).size == SIZE
    with pytest.raises(ValueError, match="expected one input size"):
        Sam2VideoProcessor(video_processor=video_processor, size=128)
