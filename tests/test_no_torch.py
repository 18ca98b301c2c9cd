"""sam2_jax runs end to end without importing torch."""

import subprocess
import sys

SCRIPT = """
import sys
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
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""


def test_sam2_jax_never_imports_torch():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
