"""Training SAM 2 in JAX: `forward` (the differentiable prompt-then-track pass over a batch planned by
`with_memory_plan`), `losses` (the original trainer's), `batches` (clips, object packing, simulated prompts)
and `loop` (optimiser, jitted step, resumable checkpoints, held-out J&F, and `train`, the run of the
`sam2-jax train` command)."""

from .batches import Batch, PromptMix, generated_clips, held_out_clips, make_batch
from .forward import forward, with_memory_plan
from .loop import (Recipe, TrainState, build_config, evaluate_generated, gradients, learning_rate,
                   load_training, save_training, tiny_generated_config, train, train_step, trainable_mask)

__all__ = ["Batch", "PromptMix", "generated_clips", "held_out_clips", "make_batch", "forward", "with_memory_plan",
           "Recipe", "TrainState", "build_config", "evaluate_generated", "gradients",
           "learning_rate", "load_training", "save_training", "tiny_generated_config", "train",
           "train_step", "trainable_mask"]
