"""Propagation over many devices: a `Mesh` with axes ("videos", "objects"), params replicated, videos and
objects split across devices, and ragged batches grouped into shape buckets so that no video compiles its
own program.

    mesh = make_mesh()                                  # every local device on the "videos" axis
    outputs = propagate_videos(params, config, [(frames, prompts), ...], mesh)

`propagate_batch` is the jitted core: `functional.propagate` vmapped over a batch of same-shape videos,
with the batch axis on "videos" and the object axis on "objects".
Shapes: B videos, T frames, N objects (per video), as in `functional`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import functional
from .config import Sam2Config
from .functional import Prompts


def make_mesh(object_shards: int = 1, devices=None) -> Mesh:
    """A (videos, objects) mesh over `devices` (default: all of them): `object_shards` devices share each
    video's objects, the rest split the videos."""
    devices = list(jax.devices() if devices is None else devices)
    if object_shards < 1 or len(devices) % object_shards:
        raise ValueError(f"object_shards: expected a divisor of the {len(devices)} devices, got {object_shards}")
    grid = np.asarray(devices, dtype=object).reshape(len(devices) // object_shards, object_shards)
    return Mesh(grid, ("videos", "objects"))


def replicate(tree, mesh: Mesh):
    """Params (or any pytree) copied to every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def batch_specs(has_boxes: bool, has_masks: bool):
    """PartitionSpecs of the inputs (frames (B,T,H,W,3), prompts (B,N,...), num_frames (B,)) and of the
    outputs of `propagate_batch`: videos on "videos", objects on "objects"."""
    per_object = PartitionSpec("videos", "objects")
    prompts = Prompts(per_object, per_object, per_object, *((per_object,) * 2 if has_boxes else (None, None)),
                      *((per_object,) * 2 if has_masks else (None, None)))
    outputs = {key: PartitionSpec("videos", None, "objects")
               for key in ("pred_masks", "object_score_logits", "iou_scores")}
    outputs["visited"] = PartitionSpec("videos")
    return (PartitionSpec("videos"), prompts, PartitionSpec("videos")), outputs


def propagate_batch(params, config: Sam2Config, frames, prompts: Prompts, num_frames, mesh: Mesh, *,
                    reverse: bool = False, both_directions: bool = False) -> dict:
    """`functional.propagate` on B videos of one shape at once, split over the mesh.

    frames (B, T, H, W, 3) uint8; prompts with a leading B axis; num_frames (B,) the real lengths. B must be
    a multiple of the "videos" axis and N of the "objects" axis (`propagate_videos` pads for you).
    Returns the outputs of `functional.propagate` with a leading B axis, sharded like the inputs.
    """
    b, n = np.shape(prompts.frame_idx)[:2]
    if b % mesh.shape["videos"] or n % mesh.shape["objects"]:
        raise ValueError(f"prompts: expected the videos ({b}) and objects ({n}) to be multiples of the mesh's "
                         f"axes {dict(mesh.shape)}")
    for i in range(b):
        functional.check_prompts(jax.tree_util.tree_map(lambda x: x[i], prompts), frames.shape[1:],
                                 np.asarray(num_frames)[i])
    run = _compiled(config, mesh, bool(reverse), bool(both_directions), prompts.boxes is not None,
                    prompts.masks is not None)
    specs, _ = batch_specs(prompts.boxes is not None, prompts.masks is not None)
    inputs = jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, spec), specs,
                                    is_leaf=lambda x: isinstance(x, PartitionSpec))
    frames, prompts, num_frames = jax.device_put((frames, prompts, np.asarray(num_frames, np.int32)), inputs)
    return run(replicate(params, mesh), frames, prompts, num_frames)


@functools.lru_cache(maxsize=None)
def _compiled(config, mesh, reverse, both_directions, has_boxes, has_masks):
    """The jitted, sharded program: each device runs `functional._propagate` vmapped over its own videos and
    objects (`shard_map`), so a video gives the numbers it gives alone on one device. (Left to the
    partitioner, XLA splits some reductions across devices; the reordered float sums then round the
    bfloat16 memories differently, about 1e-3 on tracked frames.)"""
    specs, out_specs = batch_specs(has_boxes, has_masks)

    def run(params, frames, prompts, num_frames):
        one = functools.partial(functional._propagate, params, config, reverse=reverse,
                                both_directions=both_directions, objects_axis="objects")
        return jax.vmap(one)(frames, prompts, num_frames)

    return jax.jit(jax.shard_map(run, mesh=mesh, in_specs=(PartitionSpec(), *specs), out_specs=out_specs,
                                 check_vma=False))


# ------------------------------------------------------------------------------------ shape buckets
@dataclasses.dataclass(frozen=True)
class Bucket:
    """The padded shape shared by the videos of one program: frames (T, H, W), objects N, prompts P,
    points K. T is rounded up to a multiple of `frame_step`, N to the objects axis, P and K to powers of two."""

    num_frames: int
    height: int
    width: int
    num_objects: int
    num_prompts: int
    num_points: int
    boxes: bool
    masks: bool

    @classmethod
    def of(cls, frames, prompts: Prompts, object_shards: int = 1, frame_step: int = 16) -> "Bucket":
        """The bucket of one video (frames (T, H, W, 3) and its prompts), rounded up as the class says."""
        t, h, w = frames.shape[:3]
        n, p = np.shape(prompts.frame_idx)
        k = np.shape(prompts.points)[2]
        return cls(-(-t // frame_step) * frame_step, h, w, -(-n // object_shards) * object_shards, _pow2(p),
                   _pow2(k), prompts.boxes is not None, prompts.masks is not None)


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def pad_to(bucket: Bucket, frames, prompts: Prompts) -> tuple[np.ndarray, Prompts]:
    """One video's frames and prompts padded to the bucket: black frames at the end (never visited), extra
    objects repeating the last one (computed, then dropped), unused prompt entries (-1) and padding points."""
    t, n, p = frames.shape[0], *np.shape(prompts.frame_idx)
    k = np.shape(prompts.points)[2]
    frames = np.concatenate([frames, np.zeros((bucket.num_frames - t,) + frames.shape[1:], np.uint8)])
    fills = {"frame_idx": -1, "labels": -1}

    def pad(name, x):
        if x is None:
            return None
        x = np.asarray(x)
        x = np.concatenate([x, np.repeat(x[-1:], bucket.num_objects - n, axis=0)])  # repeat the last object
        widths = [(0, 0), (0, bucket.num_prompts - p)] + [(0, 0)] * (x.ndim - 2)
        if name in ("points", "labels"):
            widths[2] = (0, bucket.num_points - k)
        return np.pad(x, widths, constant_values=fills.get(name, 0))

    padded = Prompts(*(pad(name, x) for name, x in zip(Prompts._fields, prompts)))
    if bucket.boxes and padded.boxes is None:
        padded = padded._replace(boxes=np.zeros(padded.frame_idx.shape + (4,), np.float32),
                                 has_box=np.zeros(padded.frame_idx.shape, bool))
    if bucket.masks and padded.masks is None:
        padded = padded._replace(masks=np.zeros(padded.frame_idx.shape + (bucket.height, bucket.width), bool),
                                 has_mask=np.zeros(padded.frame_idx.shape, bool))
    return frames, padded


def propagate_videos(params, config: Sam2Config, videos, mesh: Mesh, *, reverse: bool = False,
                     both_directions: bool = False, frame_step: int = 16):
    """Outputs of `functional.propagate` for each of `videos` [(frames (T,H,W,3) uint8, Prompts)], in order,
    cut back to each video's frames and objects (numpy). Videos of one bucket run `B` at a time, B the size
    of the "videos" axis; a short last batch repeats its last video. One compilation per bucket."""
    groups: dict[Bucket, list[int]] = {}
    for i, (frames, prompts) in enumerate(videos):
        functional._check_frames(frames)
        functional.check_prompts(prompts, frames.shape)
        groups.setdefault(Bucket.of(frames, prompts, mesh.shape["objects"], frame_step), []).append(i)
    results = [None] * len(videos)
    per_batch = mesh.shape["videos"]
    for bucket, members in groups.items():
        for start in range(0, len(members), per_batch):
            chunk = members[start:start + per_batch]
            chunk = chunk + chunk[-1:] * (per_batch - len(chunk))
            padded = [pad_to(bucket, *videos[i]) for i in chunk]
            frames = np.stack([f for f, _ in padded])
            prompts = jax.tree_util.tree_map(lambda *x: np.stack(x), *[q for _, q in padded])
            lengths = np.asarray([videos[i][0].shape[0] for i in chunk], np.int32)
            out = jax.device_get(propagate_batch(params, config, frames, prompts, lengths, mesh, reverse=reverse,
                                                 both_directions=both_directions))
            for j, i in enumerate(chunk[:len(members[start:start + per_batch])]):
                t, n = videos[i][0].shape[0], np.shape(videos[i][1].frame_idx)[0]
                results[i] = {key: value[j, :t, :n] if value.ndim > 2 else value[j, :t] for key, value in out.items()}
    return results
