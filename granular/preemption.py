"""SIGTERM (a preempted machine, a cancelled job) as a request to stop at the next safe point.

While a training loop runs in the main thread, SIGTERM only raises a flag; the loop finishes the
batch in flight, saves a checkpoint and raises Preempted. Before and after, SIGTERM is handled
as it was (by Python's default, or by Prefect's flow engine). A loop in another thread cannot
own the signal; it still leaves the checkpoint of its last finished epoch.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_requested = threading.Event()


class Preempted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint; a rerun resumes from it."""


def requested() -> bool:
    return _requested.is_set()


@contextmanager
def deferred_sigterm() -> Iterator[None]:
    """Within this block (in the main thread), SIGTERM sets the flag instead of ending the process."""
    _requested.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: _requested.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
