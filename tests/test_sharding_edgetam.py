"""`functional.propagate` on EdgeTAM vmapped over videos, and `sam2_jax.sharding` on 4 host devices (a subprocess
with XLA_FLAGS=--xla_force_host_platform_device_count=4, as test_sharding does for SAM 2): a 2 x 2 mesh, 2 videos
over the "videos" axis and each video's 2 objects over the "objects" axis, in one program. Each video equals
`functional.propagate` of it alone on one device (itself equal to transformers' EdgeTAM: test_edgetam_video).
A random 128 px EdgeTAM, 4 frames; three programs in all."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

SIZE, FRAMES = 128, 4


def _video_and_prompts(functional, seed: int):
    """A clip of two moving shapes; object 1 clicked on frame 0, object 2 boxed on frame 1."""
    from sam2_jax.commands.demo import interior_point
    from sam2_jax.io.clips import generate_clip

    clip = generate_clip(seed, FRAMES, SIZE, SIZE, max_objects=2, min_objects=2)
    ys, xs = np.nonzero(clip.masks[1, 1])
    objects = [[{"frame": 0, "points": [list(interior_point(clip.masks[0, 0]))], "labels": [1]}],
               [{"frame": 1, "box": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]}]]
    return clip.frames, functional.make_prompts(objects, SIZE, SIZE)


def main() -> dict:
    import jax
    from sam2_jax import EdgeTamVideoModel, functional, sharding
    from test_commands_edgetam import small_edgetam_video_config

    assert len(jax.devices()) == 4, jax.devices()
    model = EdgeTamVideoModel.from_config(small_edgetam_video_config(SIZE), seed=6)
    params, config = model.params, model.config
    videos, prompts = zip(*(_video_and_prompts(functional, seed) for seed in (0, 1)))
    report = {}

    def worst(got, expected):
        """Per output, max |difference| over its scale (at least 1)."""
        out = {}
        for key, ref in expected.items():
            ref = np.asarray(ref, np.float64)
            scale = max(1.0, float(np.abs(ref[ref > -1000]).max()) if (ref > -1000).any() else 1.0)
            out[key] = float(np.abs(np.asarray(got[key], np.float64) - ref).max()) / scale
        return out

    with jax.default_matmul_precision("highest"):
        alone = [jax.device_get(functional.propagate(params, config, v, p)) for v, p in zip(videos, prompts)]
        report["present"] = int(sum((a["object_score_logits"] > 0).sum() for a in alone))

        stacked = jax.tree_util.tree_map(lambda *x: np.stack(x), *prompts)
        batched = jax.device_get(jax.vmap(lambda f, p: functional.propagate(params, config, f, p))(
            np.stack(videos), stacked))
        report["vmap"] = [worst({k: v[i] for k, v in batched.items()}, alone[i]) for i in range(2)]

        out = sharding.propagate_batch(params, config, np.stack(videos), stacked, np.full(2, FRAMES),
                                       sharding.make_mesh(object_shards=2))
        report["sharding"] = str(out["pred_masks"].sharding.spec)
        report["devices"] = len(out["pred_masks"].sharding.device_set)
        out = jax.device_get(out)
        report["sharded"] = [worst({k: v[i] for k, v in out.items()}, alone[i]) for i in range(2)]
    return report


def test_vmap_and_two_devices_equal_each_video_alone():
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=os.pathsep.join([tests, os.path.dirname(tests)]))  # this checkout's sam2_jax
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print("EDGETAM SHARDING", report)
    assert report["devices"] == 4 and report["sharding"] in ("PartitionSpec('videos', None, 'objects')",
                                                             "P('videos', None, 'objects')")
    assert 0 < report["present"] < 2 * 2 * FRAMES  # objects present on some frames, absent on others
    for case in ("vmap", "sharded"):
        for diff in report[case]:
            assert diff["pred_masks"] <= 1e-5 and diff["iou_scores"] <= 1e-5, (case, diff)
            assert diff["object_score_logits"] <= 1e-5 and diff["visited"] == 0, (case, diff)


if __name__ == "__main__":
    print(json.dumps(main()))
