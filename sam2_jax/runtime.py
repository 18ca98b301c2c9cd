"""Process-wide settings that every layer may use: the persistent compilation cache and the return of the
C heap's free pages to the OS."""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

DEFAULT_COMPILE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sam2-jax" / "jax"


def enable_compile_cache(folder: str) -> None:
    """Keep compiled programs in `folder` across runs ("off": do not); JAX's own setting wins if made."""
    import jax

    if folder != "off" and not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", str(folder))


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
