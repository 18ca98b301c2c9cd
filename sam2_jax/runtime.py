"""Process-wide settings that every layer may use: the per-user cache folder, the persistent compilation cache
and the return of the C heap's free pages to the OS."""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

CACHE_FOLDER = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sam2-jax"
"""The per-user cache folder: compiled programs (`jax/`) and per-machine choices (`attention.json`)."""
DEFAULT_COMPILE_CACHE = CACHE_FOLDER / "jax"


_compile_cache_chosen = False  # whether a program (the command line) chose the cache: then no default


def enable_compile_cache(folder: str) -> None:
    """Keep compiled programs in `folder` across runs ("off": do not); JAX's own setting wins if made."""
    import jax

    global _compile_cache_chosen
    _compile_cache_chosen = True
    if str(folder) != "off" and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(folder))


def default_compile_cache() -> None:
    """The library's default, applied when a model is made: JAX's persistent compilation cache in
    `DEFAULT_COMPILE_CACHE` (`~/.cache/sam2-jax/jax`), so that a new process loads the programs an earlier one
    compiled. Not when JAX's own `jax_compilation_cache_dir` is set, a program chose (`enable_compile_cache`),
    or $SAM2_JAX_COMPILE_CACHE names another folder or is "off" (the opt-out)."""
    if not _compile_cache_chosen:
        enable_compile_cache(os.environ.get("SAM2_JAX_COMPILE_CACHE", str(DEFAULT_COMPILE_CACHE)))


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_host_memory() -> None:
    """Give the C heap's free pages back to the OS (glibc's `malloc_trim`; nothing elsewhere).

    Compilation leaves much of glibc's heap free, and XLA's large transient host buffers fragment it: over a
    long stream RSS crept up by 5% while the bytes in use stayed flat. Sessions call this every 100 tracked
    frames (`python -m benchmarks.soak`)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class HeapTrimmer:
    """Calls `release_free_host_memory` every `every` tracked frames (all sessions together)."""

    def __init__(self, every: int = 100):
        self.every, self.frames = every, 0

    def count(self, frames: int) -> None:
        """Count `frames` more tracked frames; trim the heap once `every` have been counted."""
        self.frames += frames
        if self.frames >= self.every:
            self.frames = 0
            release_free_host_memory()


heap_trimmer = HeapTrimmer()
