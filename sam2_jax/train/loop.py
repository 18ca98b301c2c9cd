"""Training: the optimiser, the jitted step, resumable checkpoints, held-out J&F, and `train(args)`, the run of
the `sam2-jax train` command (`sam2_jax.commands.train`).

- AdamW (betas 0.9, 0.999; weight decay on kernels only) after global-norm clipping, with linear warm-up
  then cosine decay to a tenth of the peak; frozen parts get no update (optax.multi_transform) and no
  gradient (stop_gradient on their params, so their backward pass is not even computed).
- The loss is `losses.total_loss` of the terms `forward.forward` sums, divided by the number of objects.
- Checkpoints: `weights.save_checkpoint` (config.json + model.safetensors in the transformers layout, which
  `Sam2VideoModel.from_pretrained` and transformers load) plus optimizer.msgpack and trainer.json (step and
  arguments), so `--resume` continues exactly where the run stopped: clips, prompts and random keys are all
  derived from (seed, step).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict

from .. import weights
from ..config import (EdgeTamConfig, EdgeTamVideoConfig, HieraConfig, MaskDecoderConfig, PromptEncoderConfig,
                      Sam2VideoConfig, VisionConfig, replace)
from ..io.evaluation import evaluate_sequence, region_similarity
from ..models.sam2_video import Sam2VideoModule
from ..transformers_api.video_model import Sam2VideoModel
from .batches import FolderClips, PromptMix, generated_clips, held_out_clips, make_batch
from .forward import forward, with_memory_plan
from .losses import total_loss

OPTIMIZER_NAME = "optimizer.msgpack"
TRAINER_NAME = "trainer.json"
PARTS = ("vision_encoder", "prompt_encoder", "mask_decoder", "memory_attention", "memory_encoder")
ALIASES = {"image_encoder": "vision_encoder"}


def tiny_generated_config(image_size: int = 128) -> Sam2VideoConfig:
    """The 3.1 M-parameter SAM 2.1 of shared/reference/training_feasibility.md (the config meant for the
    packaged sam2-jax-shapes model): Hiera width 32 with stages 1-2-2-1, width 128 for the neck, decoder and
    memory attention (two layers), memory width 64."""
    backbone = HieraConfig(hidden_size=32, embed_dim_per_stage=(32, 64, 128, 256),
                           num_attention_heads_per_stage=(1, 2, 4, 8), blocks_per_stage=(1, 2, 2, 1),
                           window_size_per_stage=(8, 4, 8, 4), global_attention_blocks=(4,))
    vision = VisionConfig(backbone_config=backbone, backbone_channel_list=(256, 128, 64, 32), fpn_hidden_size=128)
    config = Sam2VideoConfig(
        vision_config=vision, prompt_encoder_config=PromptEncoderConfig(hidden_size=128),
        mask_decoder_config=MaskDecoderConfig(hidden_size=128, mlp_dim=512, num_attention_heads=4,
                                              iou_head_hidden_dim=128),
        memory_attention_hidden_size=128, memory_attention_num_layers=2,
        memory_attention_feed_forward_hidden_size=512, memory_encoder_hidden_size=128,
        mask_downsampler_embed_dim=128, memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=512)
    return with_image_size(config, image_size)


def with_image_size(config: Sam2VideoConfig, size: int) -> Sam2VideoConfig:
    """The same architecture for square inputs of `size` pixels (a multiple of 16)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size % 16:
        raise ValueError(f"image_size: expected a multiple of 16 of at least 32, got {size!r}")
    s = size // 4
    vision = replace(config.vision_config,
                     backbone_config=replace(config.vision_config.backbone_config, image_size=(size, size)),
                     backbone_feature_sizes=((s, s), (s // 2, s // 2), (s // 4, s // 4)))
    return replace(config, vision_config=vision, image_size=size,
                   prompt_encoder_config=replace(config.prompt_encoder_config, image_size=size),
                   memory_attention_rope_feat_sizes=(s // 4, s // 4))


def build_config(name: str, image_size: int | None = None) -> Sam2VideoConfig:
    """"tiny-generated", a preset name (e.g. "sam2.1-hiera-tiny"), or a config.json (or a checkpoint folder
    holding one), at `image_size` if given."""
    if name == "tiny-generated":
        config = tiny_generated_config()
    elif Path(name).is_dir():
        config = weights.read_config(name)
    elif Path(name).is_file():
        config = Sam2VideoConfig.from_json_file(name)
    else:
        config = Sam2VideoConfig.from_preset(name)
    if isinstance(config, (EdgeTamConfig, EdgeTamVideoConfig)):  # its perceiver and RepViT have no training path here
        raise ValueError(f"config: expected a SAM 2 or SAM 2.1 config (training is SAM 2 only), got EdgeTAM's "
                         f"({name!r}, model_type {config.model_type!r})")
    config = replace(config, model_type="sam2_video")
    return with_image_size(config, image_size) if image_size else config


# ------------------------------------------------------------------------------------------- optimiser
# Buffers in transformers, never trained: the random Fourier features that encode image positions and prompt
# positions. They must be the same matrix, or clicks and boxes land in another coordinate system than the image.
FOURIER_FEATURES = ("shared_image_embedding", "positional_embedding")
PROMPT_FOURIER_FEATURES = ("prompt_encoder", "shared_embedding", "positional_embedding")


# Parameters the original SAM2Base draws from a normal of deviation 0.02 (truncated at +-2, never reached).
SMALL_NORMAL = ("no_memory_embedding", "no_memory_positional_encoding", "no_object_pointer",
                "occlusion_spatial_embedding_parameter", "memory_temporal_positional_encoding")


def initial_params(config: Sam2VideoConfig, seed: int) -> dict:
    """Random weights drawn as the original sam2 modules draw theirs (the feasibility run trained from
    those; from flax's defaults, 1.7 times the spread, training was several times slower): PyTorch's
    defaults for linear and convolution layers (weights and biases uniform in +-1/sqrt(fan_in)) and
    embeddings (N(0, 1)), zero Hiera position embeddings, the memory fuser's layer scale, N(0, 0.02) for
    SAM2Base's own tensors and N(0, 1) Fourier features, those of images and prompts being one matrix."""
    rng = np.random.default_rng(seed)
    abstract = flatten_dict(Sam2VideoModel.abstract_params(config))
    params = {}
    for path, leaf in abstract.items():
        shape, name = tuple(leaf.shape), path[-1]
        kernel_names = [k for k in ("kernel", "weight") if path[:-1] + (k,) in abstract]
        if name in ("kernel", "weight") or (name == "bias" and kernel_names):
            kernel = abstract[path[:-1] + (kernel_names[0],)].shape
            # fan-in: flax kernels are (..., in, out); the transposed convolutions' `weight` is (in, out, kh, kw)
            fan_in = np.prod(kernel[:-1]) if kernel_names[0] == "kernel" else np.prod(kernel[1:])
            value = rng.uniform(-1, 1, shape) / np.sqrt(fan_in)
        elif name in ("embedding", "positional_embedding"):
            value = rng.standard_normal(shape)
        elif name == "bias":  # a LayerNorm's
            value = np.zeros(shape)
        elif name == "scale":  # LayerNorm, or the memory fuser's layer scale (no bias beside it)
            layer_norm = path[:-1] + ("bias",) in abstract
            value = np.full(shape, 1.0 if layer_norm else config.memory_fuser_layer_scale_init_value)
        elif name in ("pos_embed", "pos_embed_window"):
            value = np.zeros(shape)
        elif name in SMALL_NORMAL:
            value = 0.02 * rng.standard_normal(shape)
        else:
            raise ValueError(f"initial_params: no rule for the parameter {'/'.join(path)}")
        params[path] = jnp.asarray(value, leaf.dtype)
    params[PROMPT_FOURIER_FEATURES] = params[FOURIER_FEATURES].copy()  # the same values, its own buffer
    return unflatten_dict(params)


def trainable_mask(params, freeze=()) -> dict:
    """A tree of bools like `params`: False under the frozen top-level parts (names of PARTS, or
    "image_encoder" for the vision encoder) and for the Fourier features (buffers, never trained)."""
    frozen = set()
    for name in freeze:
        part = ALIASES.get(name, name)
        if part not in PARTS:
            raise ValueError(f"freeze: expected names among {sorted(PARTS + tuple(ALIASES))}, got {name!r}")
        frozen.add(part)
    buffers = {FOURIER_FEATURES, PROMPT_FOURIER_FEATURES}

    def trainable(path, _):
        keys = tuple(p.key for p in path)
        return keys[0] not in frozen and keys not in buffers

    return jax.tree_util.tree_map_with_path(trainable, params)


def learning_rate(step: int, peak: float, warmup: int, steps: int) -> float:
    """Linear warm-up from 0 over `warmup` steps, then cosine decay to peak / 10 at `steps`."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(steps, warmup + 1), peak * 0.1)
    return float(schedule(step))


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The static settings of the jitted training step (the learning rate comes in with every step, so
    one compilation serves any schedule)."""

    freeze: tuple[str, ...] = ()
    weight_decay: float = 0.05
    clip_norm: float = 1.0
    num_corrections: int = 7
    click_from_truth: float = 0.1
    dtype: str = "float32"

    def optimizer(self, params) -> optax.GradientTransformation:
        """AdamW before its learning rate: global-norm clipping, Adam (0.9, 0.999), decoupled weight decay on
        kernels (not biases, norms or embeddings); frozen params get zero updates."""
        trainable = trainable_mask(params, self.freeze)
        decay = unflatten_dict({k: k[-1] in ("kernel", "weight") for k in flatten_dict(trainable)})
        adamw = optax.chain(optax.clip_by_global_norm(self.clip_norm), optax.scale_by_adam(0.9, 0.999),
                            optax.add_decayed_weights(self.weight_decay, decay))
        labels = jax.tree_util.tree_map(lambda t: "train" if t else "freeze", trainable)
        return optax.multi_transform({"train": adamw, "freeze": optax.set_to_zero()}, labels)


def loss_and_terms(module: Sam2VideoModule, recipe: Recipe, params, batch, key):
    """(loss, terms per object): frozen params are constants, the compute runs in `recipe.dtype`."""
    trainable = trainable_mask(params, recipe.freeze)
    params = jax.tree_util.tree_map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, trainable)
    params = jax.tree_util.tree_map(lambda p: p.astype(recipe.dtype), params)
    _, terms = forward(module, params, batch, key, recipe.num_corrections, recipe.click_from_truth)
    count = jnp.maximum(jnp.sum(batch.valid), 1)
    terms = {k: v / count for k, v in terms.items()}
    return total_loss(terms), terms


@functools.lru_cache(maxsize=8)
def gradients(config: Sam2VideoConfig, recipe: Recipe):
    """jit((params, batch, key) -> ({"loss", terms..., "grad_norm"}, grads)), compiled once per (config,
    recipe, batch shapes)."""
    loss_fn = jax.value_and_grad(functools.partial(loss_and_terms, Sam2VideoModule(config), recipe), has_aux=True)

    def run(params, batch, key):
        (loss, terms), grads = loss_fn(params, batch, key)
        return {"loss": loss, **terms, "grad_norm": optax.tree.norm(grads)}, grads

    return jax.jit(run)


@functools.lru_cache(maxsize=8)
def update(recipe: Recipe):
    """jit((params, opt_state, grads, lr) -> (params, opt_state)): one AdamW step at learning rate `lr`."""

    def apply(params, opt_state, grads, lr):
        updates, opt_state = recipe.optimizer(params).update(grads, opt_state, params)
        return jax.tree_util.tree_map(lambda p, u: p - lr * u, params, updates), opt_state

    return jax.jit(apply, donate_argnums=(0, 1))


def train_step(config: Sam2VideoConfig, recipe: Recipe, params, opt_state, batch, key, lr: float):
    """One optimiser step. Returns (params, opt_state, {"loss", terms..., "grad_norm"})."""
    metrics, grads = gradients(config, recipe)(params, batch, key)
    params, opt_state = update(recipe)(params, opt_state, grads, np.float32(lr))
    return params, opt_state, metrics


class TrainState(NamedTuple):
    step: int
    params: Any
    opt_state: Any


# ------------------------------------------------------------------------------------------ checkpoints
def save_training(folder, state: TrainState, config: Sam2VideoConfig, settings: dict) -> None:
    """Weights in the transformers layout, the optimizer state and the step; trainer.json is written last."""
    folder = Path(folder)
    weights.save_checkpoint(folder, jax.device_get(state.params), config)
    (folder / OPTIMIZER_NAME).write_bytes(flax.serialization.to_bytes(jax.device_get(state.opt_state)))
    (folder / TRAINER_NAME).write_text(json.dumps({"step": state.step, "settings": settings}, indent=1) + "\n")


def load_params(folder, config: Sam2VideoConfig):
    """Strictly load the params of a checkpoint folder for `config`."""
    saved = weights.read_config(folder)
    if isinstance(saved, (EdgeTamConfig, EdgeTamVideoConfig)):
        raise ValueError(f"checkpoint: expected a SAM 2 or SAM 2.1 checkpoint (training is SAM 2 only), got EdgeTAM's "
                         f"({str(folder)!r}, model_type {saved.model_type!r})")
    if saved != replace(config, model_type=saved.model_type):
        raise ValueError(f"checkpoint: the config in {str(folder)!r} differs from the training config")
    return weights.state_dict_to_params(weights.read_state_dict(folder), Sam2VideoModel.abstract_params(config))


def load_training(folder, config: Sam2VideoConfig, opt_state_template) -> tuple[TrainState, dict]:
    """The state saved by `save_training`, and the settings it was trained with."""
    folder = Path(folder)
    if not (folder / TRAINER_NAME).is_file():
        raise ValueError(f"resume: expected {TRAINER_NAME} in {str(folder)!r} (a folder written by training)")
    info = json.loads((folder / TRAINER_NAME).read_text())
    params = load_params(folder, config)
    opt_state = flax.serialization.from_bytes(opt_state_template, (folder / OPTIMIZER_NAME).read_bytes())
    return TrainState(info["step"], params, opt_state), info["settings"]


# ------------------------------------------------------------------------------------------ evaluation
def evaluate_generated(config: Sam2VideoConfig, params, clips, kinds=("click", "box", "mask"),
                       chunk: int = 8, max_objects: int = 3) -> dict[str, dict[str, float]]:
    """J, F and J&F (DAVIS rules: first and last frames not scored, means over objects) of tracking `clips`
    from frame-0 prompts of each kind, through the training pass without corrections; also "J0", the J of
    the prompted frame itself (click and box), and "copy", the frame-0 mask copied to every frame."""
    run = _eval_forward(config)
    scores = {kind: ([], [], []) for kind in ("copy",) + tuple(kinds)}
    for start in range(0, len(clips), chunk):
        part = clips[start:start + chunk]
        padded = part + [part[-1]] * (chunk - len(part))  # fixed shapes: one compilation
        for kind in kinds:
            batch = with_memory_plan(config, make_batch(padded, chunk * max_objects, kind), inference=True)
            masks = np.asarray(run(params, batch)) > 0
            n = 0
            for _, truth in part:
                count = truth.shape[1]
                _add(scores[kind], evaluate_sequence(masks[:, n:n + count], truth))
                if kind != "mask":
                    scores[kind][2].extend(np.atleast_1d(region_similarity(masks[0, n:n + count], truth[0])))
                n += count
        for _, truth in part:
            _add(scores["copy"], evaluate_sequence(np.broadcast_to(truth[:1], truth.shape).copy(), truth))
    out = {}
    for kind, (j, f, j0) in scores.items():
        out[kind] = {"J": float(np.mean(j)), "F": float(np.mean(f)), "J&F": float(np.mean(j) + np.mean(f)) / 2}
        if j0:
            out[kind]["J0"] = float(np.mean(j0))
    return out


@functools.lru_cache(maxsize=4)
def _eval_forward(config: Sam2VideoConfig):
    module = Sam2VideoModule(config)
    return jax.jit(lambda params, batch: forward(module, params, batch, jax.random.PRNGKey(0), 0,
                                                 inference=True)[0])


def _add(lists, result: dict) -> None:
    for obj in result["objects"]:
        lists[0].append(obj["J"])
        lists[1].append(obj["F"])


def format_scores(scores: dict) -> str:
    """One line of held-out J&F, J and F per prompt kind."""
    return "  ".join(f"{kind} J&F {s['J&F']:.3f} (J {s['J']:.3f} F {s['F']:.3f}"
                     + (f", frame-0 J {s['J0']:.3f})" if "J0" in s else ")") for kind, s in scores.items())


# ---------------------------------------------------------------------------------------------- the run
SETTINGS = ("config", "data", "format", "steps", "batch_clips", "objects_per_step", "frames", "image_size", "lr",
            "warmup", "weight_decay", "freeze", "dtype", "seed", "corrections", "later_corrections", "prompt_frames",
            "prompt_mix", "init")


def train(args: argparse.Namespace) -> TrainState:
    """Run `sam2-jax train` with parsed arguments; returns the final state."""
    config = build_config(args.config, args.image_size)
    size = config.image_size
    mix = dataclasses.replace(_prompt_mix(args.prompt_mix, args.frames), later_correction=args.later_corrections,
                              prompt_frames=args.prompt_frames)
    settings = {k: getattr(args, k) for k in SETTINGS}
    params = initial_params(config, args.seed)
    if args.init:
        params = load_params(weights.resolve_pretrained(args.init), config)
    recipe = Recipe(tuple(args.freeze), args.weight_decay, num_corrections=args.corrections, dtype=args.dtype)
    trainable = trainable_mask(params, recipe.freeze)
    state = TrainState(0, params, recipe.optimizer(params).init(params))
    out = Path(args.out)
    if args.resume:
        state, saved = load_training(out, config, state.opt_state)
        changed = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
        if changed:
            raise ValueError(f"resume: the run in {str(out)!r} used other settings (saved, now): {changed}")
        print(f"resumed {out} at step {state.step}")
    source = None if args.data == "generated" else FolderClips(args.data, args.format, args.frames, size)
    held_out = held_out_clips(args.eval_clips, max(args.frames, 8), size) if args.eval_every else []
    slots = args.objects_per_step or 2 * args.batch_clips
    print(f"training {args.config} ({_count(params) / 1e6:.2f} M params, {_count(params, trainable) / 1e6:.2f} M "
          f"trainable) on {args.data}: {args.steps} steps of {args.batch_clips} clips x {args.frames} frames, "
          f"{slots} object slots, {size} px", flush=True)
    params, opt_state = state.params, state.opt_state
    meter = _Meter(args.steps, args.batch_clips * args.frames)

    def batch_for(step):  # drawn from (seed, step): a resumed run sees the same clips and prompts
        rng = np.random.default_rng([args.seed, step, 1])
        clips = (generated_clips(args.seed, step, args.batch_clips, args.frames, size) if source is None
                 else source.sample(rng, args.batch_clips))
        return with_memory_plan(config, make_batch(clips, slots, "random", rng, mix))

    step = state.step
    batch = batch_for(step)
    while step < args.steps:
        key = jax.random.fold_in(jax.random.PRNGKey(args.seed), step)
        lr = learning_rate(step, args.lr, args.warmup, args.steps)
        params, opt_state, metrics = train_step(config, recipe, params, opt_state, batch, key, lr)
        step += 1
        batch = batch_for(step) if step < args.steps else None  # made while the step computes
        meter.update(step, metrics, lr)
        last = step == args.steps
        if args.save_every and (step % args.save_every == 0 or last):
            save_training(out, TrainState(step, params, opt_state), config, settings)
        if args.eval_every and (step % args.eval_every == 0 or last):
            started = time.perf_counter()
            scores = evaluate_generated(config, params, held_out)
            meter.pause(time.perf_counter() - started)
            print(f"\nheld-out ({len(held_out)} clips) at step {step}: {format_scores(scores)}", flush=True)
    meter.close()
    return TrainState(step, params, opt_state)


def evaluate_checkpoint(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """`sam2-jax train --eval-only --init DIR`: J&F of a checkpoint (its own config) on `--eval-clips`
    held-out generated clips of `--frames` (at least 8) frames, from click, box and mask prompts on frame 0,
    beside the copy-the-first-mask baseline."""
    if not args.init:
        raise ValueError("eval-only: expected --init DIR (the checkpoint to score), got none")
    folder = weights.resolve_pretrained(args.init)
    config = build_config(folder, args.image_size)
    params = load_params(folder, config)
    num_frames = max(args.frames, 8)
    clips = held_out_clips(args.eval_clips, num_frames, config.image_size)
    started = time.perf_counter()
    scores = evaluate_generated(config, params, clips)
    print(f"held-out ({len(clips)} clips of {num_frames} frames, {time.perf_counter() - started:.0f} s): "
          f"{format_scores(scores)}", flush=True)
    return scores


def _count(params, mask=None) -> int:
    leaves = jax.tree_util.tree_leaves(params)
    keep = jax.tree_util.tree_leaves(mask) if mask is not None else [True] * len(leaves)
    return sum(int(np.prod(x.shape)) for x, k in zip(leaves, keep) if k)


def default_prompt_mix(frames: int) -> PromptMix:
    """The original trainer's mix; single images get clicks and boxes only (a mask prompt is its own output)."""
    return PromptMix(0.5, 0.5, 0.0) if frames == 1 else PromptMix()


def _prompt_mix(text: str | None, frames: int) -> PromptMix:
    if text is None:
        return default_prompt_mix(frames)
    try:
        click, box, mask = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"prompt_mix: expected three numbers CLICK,BOX,MASK, got {text!r}") from None
    return PromptMix(click, box, mask)


class _Meter:
    """The progress line: step, losses (means since the last line), learning rate, frames/s, time left.
    Rewritten in place on a terminal; a new line every `every` steps otherwise (log files)."""

    def __init__(self, steps: int, frames_per_step: int, every: int = 25):
        self.steps, self.frames_per_step, self.every = steps, frames_per_step, every
        self.sums, self.count, self.start, self.first_step = {}, 0, None, None
        self.tty = sys.stdout.isatty()

    def update(self, step: int, metrics: dict, lr: float) -> None:
        metrics = {k: float(v) for k, v in metrics.items()}  # waits for the step
        if self.start is None:  # the first step compiles: speed counts from its end
            self.start, self.first_step = time.perf_counter(), step
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        if not (self.tty or step % self.every == 0 or step == self.steps):
            return
        done = step - self.first_step
        elapsed = time.perf_counter() - self.start
        rate = done * self.frames_per_step / elapsed if done else 0.0
        left = (self.steps - step) * elapsed / done if done else 0.0
        mean = {k: v / self.count for k, v in self.sums.items()}
        line = (f"step {step}/{self.steps}  loss {mean['loss']:.3f} (focal {mean['focal']:.4f} dice {mean['dice']:.3f} "
                f"iou {mean['iou']:.3f} score {mean['score']:.3f})  |g| {mean['grad_norm']:.2f}  lr {lr:.2e}  "
                f"{rate:.1f} frames/s  {int(elapsed // 60)}:{int(elapsed % 60):02d} elapsed, "
                f"{int(left // 60)}:{int(left % 60):02d} left")
        if self.tty:
            print("\r" + line, end="", flush=True)
        else:
            print(line, flush=True)
        if not self.tty or step % self.every == 0:
            self.sums, self.count = {}, 0

    def pause(self, seconds: float) -> None:
        """Leave `seconds` (evaluation) out of the speed."""
        if self.start is not None:
            self.start += seconds

    def close(self) -> None:
        if self.tty:
            print()
