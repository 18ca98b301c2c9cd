"""Training and evaluation batches: clips from generated data or annotated folders, objects packed into a
fixed number of slots, and the prompts the trainer simulates.

A batch holds B clips of T frames and N object slots; every object tracks in its own clip's frames, so the
objects of all clips form one batch axis. Slots without an object are padding (`valid` False). Prompts
follow the original SAM 2 trainer: on frame 0 and possibly one more frame, a click drawn uniformly inside
the object, a box around it with noise, or the mask itself; clicks and boxes get correction clicks on their
prompted frames and possibly on one later frame (sampled inside the model, see `forward`). Evaluation
prompts are deterministic: the click farthest from the boundary, the exact box, the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from ..io.clips import generate_clip
from ..io.datasets import DavisDataset, SavDataset
from ..models.layers import antialias_bilinear_matrix
from ..processing import preprocess_images

PROMPT_KINDS = ("click", "box", "mask")
HELD_OUT_SEED = 2 ** 32  # held-out clips use seeds HELD_OUT_SEED + i; the training stream draws 32-bit seeds


class Batch(NamedTuple):
    """B clips, T frames, N object slots, S the model's input size.

    pixels: (B, T, S, S, 3) float32, normalised as the processor does.
    masks: (T, N, S, S) bool ground truth.
    clip_index: (N,) int32, the clip of each object.
    valid: (N,) bool, real objects (the rest is padding).
    prompt_frames: (T,) bool, the frames prompted for every object (frame 0 among them): the original
      trainer's initial conditioning frames, processed first and without memory.
    is_mask_prompt: (T, N) bool, the mask is the prompt on that frame (else points).
    points: (T, N, 2, 2) float32 points in input pixels (x, y); labels (T, N, 2) int32; point_mask (T, N, 2)
      bool. A click is one point (label 1), a box two (labels 2, 3); mask prompts and frames without a
      prompt carry transformers' (0, 0) label -1 placeholder point.
    correct: (T, N) bool, frames that get correction clicks; their memories are conditioning memories (the
      original's `add_all_frames_to_correct_as_cond`).
    plan: the memory lookups of this schedule (`forward.with_memory_plan`), None until planned.
    """

    pixels: np.ndarray
    masks: np.ndarray
    clip_index: np.ndarray
    valid: np.ndarray
    prompt_frames: np.ndarray
    is_mask_prompt: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    point_mask: np.ndarray
    correct: np.ndarray
    plan: dict | None = None


@dataclass(frozen=True)
class PromptMix:
    """How the trainer prompts (the original trainer's MOSE settings by default): the kind of prompt per
    object, and the frames prompted: frame 0 and up to `prompt_frames` - 1 random others, the count drawn
    uniformly per batch."""

    click: float = 0.25
    box: float = 0.25
    mask: float = 0.5
    box_noise: float = 0.1  # box corners move by N(0, box_noise * side), at most max_box_noise pixels
    max_box_noise: float = 20.0
    later_correction: float = 0.5  # chance that a clicked object prompted on one frame is also corrected on another
    prompt_frames: int = 2

    def __post_init__(self):
        probs = (self.click, self.box, self.mask)
        if min(probs) < 0 or not np.isclose(sum(probs), 1.0):
            raise ValueError(f"prompt mix: expected click, box, mask probabilities >= 0 summing to 1, got {probs}")
        if not 0 <= self.later_correction <= 1:
            raise ValueError(f"later corrections: expected a probability in [0, 1], got {self.later_correction}")
        if self.prompt_frames not in (1, 2):
            raise ValueError(f"prompt frames: expected 1 or 2 (at most two conditioning memories per object), "
                             f"got {self.prompt_frames}")


# ------------------------------------------------------------------------------------------- clip sources
def generated_clips(seed: int, step: int, count: int, num_frames: int, size: int,
                    max_objects: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` generated clips for training step `step`: [(frames (T,S,S,3) uint8, masks (T,n,S,S) bool)].
    The clip seeds are drawn from (seed, step), so a resumed run sees the same clips."""
    seeds = np.random.SeedSequence([seed, step]).generate_state(count)
    return [_clip_arrays(generate_clip(int(s), num_frames, size, size, max_objects)) for s in seeds]


def held_out_clips(count: int, num_frames: int, size: int, max_objects: int = 3, start: int = 0):
    """Generated clips never drawn in training: seeds HELD_OUT_SEED + start + i."""
    return [_clip_arrays(generate_clip(HELD_OUT_SEED + start + i, num_frames, size, size, max_objects))
            for i in range(count)]


def _clip_arrays(clip) -> tuple[np.ndarray, np.ndarray]:
    return clip.frames, clip.masks


class FolderClips:
    """Random windows of T consecutive annotated frames from a DAVIS- or SA-V-layout folder, resized to
    S x S. The objects of a window are those visible on its first frame."""

    def __init__(self, root, format: str, num_frames: int, size: int):
        readers = {"davis": DavisDataset, "sav": SavDataset}
        if format not in readers:
            raise ValueError(f"format: expected one of {sorted(readers)}, got {format!r}")
        self.sequences = [s for s in readers[format](root) if s.frames is not None and len(s.masks) >= num_frames]
        if not self.sequences:
            raise ValueError(f"data: no sequence of {str(root)!r} has frames and {num_frames} annotated frames")
        self.num_frames, self.size = num_frames, size

    def sample(self, rng: np.random.Generator, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """`count` random clips as (frames (T, H, W, 3) uint8, masks (T, N, H, W) bool)."""
        clips = []
        while len(clips) < count:
            seq = self.sequences[rng.integers(len(self.sequences))]
            annotated = list(seq.masks)
            start = rng.integers(len(annotated) - self.num_frames + 1)
            window = annotated[start:start + self.num_frames]
            masks = np.stack([_resize_masks(seq.masks[f], self.size) for f in window])
            visible = masks[0].any(axis=(1, 2))
            if visible.any():
                frames = np.stack([seq.frames[f] for f in window])
                clips.append((frames, masks[:, visible]))
        return clips


def _resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """(n, H, W) bool -> (n, S, S) bool: antialiased bilinear, then >= 0.5 (as the video processor)."""
    if masks.shape[1:] == (size, size):
        return masks
    rows, cols = antialias_bilinear_matrix(masks.shape[1], size), antialias_bilinear_matrix(masks.shape[2], size)
    return (rows @ masks.astype(np.float32) @ cols.T) >= 0.5


# --------------------------------------------------------------------------------------------- batching
def make_batch(clips, num_slots: int, kinds: np.ndarray | str, rng: np.random.Generator | None = None,
               mix: PromptMix = PromptMix(), prompt_frames=(0,)) -> Batch:
    """Pack the objects of `clips` [(frames (T,H,W,3) uint8, masks (T,n,S,S) bool)] into `num_slots` slots
    (objects past the last slot are left out) and prompt them.

    kinds: one of PROMPT_KINDS for every object, prompted on the frames `prompt_frames` (deterministic
    evaluation prompts), or "random" to draw training prompts, prompted frames and corrected frames with
    `rng` and `mix`. An object out of sight on a prompted frame is prompted with its empty mask there.
    """
    size = clips[0][1].shape[-1]
    num_frames = clips[0][1].shape[0]
    pixels = np.stack([preprocess_images(frames, size=size)[0].transpose(0, 2, 3, 1) for frames, _ in clips])
    masks = np.zeros((num_frames, num_slots, size, size), bool)
    clip_index = np.zeros(num_slots, np.int32)
    valid = np.zeros(num_slots, bool)
    n = 0
    for b, (_, clip_masks) in enumerate(clips):
        take = min(clip_masks.shape[1], num_slots - n)
        masks[:, n:n + take] = clip_masks[:, :take]
        clip_index[n:n + take], valid[n:n + take] = b, True
        n += take
    if kinds == "random":
        drawn = rng.choice(len(PROMPT_KINDS), num_slots, p=[mix.click, mix.box, mix.mask])
        kind_names = [PROMPT_KINDS[k] for k in drawn]
        most = min(mix.prompt_frames, num_frames)
        count = rng.integers(1, most + 1) if most > 1 else 1  # (no draw when it cannot vary)
        prompt_frames = [0]
        if count > 1:
            prompt_frames += sorted(rng.choice(np.arange(1, num_frames), count - 1, replace=False).tolist())
    else:
        kind_names = [kinds] * num_slots
    prompted = np.zeros(num_frames, bool)
    prompted[list(prompt_frames)] = True
    if not prompted[0]:
        raise ValueError(f"prompt_frames: expected frame 0 among the prompted frames, got {list(prompt_frames)}")
    kind_names = [k if v else "mask" for k, v in zip(kind_names, valid)]  # padding: an empty mask prompt
    points = np.zeros((num_frames, num_slots, 2, 2), np.float32)
    labels = np.full((num_frames, num_slots, 2), -1, np.int32)
    point_mask = np.zeros((num_frames, num_slots, 2), bool)
    point_mask[..., 0] = True  # transformers' placeholder point (label -1) where there are no points
    is_mask_prompt = np.zeros((num_frames, num_slots), bool)
    correct = np.zeros((num_frames, num_slots), bool)
    for i, kind in enumerate(kind_names):
        for t in np.flatnonzero(prompted):
            mask = masks[t, i]
            if kind == "mask" or not mask.any():
                is_mask_prompt[t, i] = True
                continue
            if kind == "click":
                points[t, i, 0] = _random_click(mask, rng) if rng is not None else centre_click(mask)
                labels[t, i, 0] = 1
            else:
                points[t, i] = _noisy_box(mask, rng, mix) if rng is not None else box_of(mask).reshape(2, 2)
                labels[t, i], point_mask[t, i] = (2, 3), True
            correct[t, i] = rng is not None
        if (kind != "mask" and rng is not None and prompted.sum() == 1 and num_frames > 1
                and rng.random() < mix.later_correction):
            correct[rng.integers(1, num_frames), i] = True
    return Batch(pixels, masks, clip_index, valid, prompted, is_mask_prompt, points, labels, point_mask, correct)


def centre_click(mask: np.ndarray) -> np.ndarray:
    """(x, y) of the object pixel farthest from the background (the first such pixel in row order)."""
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(np.argmax(distance), mask.shape)
    return np.array([x, y], np.float32)


def box_of(mask: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) pixel bounds of a non-empty mask (H, W)."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


def _random_click(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    k = rng.integers(len(xs))
    return np.array([xs[k], ys[k]], np.float32)


def _noisy_box(mask: np.ndarray, rng: np.random.Generator, mix: PromptMix) -> np.ndarray:
    """(2, 2) box corners with Gaussian noise proportional to the box's sides, inside the frame."""
    box = box_of(mask)
    sides = np.array([box[2] - box[0], box[3] - box[1]] * 2, np.float32)
    noise = np.clip(rng.normal(size=4) * mix.box_noise * sides, -mix.max_box_noise, mix.max_box_noise)
    box = np.clip(box + noise, 0, mask.shape[0] - 1)
    x0, x1 = sorted(box[0::2])
    y0, y1 = sorted(box[1::2])
    return np.array([[x0, y0], [x1, y1]], np.float32)
