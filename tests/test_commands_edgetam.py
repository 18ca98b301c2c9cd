"""`sam2-jax info`, `segment` and `track` on an EdgeTAM checkpoint folder: a small random transformers
`EdgeTamVideoModel` (128 px) written by `save_pretrained`; segment's mask is the one sam2-jax's `EdgeTamModel` and
`Sam2Processor` give when called directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from sam2_jax import EdgeTamModel, Sam2Processor, Sam2VideoModel, Sam2VideoProcessor
from sam2_jax.commands.demo import interior_point
from sam2_jax.commands.main import main
from sam2_jax.config import EdgeTamVideoConfig, replace
from sam2_jax.io.clips import generate_clip
from reference import randomize_
from test_edgetam_image import randomize_backbone_

pytest.importorskip("timm")

SIZE = 128
CLIP = generate_clip(1, 1, 96, 128, max_objects=2, min_objects=2)


def small_edgetam_video_config(size: int = SIZE) -> EdgeTamVideoConfig:
    """EdgeTAM's video config at `size` px (a multiple of 64): the feature sizes, RoPE grids and 2-D latents
    (a 4x4 grid) scaled to it."""
    s = size // 4
    vision = replace(EdgeTamVideoConfig().vision_config,
                     backbone_feature_sizes=((s, s), (s // 2, s // 2), (s // 4, s // 4)))
    return EdgeTamVideoConfig(vision_config=vision, prompt_encoder_config={"image_size": size}, image_size=size,
                              memory_attention_rope_feat_sizes=(s // 4, s // 4), memory_attention_rope_k_sizes=(4, 4),
                              perceiver_resampler_num_latents_2d=16)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    config = small_edgetam_video_config()
    torch.manual_seed(0)
    hf = transformers.EdgeTamVideoModel(transformers.EdgeTamVideoConfig.from_dict(config.to_dict())).eval()
    path = tmp_path_factory.mktemp("edgetam") / "checkpoint"
    randomize_backbone_(randomize_(hf, seed=5), seed=5).save_pretrained(path)
    return path


def test_info_names_the_repvit_backbone(folder, capsys):
    assert main(["info", "--model", str(folder)]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line == (f"model: {folder}: model_type edgetam_video, EdgeTAM, image size {SIZE}, RepViT repvit_m1 dims "
                    "[48, 96, 192, 384], blocks [2, 2, 14, 2]")


@pytest.mark.parametrize("prompt", ["--point", "--box"])
def test_segment_gives_the_edgetam_image_models_mask(folder, prompt, tmp_path, capsys):
    frame = CLIP.frames[0]
    image = tmp_path / "img.png"
    Image.fromarray(frame).save(image)
    x, y = interior_point(CLIP.masks[0, 0])
    ys, xs = np.nonzero(CLIP.masks[0, 0])
    box = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    value = f"{x},{y}" if prompt == "--point" else ",".join(map(str, box))
    assert main(["segment", str(image), "--model", str(folder), prompt, value, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"model: {folder}: EdgeTAM, image size {SIZE} " in out and "segmented 1 mask(s)" in out

    model, processor = EdgeTamModel.from_pretrained(folder), Sam2Processor.from_pretrained(folder)
    inputs = processor(images=frame, **({"input_points": [[[[x, y]]]], "input_labels": [[[1]]]} if prompt == "--point"
                                        else {"input_boxes": [[box]]}))
    outputs = model(**inputs, multimask_output=prompt == "--point")
    masks = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])[0][0]
    best = int(np.argmax(outputs.iou_scores[0, 0]))
    written = np.asarray(Image.open(tmp_path / "out" / "png" / "img" / "0.png")) == 255
    np.testing.assert_array_equal(written, masks[best])


def test_track_writes_the_edgetam_sessions_masks(folder, tmp_path, capsys):
    """`sam2-jax track --model DIR` on EdgeTAM, from a mask prompt: the masks it writes are the video session's,
    binarised (the prompted frame's is the prompt itself, so the comparison is not of empty masks only)."""
    clip = generate_clip(2, 4, 96, 128, max_objects=1, min_objects=1)
    (tmp_path / "frames").mkdir()
    for t, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(tmp_path / "frames" / f"{t:05d}.png")
    Image.fromarray(clip.masks[0, 0].astype(np.uint8) * 255).save(tmp_path / "mask.png")
    assert main(["track", str(tmp_path / "frames"), "--model", str(folder), "--obj", "1", "--mask",
                 str(tmp_path / "mask.png"), "--out", str(tmp_path / "out"), "--format", "sav",
                 "--compile-cache", "off"]) == 0
    assert "tracked 4 frames" in capsys.readouterr().out
    (obj_folder,) = (tmp_path / "out" / "sav" / "frames").iterdir()  # one folder per object: 001
    written = np.stack([np.asarray(Image.open(png)) == 1 for png in sorted(obj_folder.glob("*.png"))])

    model, processor = Sam2VideoModel.from_pretrained(folder), Sam2VideoProcessor.from_pretrained(folder)
    assert model.config.model_type == "edgetam_video"
    session = processor.init_video_session(video=clip.frames)
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_masks=[clip.masks[0, 0]])
    expected = [np.asarray(processor.post_process_masks([out.pred_masks], [(96, 128)])[0]).reshape(96, 128)
                for out in model.propagate_in_video_iterator(session, start_frame_idx=0)]
    np.testing.assert_array_equal(written, np.stack(expected))
    assert written[0].any()
