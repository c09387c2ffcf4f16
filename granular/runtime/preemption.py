"""SIGTERM (a preempted machine, a cancelled job) and SIGINT (Ctrl-C) as requests to stop at the
next safe point.

While a training loop runs in the main thread, either signal is only recorded; the loop finishes
the batch in flight, saves a checkpoint and raises Preempted (SIGTERM) or Interrupted (SIGINT).
Deferring SIGINT matters as much as SIGTERM: a KeyboardInterrupt raised inside an MLflow write
to its SQLite store leaves that write's transaction open, and every later write of the process,
the runs' KILLED status included, then fails with "database is locked".

A signal that comes after the loop's last look is delivered again as the block ends, to the
handler that was there before (Python's default, or Prefect's flow engine). A loop in another
thread cannot own the signals; it still leaves the checkpoint of its last finished epoch.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []  # the stop signals that came within the block, first first


class Preempted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint; a rerun resumes from it."""


class Interrupted(KeyboardInterrupt):
    """Training stopped on SIGINT after saving a checkpoint; a rerun resumes from it."""


def requested() -> bool:
    return bool(_received)


def stop(where: str) -> BaseException:
    """The exception that ends a training stopped by the signal received, saying `where`."""
    if _received[0] == signal.SIGINT:
        return Interrupted(f"interrupted (SIGINT) {where}")
    return Preempted(f"stopped on SIGTERM {where}")


@contextmanager
def deferred_stop_signals() -> Iterator[None]:
    """Within this block (in the main thread), SIGTERM and SIGINT are recorded instead of acted on."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: _received.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if _received:  # came after the loop's last look: the handler from before acts on it now
        signal.raise_signal(_received[0])
