"""Propagation over many devices: a `Mesh` with axes ("videos", "objects"), params replicated, videos and
objects split across devices, and ragged batches grouped into shape buckets so that no video compiles its
own program.

    mesh = make_mesh()                                  # every local device on the "videos" axis
    outputs = propagate_videos(params, config, [(frames, prompts), ...], mesh)

`propagate_batch` is the jitted core: `functional.propagate` vmapped over a batch of same-shape videos,
with the batch axis on "videos" and the object axis on "objects".
Shapes: B videos, T frames, N objects (per video), as in `functional`.

Multi-host (`jax.distributed`): a mesh over `jax.devices()` spans every process's devices. Each process
then calls `propagate_videos` with its own videos; the processes agree on the sequence of buckets and run
each batch together, every video on its own process's devices, and each gets its own outputs back.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import functional
from ..config import Sam2VideoConfig
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


def propagate_batch(params, config: Sam2VideoConfig, frames, prompts: Prompts, num_frames, mesh: Mesh, *,
                    reverse: bool = False, both_directions: bool = False) -> dict:
    """`functional.propagate` on B videos of one shape at once, split over the mesh.

    frames (B, T, H, W, 3) uint8; prompts with a leading B axis; num_frames (B,) the real lengths. B must be
    a multiple of the "videos" axis and N of the "objects" axis (`propagate_videos` pads for you).
    Returns the outputs of `functional.propagate` with a leading B axis, sharded like the inputs.
    Multi-host: every process calls it at once with its own part of the batch (B a multiple of
    `local_batch(mesh)`) and gets back the outputs of that part.
    """
    b, n = np.shape(prompts.frame_idx)[:2]
    places = local_batch(mesh)
    if b % places or n % mesh.shape["objects"]:
        raise ValueError(f"prompts: expected the videos ({b}) and objects ({n}) to be multiples of the mesh's "
                         f"axes {dict(mesh.shape)}" + (f" ({places} videos on this process's devices)"
                                                       if mesh.is_multi_process else ""))
    for i in range(b):
        functional.check_prompts(jax.tree_util.tree_map(lambda x: x[i], prompts), frames.shape[1:],
                                 np.asarray(num_frames)[i])
    run = _compiled(config, mesh, bool(reverse), bool(both_directions), prompts.boxes is not None,
                    prompts.masks is not None)
    specs, out_specs = batch_specs(prompts.boxes is not None, prompts.masks is not None)
    local = (frames, prompts, np.asarray(num_frames, np.int32))
    inputs = jax.tree_util.tree_map(
        lambda spec, x: jax.make_array_from_process_local_data(NamedSharding(mesh, spec), x), specs, local,
        is_leaf=lambda x: isinstance(x, PartitionSpec))
    outputs = run(replicate(params, mesh), *inputs)
    if mesh.is_multi_process:  # this process's videos (its devices' shards), as device arrays
        outputs = multihost_utils.global_array_to_host_local_array(outputs, mesh, out_specs)
    return outputs


def local_batch(mesh: Mesh) -> int:
    """How many videos of each batch run on this process's devices: its rows of the "videos" axis (all of
    them on one host). A row must not span processes, so that each video is read where it runs."""
    rows = [{d.process_index for d in row} for row in mesh.devices]
    spanning = [sorted(owners) for owners in rows if len(owners) > 1]
    if spanning:
        raise ValueError(f"mesh: expected each row of the videos axis on one process's devices, got a row on "
                         f"processes {spanning[0]} (make the objects axis, {mesh.shape['objects']}, a divisor of "
                         "each process's device count)")
    return sum(owners == {jax.process_index()} for owners in rows)


def process_allgather_json(value) -> list:
    """`value` (anything JSON takes) of every process, in process order: a collective, so every process of
    the run calls it, in the same order."""
    mine = np.frombuffer(json.dumps(value).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.int32(mine.size))
    padded = np.zeros(int(np.max(sizes)), np.uint8)
    padded[:mine.size] = mine
    rows = multihost_utils.process_allgather(padded)
    return [json.loads(row[:size].tobytes()) for row, size in zip(rows, np.atleast_1d(sizes))]


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


def propagate_videos(params, config: Sam2VideoConfig, videos, mesh: Mesh, *, reverse: bool = False,
                     both_directions: bool = False, frame_step: int = 16):
    """Outputs of `functional.propagate` for each of `videos` [(frames (T,H,W,3) uint8, Prompts)], in order,
    cut back to each video's frames and objects (numpy). Videos of one bucket run `B` at a time, B the size
    of the "videos" axis; a short last batch repeats its last video. One compilation per bucket.

    Multi-host (a mesh spanning processes): every process calls it at once with its own videos (maybe
    none). The processes share their buckets, then run the same sequence of batches, each filling its
    `local_batch(mesh)` places with its videos (repeating its last one, or an empty video where it has
    none of that bucket)."""
    buckets = []
    for frames, prompts in videos:
        functional._check_frames(frames)
        functional.check_prompts(prompts, frames.shape)
        buckets.append(Bucket.of(frames, prompts, mesh.shape["objects"], frame_step))
    every_process = ([[Bucket(*b) for b in theirs] for theirs in process_allgather_json(
        [dataclasses.astuple(b) for b in buckets])] if mesh.is_multi_process else [buckets])
    places = local_batch(mesh)
    results = [None] * len(videos)
    for bucket in sorted(set().union(*every_process), key=dataclasses.astuple):  # the same order everywhere
        members = [i for i, b in enumerate(buckets) if b == bucket]
        rounds = max(-(-theirs.count(bucket) // places) for theirs in every_process)
        for start in range(0, rounds * places, places):
            chunk = members[start:start + places]
            padded = [(*pad_to(bucket, *videos[i]), len(videos[i][0])) for i in chunk] or [_empty_video(bucket)]
            frames, prompts, lengths = zip(*(padded + padded[-1:] * (places - len(padded))))
            frames, lengths = np.stack(frames), np.asarray(lengths, np.int32)
            prompts = jax.tree_util.tree_map(lambda *x: np.stack(x), *prompts)
            out = jax.device_get(propagate_batch(params, config, frames, prompts, lengths, mesh, reverse=reverse,
                                                 both_directions=both_directions))
            for j, i in enumerate(chunk):
                t, n = videos[i][0].shape[0], np.shape(videos[i][1].frame_idx)[0]
                results[i] = {key: value[j, :t, :n] if value.ndim > 2 else value[j, :t] for key, value in out.items()}
    return results


def _empty_video(bucket: Bucket) -> tuple[np.ndarray, Prompts, int]:
    """A stand-in of the bucket's shape for a process with none of its videos in a batch (frames, prompts,
    length): one black frame, each object clicked at (0, 0) on it (computed, then dropped)."""
    click = [{"frame": 0, "points": [[0, 0]], "labels": [1]}]
    prompts = functional.make_prompts([click] * bucket.num_objects, bucket.height, bucket.width)
    return (*pad_to(bucket, np.zeros((1, bucket.height, bucket.width, 3), np.uint8), prompts), 1)
