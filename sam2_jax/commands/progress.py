"""The progress line of `track`: tqdm's bar if installed, else a line of its own."""

from __future__ import annotations

import sys
import time


class _LineProgress:
    """A progress line on stderr (`\\r`-rewritten) for when tqdm is not installed."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.perf_counter()

    def update(self, n: int = 1):
        self.done += n
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        print(f"\rtracking: {self.done}/{self.total} frames, {rate:.2f} frames/s", end="", file=sys.stderr,
              flush=True)

    def close(self):
        print(file=sys.stderr, flush=True)


def progress_bar(total: int):
    """A progress bar on stderr with frames per second: tqdm's if installed, else a simple line."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _LineProgress(total)
    return tqdm(total=total, desc="tracking", unit="frame", file=sys.stderr, dynamic_ncols=True)
