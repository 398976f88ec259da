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


# Resident memory of one environment worker process (robosuite, MuJoCo and their imports),
# measured on the 2-core AMD EPYC machine with the pinned packages: 0.86 GB for a low-dim
# task, 1.08-1.15 GB with a camera (Mesa's renderer), rounded up for what grows while running.
WORKER_BYTES = {"low_dim": 1.0e9, "camera": 1.5e9}
LEARNER_RESERVE_BYTES = 2.0e9  # kept free for the learner itself (or the collector's writer)


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable in bytes; None where the file or the line is missing (not Linux)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_worker_memory(num_envs: int, cameras: bool, available: int | None = None) -> None:
    """A ConfigError, before any worker starts, when num_envs workers cannot fit in the
    available memory: a typo (num_envs=64) would otherwise take the machine down with it."""
    from calql_vision.config import ConfigError

    available = available_memory() if available is None else available
    if available is None or num_envs <= 1:
        return
    per_worker = WORKER_BYTES["camera" if cameras else "low_dim"]
    fit = max(1, int((available - LEARNER_RESERVE_BYTES) // per_worker))
    if num_envs > fit:
        raise ConfigError(f"num_envs={num_envs}: an environment worker takes about {per_worker / 1e9:.1f} GB and "
                          f"{available / 1e9:.1f} GB is available ({LEARNER_RESERVE_BYTES / 1e9:.0f} GB kept for the "
                          f"learner), so at most {fit} fit here; expected num_envs <= {fit}")


def resolve_device(name: str) -> torch.device:
    """`device=` to a torch device: auto is CUDA when present; a CUDA device without CUDA is a ConfigError."""
    import torch

    from calql_vision.config import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    return device
