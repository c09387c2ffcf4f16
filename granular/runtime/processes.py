"""Which process wrote a record, and whether that very process still runs.

A pid alone cannot say: once a process ends, the kernel gives its pid to the next one. So a
process is identified by its host, its pid and its start time, the 22nd field of
/proc/<pid>/stat (clock ticks after boot), which a later process with the same pid cannot share.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessIdentity:
    """One process, told apart from a later one given the same pid."""

    host: str
    pid: int
    start: str | None  # its start time in clock ticks after boot; None where /proc is not there

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


def _stat_fields(pid: int, proc: Path) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the process name (field 3 on), or None: no such process."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The name in parentheses (field 2) may hold spaces and ')': the fields after it start at the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def start_ticks(pid: int, proc: Path = PROC) -> str | None:
    """When process `pid` started (clock ticks after boot), or None when there is no such process."""
    fields = _stat_fields(pid, proc)
    return fields[19] if fields else None  # starttime, field 22


def current_process() -> ProcessIdentity:
    pid = os.getpid()
    return ProcessIdentity(host=socket.gethostname(), pid=pid, start=start_ticks(pid))


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def still_running(process: ProcessIdentity, proc: Path = PROC) -> bool:
    """Whether `process`, on this host, is still running: its pid exists, is not a zombie (ended,
    not yet reaped by its parent) and, where its start time is known, belongs to the process
    that started then, not to a later one given the same pid."""
    if not pid_exists(process.pid):
        return False
    fields = _stat_fields(process.pid, proc)
    if fields is None:
        return True  # /proc cannot tell more: the pid is all there is to go by
    if fields[0] == "Z":  # state, field 3
        return False
    return process.start is None or fields[19] == process.start
