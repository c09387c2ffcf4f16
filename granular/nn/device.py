"""The one place where device, threads and precision are decided."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None  # bf16 on CUDA, full precision elsewhere

    @property
    def name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"{self.device.type} ({torch.get_num_threads()} threads)"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def concurrent_trainings(threads_per_training: int | None) -> int:
    """How many trainings can run at once without contending: one per GPU; on the CPU, as many
    as the cores hold at `threads_per_training` threads each (None: all cores, so one)."""
    if torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, usable_cores() // (threads_per_training or usable_cores()))


def select_runtime(threads: int | None = None, gpu: int = 0) -> Runtime:
    """CUDA (GPU number `gpu`) when present, then Apple MPS, then the CPU with its thread count set."""
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return Runtime(torch.device("cuda", gpu % torch.cuda.device_count()), torch.bfloat16)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return Runtime(torch.device("mps"), None)
    torch.set_num_threads(threads or usable_cores())
    return Runtime(torch.device("cpu"), None)
