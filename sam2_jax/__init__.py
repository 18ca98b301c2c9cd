"""sam2-jax: SAM 2 / SAM 2.1 segmentation and tracking in JAX and Flax, numerically equal to transformers."""

from .config import PRESETS, Sam2Config, small_config

__version__ = "0.1.0"

_API = ("Sam2Model", "Sam2Processor", "Sam2ImageSegmentationOutput")
_VIDEO_API = ("Sam2VideoModel", "Sam2VideoProcessor", "Sam2VideoInferenceSession", "Sam2VideoSegmentationOutput")
_AUTOMATIC = ("Sam2AutomaticMaskGenerator",)
_AUTOMATIC_VIDEO = ("Sam2AutomaticVideoTracker",)


def __getattr__(name):
    # The model classes import jax and flax; load them on first use so `sam2_jax.config` stays light.
    if name in _API:
        from . import api

        return getattr(api, name)
    if name in _VIDEO_API:
        from . import video_api

        return getattr(video_api, name)
    if name in _AUTOMATIC:
        from . import automatic

        return getattr(automatic, name)
    if name in _AUTOMATIC_VIDEO:
        from . import automatic_video

        return getattr(automatic_video, name)
    raise AttributeError(f"module 'sam2_jax' has no attribute {name!r}")


__all__ = [*_API, *_VIDEO_API, *_AUTOMATIC, *_AUTOMATIC_VIDEO, "Sam2Config", "PRESETS", "small_config", "__version__"]
