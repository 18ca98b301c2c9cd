"""How a command stops when asked to: SIGTERM raises `Terminated` where the command is, as Ctrl-C raises
KeyboardInterrupt, so that the writers delete their unfinished outputs on the way out; `stopped` gives the
one line and the exit status (130 for Ctrl-C, 143 for SIGTERM)."""

from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, as Ctrl-C raises KeyboardInterrupt: the writers delete their
    unfinished outputs on the way out."""


def _raise_terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def sigterm_stops_cleanly():
    """SIGTERM raises `Terminated` meanwhile (in the main thread only, where Python runs signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def stopped(command: str | None, err: KeyboardInterrupt) -> tuple[str, int]:
    """The one line and the exit status of a command stopped by Ctrl-C (130) or SIGTERM (`Terminated`, 143)."""
    terminated = isinstance(err, Terminated)
    return (f"sam2-jax{' ' + command if command else ''}: {'terminated' if terminated else 'interrupted'}; "
            "nothing unfinished was kept", 128 + (signal.SIGTERM if terminated else signal.SIGINT))
