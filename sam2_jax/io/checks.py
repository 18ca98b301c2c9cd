"""The checks of values that the frame sources and the mask writers share, for their error messages."""

from __future__ import annotations

import numbers

import numpy as np
from PIL import Image


def describe(value) -> str:
    """What `value` is, for an error message: an array's shape and dtype, an image's mode and size, else its
    type."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, Image.Image):
        return f"PIL image of mode {value.mode} and size {value.size}"
    return type(value).__name__


def checked_fps(fps) -> float | None:
    """A frame rate as a float (None stays None); a ValueError unless it is a positive number."""
    if fps is None:
        return None
    if not isinstance(fps, numbers.Real) or isinstance(fps, bool) or not fps > 0:
        raise ValueError(f"fps: expected a positive number or None, got {fps!r}")
    return float(fps)
