"""`sam2-jax info`, `segment`, `track`, `batch` and `app` on an EdgeTAM checkpoint folder, and `train`'s refusal of
one: a small random transformers `EdgeTamVideoModel` (128 px) written by `save_pretrained`; segment's masks are
the ones sam2-jax's `EdgeTamModel` and `Sam2Processor` (or the automatic generator) give when called directly,
track's and the app's are the video session's, and batch's (the functional path) are track's."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from sam2_jax import EdgeTamModel, Sam2AutomaticMaskGenerator, Sam2Processor, Sam2VideoModel, Sam2VideoProcessor
from sam2_jax.commands.demo import interior_point
from sam2_jax.commands.main import main
from sam2_jax.config import EdgeTamVideoConfig, replace
from sam2_jax.io.clips import generate_clip
from reference import randomize_
from test_cli import read_sav
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
    """The checkpoint, every parameter random; the mask heads' last layers x300 and the object score's bias +1,
    so that objects are present and their masks cover part of the frame (at the random scale the objects were
    absent on every frame, or their masks everything)."""
    config = small_edgetam_video_config()
    torch.manual_seed(0)
    hf = transformers.EdgeTamVideoModel(transformers.EdgeTamVideoConfig.from_dict(config.to_dict())).eval()
    hf = randomize_backbone_(randomize_(hf, seed=5), seed=5)
    with torch.no_grad():
        for mlp in hf.mask_decoder.output_hypernetworks_mlps:
            mlp.proj_out.weight.mul_(300)
        hf.mask_decoder.pred_obj_score_head.proj_out.bias.add_(1.0)
    path = tmp_path_factory.mktemp("edgetam") / "checkpoint"
    hf.save_pretrained(path)
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



def test_segment_auto_writes_the_generators_masks(folder, tmp_path, capsys):
    """`sam2-jax segment --auto --model DIR` on EdgeTAM: one PNG per mask, the automatic generator's masks on
    `EdgeTamModel.from_pretrained(DIR)`, in its order."""
    image = tmp_path / "img.png"
    Image.fromarray(CLIP.frames[0]).save(image)
    settings = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    flags = [arg for name, value in settings.items() for arg in (f"--{name.replace('_', '-')}", str(value))]
    assert main(["segment", str(image), "--model", str(folder), "--auto", *flags, "--out", str(tmp_path / "out")]) == 0
    expected = Sam2AutomaticMaskGenerator(EdgeTamModel.from_pretrained(folder), **settings).generate(CLIP.frames[0])
    assert f"segmented {len(expected)} mask(s)" in capsys.readouterr().out and len(expected) >= 2
    for i, record in enumerate(expected):
        written = np.asarray(Image.open(tmp_path / "out" / "png" / "img" / f"{i}.png")) == 255
        np.testing.assert_array_equal(written, record["segmentation"])
    assert not (tmp_path / "out" / "png" / "img" / f"{len(expected)}.png").exists()

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



@pytest.mark.parametrize("option", ["--config", "--init"])
def test_train_refuses_edgetam_in_one_line(folder, option, tmp_path, capsys):
    """Training is SAM 2 only: an EdgeTAM folder as the config or the starting weights is a clear error."""
    assert main(["train", option, str(folder), "--steps", "1", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(training is SAM 2 only), got EdgeTAM's" in err
    assert not (tmp_path / "out").exists()

def _frames_folder(path, clip):
    path.mkdir()
    for t, frame in enumerate(clip.frames):
        Image.fromarray(frame).save(path / f"{t:05d}.png")
    return path


def test_batch_masks_equal_track(folder, tmp_path):
    """`sam2-jax batch --model DIR` on EdgeTAM (`functional.propagate`, sharded over this machine's devices) writes
    the masks `sam2-jax track` (the session) writes for the same prompts: a click and a box. The two paths agree
    to ~1e-7 in the logits, so the labels may differ only at pixels that close to the threshold."""
    clip = generate_clip(3, 4, 96, 128, max_objects=2, min_objects=2)
    _frames_folder(tmp_path / "clip", clip)
    ys, xs = np.nonzero(clip.masks[0, 1])
    prompts = [{"obj_id": 1, "points": [list(interior_point(clip.masks[0, 0]))], "labels": [1]},
               {"frame": 0, "obj_id": 2, "box": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]}]
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"video": "clip", "prompts": prompts}) + "\n")
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    assert main(["batch", str(tmp_path / "manifest.jsonl"), "--model", str(folder), "--out", str(tmp_path / "batch"),
                 "--format", "sav", "--compile-cache", "off"]) == 0
    assert main(["track", str(tmp_path / "clip"), "--model", str(folder), "--prompts", str(tmp_path / "prompts.json"),
                 "--out", str(tmp_path / "track"), "--format", "sav", "--compile-cache", "off"]) == 0
    summary = json.loads((tmp_path / "batch" / "batch_summary.json").read_text())
    assert [(v["status"], v["frames"]) for v in summary["videos"]] == [("done", 4)]
    batch, track = read_sav(tmp_path / "batch" / "sav" / "clip"), read_sav(tmp_path / "track" / "sav" / "clip")
    assert sorted(batch) == sorted(track) == [1, 2]
    for obj_id in (1, 2):
        assert (batch[obj_id] != track[obj_id]).mean() <= 5e-4, f"object {obj_id}"
        assert 0 < batch[obj_id].mean() < 1, f"object {obj_id}"  # the model's masks, neither empty nor everything


def _call(url: str, method: str = "GET", body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as reply:
        return json.loads(reply.read())


def _decode(counts: list[int], height: int, width: int) -> np.ndarray:
    """The server's uncompressed column-major RLE counts -> bool (H, W)."""
    return np.repeat(np.arange(len(counts)) % 2 == 1, counts).reshape(width, height).T


def test_app_api_gives_the_edgetam_sessions_masks(folder, tmp_path):
    """The app's server (`sam2-jax app --model DIR`: the model warmed up, then served) on EdgeTAM, through its JSON
    API: a click, then a forward propagation; every frame's masks are the library's for the same calls (the app's
    session corrects with `add_all_frames_to_correct_as_cond`, as here). The browser tests (test_app) run the
    page on SAM 2."""
    uvicorn = pytest.importorskip("uvicorn", reason="the app extra is not installed: pip install 'sam2-jax[app]'")
    pytest.importorskip("fastapi", reason="the app extra is not installed: pip install 'sam2-jax[app]'")
    from sam2_jax.app import server

    clip = generate_clip(4, 4, 96, 128, max_objects=1, min_objects=1)
    _frames_folder(tmp_path / "clip", clip)
    model, processor = Sam2VideoModel.from_pretrained(folder), Sam2VideoProcessor.from_pretrained(folder)
    model.warm_up(max_objects=1, background=False)
    app = server.create_app(model, processor, root=tmp_path, model_name=str(folder))
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{uv.servers[0].sockets[0].getsockname()[1]}"
    try:
        assert _call(f"{url}/api/videos")["videos"] == ["clip"]
        sid = _call(f"{url}/api/sessions", "POST", {"name": "clip"})["session"]
        obj_id = _call(f"{url}/api/sessions/{sid}/objects", "POST")["obj_id"]
        x, y = interior_point(clip.masks[0, 0])
        clicked = _call(f"{url}/api/sessions/{sid}/prompts", "POST", {"frame": 0, "obj_id": obj_id, "point": [x, y]})
        _call(f"{url}/api/sessions/{sid}/propagate", "POST", {"direction": "forward"})
        while (progress := _call(f"{url}/api/sessions/{sid}/progress"))["running"]:
            time.sleep(0.1)
        assert progress["error"] is None and progress["done"] == 4
        served = [_call(f"{url}/api/sessions/{sid}/frames/{t}/masks")["masks"] for t in range(4)]
    finally:
        uv.should_exit = True
        thread.join(10)

    session = processor.init_video_session(video=clip.frames, add_all_frames_to_correct_as_cond=True)
    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=obj_id, input_points=[[[[x, y]]]],
                                              input_labels=[[[1]]])
    outputs = [model(inference_session=session, frame_idx=0)]
    outputs += list(model.propagate_in_video_iterator(session, start_frame_idx=0))
    expected = [np.asarray(processor.post_process_masks([o.pred_masks], [(96, 128)])[0][0, 0]) for o in outputs]
    assert [m["obj_id"] for m in clicked["masks"]] == [obj_id]
    np.testing.assert_array_equal(_decode(clicked["masks"][0]["counts"], 96, 128), expected[0])
    for t, masks in enumerate(served):
        assert [m["obj_id"] for m in masks] == [obj_id]
        np.testing.assert_array_equal(_decode(masks[0]["counts"], 96, 128), expected[t + 1], err_msg=f"frame {t}")
    assert any(m.any() for m in expected)
