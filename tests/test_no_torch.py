"""sam2_jax runs end to end without importing torch, and without PyAV for frames in memory."""

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["av"] = None  # PyAV unavailable: importing it fails
import numpy as np
from sam2_jax import Sam2Model, Sam2Processor
from sam2_jax.config import replace, small_config

model = Sam2Model.from_config(replace(small_config(), model_type="sam2"))
processor = Sam2Processor(size=256)
image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
inputs = processor(images=image, input_points=[[[[80, 60]]]], input_labels=[[[1]]])
out = model(**inputs)
masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])
assert masks[0].shape == (1, 3, 120, 160), masks[0].shape

from sam2_jax import Sam2VideoModel, Sam2VideoProcessor
from sam2_jax.config import small_config
video_model = Sam2VideoModel.from_config(small_config(image_size=128))
video_processor = Sam2VideoProcessor(size=128)
session = video_processor.init_video_session(video=np.zeros((3, 60, 80, 3), np.uint8))
video_processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=1, input_points=[[[[40, 30]]]],
                                                input_labels=[[[1]]])
frames = [out.frame_idx for out in video_model.propagate_in_video_iterator(session, start_frame_idx=0)]
assert frames == [0, 1, 2], frames
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""


def test_sam2_jax_never_imports_torch_and_tracks_frames_in_memory_without_pyav():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
