"""Key-blocked attention (online softmax) against the full-keys formulation, and the per-machine choice of
memory attention's formulation: measured once, kept in the cache folder, read back, forced, shown by
`sam2-jax info`."""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from reference import assert_close

from sam2_jax import runtime
from sam2_jax.commands import info
from sam2_jax.models import attention_choice, layers


def _case(lq=300, lk=700, heads=2, d=16, dv=8, seed=0):
    """(2, L, H, D) queries/keys/values; a key mask with a sparse pattern, the first 300 keys of item 1 masked
    (whole blocks of every key block size used below) and keys 100-399 of item 0 masked."""
    rng = np.random.default_rng(seed)
    q, k = (rng.standard_normal((2, n, heads, d)).astype(np.float32) * 2 for n in (lq, lk))
    v = rng.standard_normal((2, lk, heads, dv)).astype(np.float32)
    mask = rng.random((2, lk)) < 0.5
    mask[1, :300] = False
    mask[0, 100:400] = False
    return q, k, v, mask


def _float64(q, k, v, mask, scale):
    """torch's SDPA in float64 on the given inputs, (..., L, H, D) in and out."""
    t = [torch.from_numpy(np.asarray(x, np.float64)).transpose(-3, -2) for x in (q, k, v)]
    attn_mask = None if mask is None else torch.from_numpy(np.asarray(mask))[..., None, None, :]
    return torch.nn.functional.scaled_dot_product_attention(*t, attn_mask=attn_mask, scale=scale).transpose(
        -3, -2).numpy()


@pytest.mark.parametrize("blocks", [(64, 100), (128, 64), (512, 256), (300, 7)])
@pytest.mark.parametrize("masked", [True, False])
def test_key_blocks_equal_full_keys(blocks, masked):
    """Ragged last key blocks, all-masked key blocks (no NaN) and query blocks; float rounding apart."""
    q, k, v, mask = _case()
    mask = mask if masked else None
    with jax.default_matmul_precision("highest"):
        run = jax.jit(lambda q, k, v, m, blocks: layers.attention(q, k, v, scale=0.25, mask=m, blocks=blocks),
                      static_argnums=4)
        full, blocked = run(q, k, v, mask, None), run(q, k, v, mask, blocks)
    assert np.isfinite(np.asarray(blocked)).all()
    assert_close("key blocks vs full keys", blocked, full, rel=2e-6)
    assert_close("key blocks vs float64", blocked, _float64(q, k, v, mask, 0.25), rel=2e-6)


@pytest.mark.parametrize("blocks", [(128, 100), (300, 64)])
def test_key_blocks_masked_for_every_item_are_skipped(blocks):
    """Keys masked in every batch item (the bank's empty slots) are whole blocks the loop skips (a `cond`), with
    the same numbers; values and gradients as the full-keys formulation."""
    q, k, v, mask = _case(lq=200, lk=600)
    mask[:, 100:500] = False
    run = jax.jit(lambda q, k, v, blocks: layers.attention(q, k, v, scale=0.25, mask=mask, blocks=blocks),
                  static_argnums=3)
    assert "cond" in str(jax.make_jaxpr(run, static_argnums=3)(q, k, v, blocks))
    assert "cond" not in str(jax.make_jaxpr(lambda q, k, v: layers.attention(q, k, v, scale=0.25,
                                                                              blocks=blocks))(q, k, v))
    with jax.default_matmul_precision("highest"):
        assert_close("skipped blocks vs full keys", run(q, k, v, blocks), run(q, k, v, None), rel=2e-6)
        grads = [jax.grad(lambda q, k, v, b=b: jnp.sum(jnp.sin(run(q, k, v, b))), argnums=(0, 1, 2))(q, k, v)
                 for b in (blocks, None)]
    for name, a, b in zip("qkv", *grads):
        assert_close(f"gradient of {name}", a, b, rel=1e-5)


def test_key_blocks_bfloat16_and_shared_keys():
    """bfloat16 inputs (float32 scores and sums), keys and values shared by both batch items (a leading 1)."""
    q, k, v, mask = _case(seed=1)
    q, k, v = (jnp.asarray(x, jnp.bfloat16) for x in (q, k[:1], v[:1]))
    full = layers.attention(q, k, v, scale=0.25, mask=mask)
    blocked = layers.attention(q, k, v, scale=0.25, mask=mask, blocks=(128, 96))
    assert blocked.dtype == jnp.bfloat16
    reference = _float64(*(np.asarray(x.astype(jnp.float32)) for x in (q, k, v)), mask, 0.25)
    error_full = assert_close("bfloat16 full keys vs float64", full, reference, rel=1e-2)
    error_blocked = assert_close("bfloat16 key blocks vs float64", blocked, reference, rel=1e-2)
    assert error_blocked <= 2 * error_full + 1e-2


