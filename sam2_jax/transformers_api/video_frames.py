"""transformers' `Sam2VideoVideoProcessor`: videos to pixel values, masks back to the frames' size."""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from .. import processing
from ..models.layers import bilinear_matrix
from .image import BatchFeature


def _square_size(size, name: str) -> int:
    """transformers' size ({"height": S, "width": S}, or an int S) -> S."""
    if not isinstance(size, (dict, int, np.integer)) and hasattr(size, "height"):  # transformers' SizeDict
        size = {"height": size.height, "width": size.width}
    if isinstance(size, dict):
        if size.get("height") is None or size.get("height") != size.get("width"):
            raise ValueError(f"{name}: expected a square {{'height': S, 'width': S}}, got {size!r}")
        size = size["height"]
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"{name}: expected a positive int or {{'height': S, 'width': S}}, got {size!r}")
    return int(size)


class Sam2VideoVideoProcessor:
    """transformers `Sam2VideoVideoProcessor`: resize every frame to `size` (bilinear), rescale to [0, 1],
    normalise with ImageNet's mean and std; `post_process_masks` brings mask logits back to the frames' size.
    It also serves as the `image_processor` of a `Sam2VideoProcessor` (sam2_jax has one frame processor)."""

    model_input_names = ["pixel_values"]

    def __init__(self, size=None, **unused):
        self.size = {"height": 1024, "width": 1024} if size is None else {"height": _square_size(size, "size"),
                                                                         "width": _square_size(size, "size")}

    def __call__(self, videos=None, images=None, return_tensors: str | None = "jax", **unused) -> BatchFeature:
        """videos: one video (a (T,H,W,3) uint8 array or a list of (H,W,3) frames) or a list of videos, each
        any of those -> {"pixel_values_videos": (B,T,3,S,S), "original_sizes": (B,2), "reshaped_input_sizes":
        (B,2)}. `images` (frames) -> {"pixel_values": (T,3,S,S), "original_sizes": (T,2)}, as the image
        processor does."""
        if return_tensors not in ("jax", "np", None):
            raise ValueError(f"return_tensors: expected 'jax', 'np' or None, got {return_tensors!r}")
        size = self.size["height"]
        if (videos is None) == (images is None):
            raise ValueError("videos, images: expected exactly one of them")
        if images is not None:
            pixels, sizes = processing.preprocess_images(images, size=size)
            out = {"pixel_values": pixels, "original_sizes": np.asarray(sizes, np.int64)}
        else:
            batch = self._videos(videos)
            pixels, sizes = [], []
            for i, video in enumerate(batch):
                values, frame_sizes = processing.preprocess_images(list(video), size=size)
                if len({tuple(s) for s in frame_sizes}) != 1:
                    raise ValueError(f"videos[{i}]: expected frames of one size, got sizes {sorted(set(map(tuple, frame_sizes)))}")
                pixels.append(values)
                sizes.append(frame_sizes[0])
            if len({p.shape for p in pixels}) != 1:
                raise ValueError(f"videos: expected videos of one length, got {[len(p) for p in pixels]} frames")
            out = {"original_sizes": np.asarray(sizes, np.int64),
                   "reshaped_input_sizes": np.asarray([[size, size]] * len(batch), np.int64),
                   "pixel_values_videos": np.stack(pixels)}
        if return_tensors == "jax":
            out = {k: jnp.asarray(v) for k, v in out.items()}
        return BatchFeature(out)

    @staticmethod
    def _videos(videos) -> list:
        """A video or a list of videos -> a list of videos, each a sequence of (H,W,3) frames."""
        if isinstance(videos, (np.ndarray, jax.Array)):
            if videos.ndim == 4:
                return [videos]
            if videos.ndim == 5:
                return list(videos)
            raise ValueError(f"videos: expected a (T,H,W,3) video or a (B,T,H,W,3) batch, got shape {videos.shape}")
        if isinstance(videos, (list, tuple)) and videos:
            if all(np.ndim(v) == 3 for v in videos):
                return [list(videos)]
            if all(np.ndim(v) == 4 or isinstance(v, (list, tuple)) for v in videos):
                return list(videos)
        raise ValueError(f"videos: expected a (T,H,W,3) array, a list of (H,W,3) frames or a list of videos, got "
                         f"{type(videos).__name__}")

    def post_process_masks(self, masks, original_sizes, reshaped_input_sizes, mask_threshold: float = 0.0,
                           binarize: bool = True, pad_size=None) -> list:
        """transformers' `post_process_masks`: per item of `masks` ((N,C,h,w) logits), bilinear upscaling to
        `pad_size` (default: `size`), cropping to `reshaped_input_sizes[i]`, bilinear resizing to
        `original_sizes[i]`; with `binarize`, logits > `mask_threshold`. Returns (N,C,H,W) jax arrays."""
        pad = self.size if pad_size is None else {"height": _square_size(pad_size, "pad_size"),
                                                 "width": _square_size(pad_size, "pad_size")}
        originals, reshaped = np.asarray(original_sizes), np.asarray(reshaped_input_sizes)
        if not isinstance(masks, (list, tuple, np.ndarray, jax.Array)):
            raise TypeError(f"masks: expected a list of (N, C, h, w) arrays, got {type(masks).__name__}")
        for name, sizes in (("original_sizes", originals), ("reshaped_input_sizes", reshaped)):
            if sizes.ndim != 2 or sizes.shape != (len(masks), 2) or (sizes <= 0).any():
                raise ValueError(f"{name}: expected one positive (height, width) per item of masks ({len(masks)}), "
                                 f"got {sizes.tolist()}")
        if isinstance(mask_threshold, bool) or not isinstance(mask_threshold, numbers.Real):
            raise ValueError(f"mask_threshold: expected a number, got {mask_threshold!r}")
        if (reshaped[:, 0] > pad["height"]).any() or (reshaped[:, 1] > pad["width"]).any():
            raise ValueError(f"reshaped_input_sizes: expected sizes within pad_size {pad}, got {reshaped.tolist()}")
        out = []
        for i, mask in enumerate(masks):
            x = np.asarray(mask, np.float32)
            if x.ndim != 4:
                raise ValueError(f"masks[{i}]: expected logits of shape (N, C, h, w), got {x.shape}")
            x = bilinear_matrix(x.shape[2], pad["height"]) @ x @ bilinear_matrix(
                x.shape[3], pad["width"]).T
            x = x[..., :reshaped[i, 0], :reshaped[i, 1]]
            height, width = (int(v) for v in originals[i])
            x = bilinear_matrix(x.shape[2], height) @ x @ bilinear_matrix(x.shape[3], width).T
            out.append(jnp.asarray(x > mask_threshold if binarize else x))
        return out
