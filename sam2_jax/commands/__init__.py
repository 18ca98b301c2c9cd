"""The `sam2-jax` command line: `main` (the parser), one module per command, and what they share (options,
prompts, outputs, progress, stopping); `batch` runs beyond one machine with `ray_runner` and `multihost`."""
