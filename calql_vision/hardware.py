"""What the machine runs fast: `precision=auto` picks bf16 only where the hardware computes
it natively, because emulated bf16 is far slower than fp32 (20-26x per update measured on an
AVX2-only AMD EPYC), while native bf16 is faster (1.27x on an AVX512-BF16/AMX Xeon).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: envs.vector asks for the cores without it
    import torch

NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is absent)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def choose_precision(requested: str, device: torch.device, flags: set[str] | None = None) -> tuple[str, str]:
    """(bf16 | fp32, why). `requested` other than auto is kept as given."""
    if requested != "auto":
        return requested, f"precision={requested} as set"
    if device.type == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: {name} computes bf16 natively"
        return "fp32", f"auto: {name} has no native bf16"
    flags = cpu_flags() if flags is None else flags
    native = [flag for flag in NATIVE_BF16_CPU_FLAGS if flag in flags]
    if native:
        return "bf16", f"auto: the CPU has {' and '.join(native)}"
    return "fp32", "auto: the CPU has no avx512_bf16 or amx_bf16 (bf16 would be emulated, many times slower)"


def cgroup_cpu_limit(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> float | None:
    """The CPUs a cgroup v2 quota allows ("200000 100000" -> 2.0); None when unlimited or unknown."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def usable_cores() -> int:
    """Cores this process may really use: its affinity mask, lowered by a cgroup CPU quota.
    torch's own default counts the machine's cores, and a container given 2 of 16 cores
    then runs 16 threads that spend their time waiting for each other."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return cores


def choose_threads(requested: int) -> tuple[int, str]:
    """(torch CPU threads, why). 0 = auto."""
    if requested > 0:
        return requested, f"threads={requested} as set"
    cores = usable_cores()
    return cores, f"auto: {cores} usable core{'s' if cores != 1 else ''} (affinity mask and CPU quota)"


def egl_device(device: torch.device) -> int | None:
    """Render on the learner's GPU when there is one (MuJoCo's EGL picks it by index)."""
    return (device.index or 0) if getattr(device, "type", None) == "cuda" else None
