"""DVC's own lock files, checked before the pipeline calls DVC.

A DVC command takes the repository lock `.dvc/tmp/lock` (an flock, which the kernel releases
however the process ends: a file left by a killed DVC is free to take, nothing to clear) and
records the paths it reads and writes, with its pid, in `.dvc/tmp/rwlock` (JSON).

A DVC killed outright (SIGKILL) leaves its entries in the rwlock. DVC 3.67 removes those of
pids that no longer exist by itself, but only on the paths the next command touches, saying so
on its stderr (which the pipeline captures); they are all removed here first, so that the
flow's log names the lock and the dead process. A rwlock left
empty or half-written by a process killed while writing it makes every later DVC command fail
with "JSON structure is corrupted"; such a file is removed. Both only while no DVC process
holds the repository.
"""
from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from granular.runtime.processes import pid_exists
from granular.store.atomic import write_json


class DvcBusy(RuntimeError):
    """Another DVC process holds the repository."""


def repair_locks(repo: Path) -> list[str]:
    """Clear what killed DVC processes left in the repository's rwlock; a line per repair."""
    corrupt = clear_corrupt_rwlock(repo)
    return [corrupt] if corrupt else clear_dead_rwlock_entries(repo)


@contextmanager
def _holding_repository(repo: Path, why: str) -> Iterator[None]:
    """Hold DVC's repository lock (fcntl, as every DVC command takes it), or raise DvcBusy naming `why`."""
    with open(Path(repo) / ".dvc" / "tmp" / "lock", "a") as repo_lock:
        try:
            fcntl.flock(repo_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DvcBusy(f"{why}, but a running DVC command holds {repo}; retry when it ends") from None
        try:
            yield
        finally:
            fcntl.flock(repo_lock, fcntl.LOCK_UN)


def _rwlock(repo: Path) -> Path:
    return Path(repo) / ".dvc" / "tmp" / "rwlock"


def clear_corrupt_rwlock(repo: Path) -> str | None:
    """Remove .dvc/tmp/rwlock when it is not valid JSON; return what was done, or None."""
    rwlock = _rwlock(repo)
    if not rwlock.is_file():
        return None
    text = rwlock.read_text(errors="replace")
    try:
        json.loads(text)
        return None
    except ValueError:
        pass
    with _holding_repository(repo, f"{rwlock} is corrupted"):
        rwlock.unlink()
    shown = "empty" if not text.strip() else f"{len(text)} bytes of broken JSON"
    return f"removed DVC's lock file {rwlock} ({shown}), left by a process that was killed while writing it"


def _dead_entries(lock: dict) -> list[tuple[str, str, dict]]:
    """(mode, path, entry) for every entry of the rwlock whose process no longer exists."""
    found = []
    for mode, paths in lock.items():
        for path, entries in (paths or {}).items():
            for entry in entries if isinstance(entries, list) else [entries]:
                if isinstance(entry, dict) and isinstance(entry.get("pid"), int) and not pid_exists(entry["pid"]):
                    found.append((mode, path, entry))
    return found


def _without(lock: dict, dead: list[tuple[str, str, dict]]) -> dict:
    """The rwlock with the `dead` entries taken out, and paths left with no entry dropped."""
    kept = {}
    for mode, paths in lock.items():
        kept[mode] = {}
        for path, entries in (paths or {}).items():
            if isinstance(entries, list):
                entries = [e for e in entries if (mode, path, e) not in dead]
                if entries:
                    kept[mode][path] = entries
            elif (mode, path, entries) not in dead:
                kept[mode][path] = entries
    return kept


def clear_dead_rwlock_entries(repo: Path) -> list[str]:
    """Remove from .dvc/tmp/rwlock the entries of processes that no longer exist (a DVC killed
    before it could release them); a line per process, naming the lock, the pid and its command."""
    rwlock = _rwlock(repo)
    if not rwlock.is_file() or not _dead_entries(_read(rwlock)):
        return []
    with _holding_repository(repo, f"{rwlock} names processes that no longer exist"):
        lock = _read(rwlock)  # again: a DVC command may have changed it before we held the repository
        dead = _dead_entries(lock)
        if dead:
            write_json(rwlock, _without(lock, dead))
    by_process: dict[tuple[int, str], list[str]] = {}
    for mode, path, entry in dead:
        by_process.setdefault((entry["pid"], entry.get("cmd", "?")), []).append(f"{mode} {path}")
    return [
        f"removed from DVC's lock file {rwlock} the locks of process {pid} ({cmd!r}), which no longer "
        f"exists (killed before it could release them): {', '.join(held)}"
        for (pid, cmd), held in by_process.items()
    ]


def _read(rwlock: Path) -> dict:
    try:
        lock = json.loads(rwlock.read_text())
    except (OSError, ValueError):  # gone, or corrupt: clear_corrupt_rwlock's case
        return {}
    return lock if isinstance(lock, dict) else {}
