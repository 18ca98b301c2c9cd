"""sam2-jax: SAM 2 / SAM 2.1 (and EdgeTAM) segmentation and tracking in JAX and Flax, numerically equal to
transformers."""

import importlib

from .config import (PRESETS, EdgeTamConfig, EdgeTamMaskDecoderConfig, EdgeTamPromptEncoderConfig, EdgeTamVideoConfig,
                     EdgeTamVideoMaskDecoderConfig, EdgeTamVideoPromptEncoderConfig, EdgeTamVisionConfig, Sam2Config,
                     Sam2HieraDetConfig, Sam2MaskDecoderConfig, Sam2PromptEncoderConfig, Sam2VideoConfig, Sam2VideoMaskDecoderConfig, Sam2VideoPromptEncoderConfig, Sam2VisionConfig,
                     small_config)

__version__ = "0.1.0"

# Each public class and the module it lives in.
_HOMES = {
    "Sam2Model": ".transformers_api.image", "Sam2Processor": ".transformers_api.image",
    "Sam2ImageSegmentationOutput": ".transformers_api.image", "EdgeTamModel": ".transformers_api.image",
    "Sam2VideoModel": ".transformers_api.video_model", "Sam2VideoSegmentationOutput": ".transformers_api.video_model",
    "EdgeTamVideoModel": ".transformers_api.video_model",
    "Sam2VideoProcessor": ".transformers_api.video_processor",
    "Sam2VideoVideoProcessor": ".transformers_api.video_frames",
    "Sam2VideoInferenceSession": ".transformers_api.video_session",
    "EdgeTamVideoInferenceSession": ".transformers_api.video_session",
    "Sam2AutomaticMaskGenerator": ".automatic.masks", "Sam2AutomaticVideoTracker": ".automatic.video",
}


def __getattr__(name):
    # The model classes import jax and flax; load them on first use so `sam2_jax.config` stays light.
    module = _HOMES.get(name)
    if module is not None:
        return getattr(importlib.import_module(module, __name__), name)
    raise AttributeError(f"module 'sam2_jax' has no attribute {name!r}")


_CONFIGS = ["Sam2Config", "Sam2HieraDetConfig", "Sam2VisionConfig", "Sam2PromptEncoderConfig", "Sam2MaskDecoderConfig",
            "Sam2VideoConfig", "Sam2VideoPromptEncoderConfig", "Sam2VideoMaskDecoderConfig", "EdgeTamConfig",
            "EdgeTamVisionConfig", "EdgeTamPromptEncoderConfig", "EdgeTamMaskDecoderConfig", "EdgeTamVideoConfig",
            "EdgeTamVideoPromptEncoderConfig", "EdgeTamVideoMaskDecoderConfig"]
__all__ = [*_HOMES, *_CONFIGS, "PRESETS", "small_config", "__version__"]
