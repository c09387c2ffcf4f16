"""DVC's own lock files, checked before the pipeline calls DVC.

DVC clears lock entries of dead processes by itself, but a read/write lock file left empty or
half-written by a killed process makes every later DVC command fail with "JSON structure is
corrupted". Such a file is removed here, and only while no DVC process holds the repository.
"""
from __future__ import annotations

import fcntl
import json
from pathlib import Path


class DvcBusy(RuntimeError):
    """Another DVC process holds the repository."""


def clear_corrupt_rwlock(repo: Path) -> str | None:
    """Remove .dvc/tmp/rwlock when it is not valid JSON; return what was done, or None."""
    tmp = Path(repo) / ".dvc" / "tmp"
    rwlock = tmp / "rwlock"
    if not rwlock.is_file():
        return None
    text = rwlock.read_text(errors="replace")
    try:
        json.loads(text)
        return None
    except ValueError:
        pass
    with open(tmp / "lock", "a") as repo_lock:  # the lock every DVC command takes (fcntl)
        try:
            fcntl.flock(repo_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DvcBusy(f"{rwlock} is corrupted, but a running DVC command holds {repo}; retry when it ends") from None
        try:
            rwlock.unlink()
        finally:
            fcntl.flock(repo_lock, fcntl.LOCK_UN)
    shown = "empty" if not text.strip() else f"{len(text)} bytes of broken JSON"
    return f"removed DVC's lock file {rwlock} ({shown}), left by a process that was killed while writing it"
