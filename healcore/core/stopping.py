"""Being asked to stop: SIGTERM/SIGINT handled for the length of a block, the previous handlers restored after.

A run stops between optimizer steps (run.StopFlag), a grid stops handing out runs (executors), a Ray driver
cancels its tasks (grids/ray_cluster.py): each installs its handler through here.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def on_stop_signals(handler: Callable[[int], None], signals=STOP_SIGNALS) -> Iterator[None]:
    """handler(signum) on the signals inside the block. Only the main thread can install handlers: elsewhere (a
    thread of the dashboard, a Ray task's thread) the block runs without them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, lambda signum, frame: handler(signum)) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def raise_interrupt(signum: int) -> None:
    """A handler that turns the signal into KeyboardInterrupt (SIGTERM included), for code that cleans up on it."""
    raise KeyboardInterrupt


class SignalFlag:
    """`requested` turns true on SIGTERM/SIGINT inside the `with` block (main thread; elsewhere never)."""

    def __init__(self) -> None:
        self.requested = False
        self._signals = on_stop_signals(self._set)

    def _set(self, signum: int) -> None:
        self.requested = True

    def __enter__(self) -> "SignalFlag":
        self._signals.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._signals.__exit__(*exc)
