"""The one place where device, threads and precision are decided."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from granular.config import Precision

# CPU features that run bf16 matrix products natively (Intel AMX, AVX-512 BF16), as Linux names
# them in /proc/cpuinfo. Without them, bf16 on a CPU is emulated and slower than fp32.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: full precision (fp32)

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast_dtype == torch.bfloat16 else "fp32"

    @property
    def name(self) -> str:
        if self.device.type == "cuda":
            return f"{torch.cuda.get_device_name(self.device)}, {self.precision}"
        return f"{self.device.type} ({torch.get_num_threads()} threads, {self.precision})"


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


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags the kernel reports for this CPU; none where it reports none (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def autocast_dtype(device: torch.device, precision: Precision, flags: frozenset[str] | None = None) -> torch.dtype | None:
    """bf16 autocast where it is fast, fp32 elsewhere: `auto` picks bf16 on CUDA and on CPUs
    with native bf16 (AMX or AVX-512 BF16), fp32 on other CPUs and on Apple MPS. `fp32` and
    `bf16` are taken as asked."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu" and NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags):
        return torch.bfloat16
    return None


def select_runtime(threads: int | None = None, gpu: int = 0, precision: Precision = "auto") -> Runtime:
    """CUDA (GPU number `gpu`) when present, then Apple MPS, then the CPU with its thread count
    set; the precision as autocast_dtype decides it for that device."""
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        device = torch.device("cuda", gpu % torch.cuda.device_count())
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        torch.set_num_threads(threads or usable_cores())
        device = torch.device("cpu")
    return Runtime(device, autocast_dtype(device, precision))