def test_key_blocks_gradients():
    """Training differentiates through the key loop: same gradients as the full-keys formulation."""
    q, k, v, mask = _case(lq=100, lk=450)

    def loss(blocks):
        return jax.grad(lambda q, k, v: jnp.sum(jnp.sin(layers.attention(q, k, v, scale=0.25, mask=mask,
                                                                           blocks=blocks))), argnums=(0, 1, 2))

    with jax.default_matmul_precision("highest"):
        full, blocked = loss(None)(q, k, v), loss((64, 64))(q, k, v)
    for name, a, b in zip("qkv", blocked, full):
        assert_close(f"gradient of {name}", a, b, rel=1e-5)


# ----------------------------------------------------------------------------------------- the choice
@pytest.fixture
def small_choice(tmp_path, monkeypatch):
    """The choice on a tiny timed shape with two candidates, kept under tmp_path; no forced choice."""
    monkeypatch.setattr(runtime, "CACHE_FOLDER", tmp_path)
    monkeypatch.setattr(attention_choice, "CANDIDATES", {"full": (256, None), "q64-k128": (64, 128)})
    monkeypatch.setattr(attention_choice, "TIMED_QUERIES", 128)
    monkeypatch.setattr(attention_choice, "TIMED_KEYS", 300)
    monkeypatch.delenv(attention_choice.ENVIRONMENT, raising=False)
    attention_choice._measured_choice.cache_clear()
    yield tmp_path / "attention.json"
    attention_choice._measured_choice.cache_clear()


def test_first_use_measures_and_caches_then_reads(small_choice, monkeypatch):
    chosen = attention_choice.choice()
    entry = json.loads(small_choice.read_text())[attention_choice.machine_key()]
    assert chosen.name == entry["choice"] and set(entry["ms"]) == {"full", "q64-k128"}
    assert chosen.blocks == attention_choice.CANDIDATES[chosen.name] and "measured now" in chosen.reason

    attention_choice._measured_choice.cache_clear()  # a new process: reads the file, measures nothing
    monkeypatch.setattr(attention_choice, "measure", lambda: pytest.fail("measured again"))
    again = attention_choice.choice()
    assert again.name == chosen.name and "measured earlier" in again.reason


def test_each_isa_limit_has_its_own_choice(small_choice, monkeypatch):
    monkeypatch.setattr(attention_choice, "measure", lambda: {"full": 2.0, "q64-k128": 1.0})
    assert attention_choice.choice().name == "q64-k128"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")
    monkeypatch.setattr(attention_choice, "measure", lambda: {"full": 1.0, "q64-k128": 2.0})
    assert "max_isa=AVX2" in attention_choice.machine_key()
    assert attention_choice.choice().name == "full"
    assert len(json.loads(small_choice.read_text())) == 2


def test_each_core_count_has_its_own_choice(small_choice, monkeypatch):
    """A process limited to fewer cores (taskset, a container) has threads of its own: measured apart."""
    monkeypatch.setattr(attention_choice, "measure", lambda: {"full": 2.0, "q64-k128": 1.0})
    assert attention_choice.choice().name == "q64-k128"
    assert f"{attention_choice.cores()} cores" in attention_choice.machine_key()
    monkeypatch.setattr(attention_choice, "cores", lambda: 64)
    monkeypatch.setattr(attention_choice, "measure", lambda: {"full": 1.0, "q64-k128": 2.0})
    assert "64 cores" in attention_choice.machine_key()
    assert attention_choice.choice().name == "full"
    assert len(json.loads(small_choice.read_text())) == 2


def test_measured_while_a_program_is_traced(small_choice):
    """The first use is usually inside `jax.jit`'s trace of memory attention: the timing still runs."""
    seen = []
    jax.jit(lambda x: seen.append(attention_choice.memory_attention_blocks()) or x)(1.0)
    assert seen[0] in attention_choice.CANDIDATES.values() and small_choice.exists()


def test_forced_choice(small_choice, monkeypatch):
    monkeypatch.setattr(attention_choice, "measure", lambda: pytest.fail("measured a forced choice"))
    monkeypatch.setenv(attention_choice.ENVIRONMENT, "full")
    assert attention_choice.choice() == ("full", (256, None), "forced by $SAM2_JAX_ATTENTION")
    monkeypatch.setenv(attention_choice.ENVIRONMENT, "q32-k48")
    assert attention_choice.memory_attention_blocks() == (32, 48)
    for bad in ("fastest", "q0-k8", "q32"):
        monkeypatch.setenv(attention_choice.ENVIRONMENT, bad)
        with pytest.raises(ValueError, match=r"SAM2_JAX_ATTENTION.*expected.*got"):
            attention_choice.choice()
    assert not small_choice.exists()


def test_info_says_which_formulation_and_why(small_choice, monkeypatch, capsys):
    monkeypatch.setattr(attention_choice, "measure", lambda: {"full": 2.0, "q64-k128": 1.0})
    assert info.run(argparse.Namespace(model=None)) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("memory attention: "))
    assert "q64-k128 (query blocks of 64, key blocks of 128 with an online softmax)" in line
    assert "fastest of the candidates" in line and "q64-k128 1.0, full 2.0" in line and str(small_choice) in line
    monkeypatch.setenv(attention_choice.ENVIRONMENT, "full")
    info.run(argparse.Namespace(model=None))
    assert "memory attention: full (query blocks of 256 over all keys at once): forced" in capsys.readouterr().out
