"""`sam2_jax.sharding` on 8 host devices (a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8):
8 videos over the "videos" axis, one video's 8 objects over the "objects" axis, and a ragged batch in shape
buckets, each equal to `functional.propagate` on one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

SIZE = 256


def _videos(seed: int, count: int, lengths, sizes):
    from test_video_model import _video

    out = []
    for i in range(count):
        frames = np.stack(_video(num_frames=lengths[i % len(lengths)], seed=seed + i))
        h, w = sizes[i % len(sizes)]
        out.append(frames[:, :h, :w])
    return out


def _prompts(functional, i: int, num_objects: int, height: int, width: int):
    """Clicks (and, for every third object, a box) on the two moving blobs of `_video`, on frame 0, 1 or 2."""
    objects = []
    for k in range(num_objects):
        frame = (i + k) % 3
        x, y = (60 + 4 * frame, 80) if k % 2 == 0 else (180 - 3 * frame, 150 + frame)
        x, y = min(x + k // 2, width - 16), min(y, height - 16)
        prompt = {"frame": frame, "points": [[x, y]], "labels": [1]}
        if k % 3 == 1:
            prompt = {"frame": frame, "box": [x - 15, y - 15, x + 15, y + 15]}
        objects.append([prompt])
    return functional.make_prompts(objects, height, width)


def main(checkpoint: str) -> dict:
    import jax
    from sam2_jax import functional, sharding
    from sam2_jax import Sam2VideoModel

    assert len(jax.devices()) == 8, jax.devices()
    model = Sam2VideoModel.from_pretrained(checkpoint)
    params, config = model.params, model.config
    report = {}
    with jax.default_matmul_precision("highest"):
        def alone(frames, prompts):
            return jax.device_get(functional.propagate(params, config, frames, prompts, both_directions=True))

        def worst(got, expected):
            """Per output, max |difference| over its scale (at least 1; masks: the present masks' logits)."""
            report = {}
            for key, ref in expected.items():
                ref = np.asarray(ref, np.float64)
                real = ref[ref > -1000] if key == "pred_masks" else ref
                scale = max(1.0, float(np.abs(real).max()) if real.size else 1.0)
                report[key] = float(np.abs(np.asarray(got[key], np.float64) - ref).max()) / scale
            return report

        def worst_of(reports):
            return {key: max(r[key] for r in reports) for key in reports[0]}

        # 8 videos of one shape, one per device.
        videos = _videos(0, 8, [6], [(SIZE, SIZE)])
        prompts = [_prompts(functional, i, 2, SIZE, SIZE) for i in range(8)]
        mesh = sharding.make_mesh()
        out = sharding.propagate_batch(params, config, np.stack(videos), jax.tree_util.tree_map(
            lambda *x: np.stack(x), *prompts), np.full(8, 6), mesh, both_directions=True)
        report["videos_sharding"] = str(out["pred_masks"].sharding.spec)
        report["videos_devices"] = len(out["pred_masks"].sharding.device_set)
        out = jax.device_get(out)
        report["videos_max_diff"] = worst_of([worst({k: v[i] for k, v in out.items()}, alone(videos[i], prompts[i]))
                                              for i in range(8)])
        report["present"] = int((out["object_score_logits"] > 0).sum())
        report["absent"] = int((out["object_score_logits"] <= 0).sum())

        # One video, 8 objects over the objects axis.
        mesh = sharding.make_mesh(object_shards=8)
        many = _prompts(functional, 3, 8, SIZE, SIZE)
        batch = jax.tree_util.tree_map(lambda x: x[None], many)
        out = sharding.propagate_batch(params, config, videos[0][None], batch, np.asarray([6]), mesh,
                                       both_directions=True)
        report["objects_sharding"] = str(out["pred_masks"].sharding.spec)
        out = jax.device_get(out)
        report["objects_max_diff"] = worst({k: v[0] for k, v in out.items()}, alone(videos[0], many))

        # A ragged batch: two lengths in each of two sizes -> two buckets (T padded to 16), one program each.
        ragged = _videos(10, 4, [5, 12], [(SIZE, SIZE), (SIZE, SIZE), (200, 240), (200, 240)])
        ragged_prompts = [_prompts(functional, i, 2, *v.shape[1:3]) for i, v in enumerate(ragged)]
        mesh = sharding.make_mesh(object_shards=2)
        results = sharding.propagate_videos(params, config, list(zip(ragged, ragged_prompts)), mesh,
                                            both_directions=True)
        run = sharding._compiled(config, mesh, False, True, True, False)
        report["ragged_programs"] = run._cache_size()
        report["ragged_buckets"] = len({sharding.Bucket.of(v, p, 2) for v, p in zip(ragged, ragged_prompts)})
        report["ragged_max_diff"] = worst_of([worst(r, alone(v, p)) for r, v, p in zip(results, ragged, ragged_prompts)])
        report["ragged_shapes_ok"] = all(r["pred_masks"].shape[:2] == (v.shape[0], p.frame_idx.shape[0])
                                         for r, v, p in zip(results, ragged, ragged_prompts))
    return report


def test_eight_devices(tmp_path):
    import torch
    from sam2_jax.config import small_config
    from test_video_model import Pair

    Pair(small_config(), tmp_path / "model")
    del torch
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONPATH=os.path.dirname(__file__))
    done = subprocess.run([sys.executable, __file__, str(tmp_path / "model")], env=env, capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print("SHARDING", report)
    assert report["videos_devices"] == 8 and report["videos_sharding"].startswith(("PartitionSpec('videos'", "P('videos'"))
    assert "objects" in report["objects_sharding"]
    assert report["present"] > 0 and report["absent"] > 0
    for case in ("videos_max_diff", "objects_max_diff", "ragged_max_diff"):
        diff = report[case]
        assert diff["pred_masks"] <= 1e-6 and diff["iou_scores"] <= 1e-6 and diff["visited"] == 0, (case, diff)
        # The test model's object-score head has its weights times 100 (to spread presence): rounding too.
        assert diff["object_score_logits"] <= 1e-5, (case, diff)
    assert report["ragged_shapes_ok"]
    assert report["ragged_programs"] == report["ragged_buckets"] == 2


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
