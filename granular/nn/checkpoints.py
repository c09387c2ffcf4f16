"""Resumable training state: written atomically after every epoch (and when preempted), read
back from the newest file that loads and belongs to the same training, never from a torn one."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch

from granular.store.atomic import atomic_path

_NAME = re.compile(r"epoch-(\d+)-step-(\d+)\.pt")
KEEP = 2  # the newest, and the one before it in case the newest is damaged after its rename


def checkpoint_path(folder: Path, epoch: int, step: int) -> Path:
    """The file of the state at `step` batches into `epoch` (step 0: the epoch has not begun)."""
    return Path(folder) / f"epoch-{epoch:04d}-step-{step:07d}.pt"


def _newest_first(folder: Path) -> list[Path]:
    found = [(tuple(map(int, m.groups())), p) for p in Path(folder).glob("epoch-*.pt") if (m := _NAME.fullmatch(p.name))]
    return [path for _, path in sorted(found, reverse=True)]


def save_state(folder: Path, epoch: int, step: int, state: dict) -> Path:
    """Write the state atomically (temp file, fsync, rename), then drop all but the newest KEEP."""
    target = checkpoint_path(folder, epoch, step)
    with atomic_path(target) as tmp:
        torch.save({**state, "epoch": epoch, "step": step}, tmp)
    for old in _newest_first(folder)[KEEP:]:
        old.unlink(missing_ok=True)
    return target


def load_latest(folder: Path, fingerprint: str, device: torch.device, warn: Callable[[str], None]) -> dict | None:
    """The newest checkpoint of this training (same fingerprint) that loads; a truncated or
    foreign one is reported and skipped for the one before it."""
    for path in _newest_first(folder):
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as error:  # a torn or corrupted file: torch raises several kinds
            warn(f"checkpoint {path} cannot be read ({type(error).__name__}: {error}); trying an older one")
            continue
        if state.get("fingerprint") != fingerprint:
            warn(f"checkpoint {path} belongs to another training (data, settings or code differ); not resumed")
            continue
        return state
    return None

