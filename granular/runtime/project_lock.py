"""One pipeline run at a time writes a project's outputs (data/, dvc.lock, the task cache).

A run holds an exclusive `flock` on `<root>/.granular/run.lock` while it writes, and records
in that file who it is (pid, host, flow run name, since when), so that a run that finds the
project held can say whom it waits for. The kernel releases a flock when its holder's process
ends, however it ends (SIGKILL too): there is never a stale lock to clear by hand.

Other locks in the project are left to their owners: DVC takes its own repository lock
(`.dvc/tmp/lock`, see granular/runtime/dvc_state.py), and the SQLite MLflow store is created under a
lock of its own (tasks/tracking.py::open_experiment).

The lock is per project root and per machine: runs on other machines sharing the project over
a network file system are guarded only as far as that file system honours flock.

Not the `filelock` package: what is ours here is the holder's record in the lock file and the
wait loop that names the holder and gives up at the limit; filelock would replace only the
flock call and the descriptor's opening (about ten lines), with an acquire-with-timeout loop of
the same length around it, and a dependency more.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from granular.store.paths import ProjectPaths

POLL_S = 0.5  # how often a waiting run tries again


class ProjectBusy(RuntimeError):
    """Another run held the project for longer than this run was allowed to wait."""


@dataclass(frozen=True)
class Holder:
    """Who holds the project: written into the lock file by the run that holds it."""

    pid: int
    host: str
    run: str  # the flow run's name
    since: float  # seconds since the epoch

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"run {self.run!r} (pid {self.pid} on {self.host}, since {started})"


def read_holder(lock_file: Path) -> Holder | None:
    """The holder a lock file names, or None when it names none (free, or being written)."""
    try:
        return Holder(**json.loads(lock_file.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _describe(holder: Holder | None) -> str:
    return holder.describe() if holder else "another run (which has not written its name yet)"


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _wait_for_lock(fd: int, paths: ProjectPaths, timeout_s: float | None, log: Callable[[str], None]) -> None:
    """Take the lock, waiting at most `timeout_s` (None: as long as it takes); say whom this
    run waits for, again whenever that changes."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    said = None
    while not _try_lock(fd):
        holder = read_holder(paths.run_lock)  # None for the moment between a holder's lock and its name
        if deadline is not None and time.monotonic() >= deadline:
            raise ProjectBusy(
                f"project {paths.root} is held by {_describe(holder)}; gave up waiting after "
                f"orchestration.lock_timeout_s = {timeout_s:g} s: wait for that run to end (or stop it), "
                "or raise the limit"
            )
        if holder is not None and holder != said:
            log(f"project {paths.root} is held by {holder.describe()}: waiting for it to finish (lock {paths.run_lock})")
            said = holder
        time.sleep(POLL_S)


@contextmanager
def hold_project(
    paths: ProjectPaths, run: str, timeout_s: float | None = None, log: Callable[[str], None] = print,
) -> Iterator[Holder]:
    """Hold the project's run lock for the block, as `run` (the flow run's name). A held lock
    is waited for, at most `timeout_s` seconds (None: no limit), after which ProjectBusy names
    its holder. Not re-entrant: a second hold_project on one project, even in the same
    process, waits for the first."""
    lock_file = paths.run_lock
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    # Opened without truncating: the file names the current holder, which must stay readable.
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _wait_for_lock(fd, paths, timeout_s, log)
        holder = Holder(pid=os.getpid(), host=socket.gethostname(), run=run, since=time.time())
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(holder)).encode(), 0)
        try:
            yield holder
        finally:
            os.ftruncate(fd, 0)  # names no one once free; a killed holder's name is overwritten by the next
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
