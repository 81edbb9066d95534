"""Being asked to stop: SIGTERM/SIGINT handled for the length of a block, the previous handlers restored after.

A run stops between optimizer steps (run.StopFlag), a grid stops handing out runs (executors), a Ray driver
cancels its tasks (ray_executor): each installs its handler through here.
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
