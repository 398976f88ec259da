"""precision=auto: bf16 only where the device computes it natively."""
from __future__ import annotations

import torch

from calql_vision.hardware import choose_precision, cpu_flags

CPU = torch.device("cpu")


def test_auto_takes_bf16_only_on_cpus_with_native_bf16_instructions():
    assert choose_precision("auto", CPU, {"avx2", "fma"})[0] == "fp32"  # AVX2-only: bf16 is emulated
    assert "emulated" in choose_precision("auto", CPU, {"avx2"})[1]
    assert choose_precision("auto", CPU, {"avx2", "avx512f", "avx512_bf16"}) == ("bf16", "auto: the CPU has avx512_bf16")
    assert choose_precision("auto", CPU, {"amx_bf16", "avx512_bf16"})[0] == "bf16"
    assert choose_precision("auto", CPU, set())[0] == "fp32"  # unknown CPU: the safe choice


def test_an_explicit_precision_is_kept_whatever_the_hardware():
    assert choose_precision("bf16", CPU, {"avx2"}) == ("bf16", "precision=bf16 as set")
    assert choose_precision("fp32", CPU, {"avx512_bf16"})[0] == "fp32"


def test_cpu_flags_reads_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx2", "amx_bf16"}
    assert cpu_flags(tmp_path / "absent") == set()


def test_make_agent_resolves_auto_as_the_machine_allows():
    from omegaconf import OmegaConf

    from calql_vision.agents import ObsSpec, make_agent
    from calql_vision.algo_configs import CalQLConfig
    from calql_vision.config import EncoderConfig

    algo = OmegaConf.structured(CalQLConfig(hidden_dims=[16]))
    encoder = OmegaConf.structured(EncoderConfig(channels=4, strides=[2], feature_dim=8))
    agent = make_agent(algo, encoder, ObsSpec(("agentview_image",), (3, 16, 16), 3, 2), CPU, "auto")
    assert agent.precision == choose_precision("auto", CPU)[0]


def test_a_cgroup_cpu_quota_is_read_and_unlimited_is_none(tmp_path):
    from calql_vision.hardware import cgroup_cpu_limit

    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert cgroup_cpu_limit(cpu_max) == 1.5
    cpu_max.write_text("max 100000\n")
    assert cgroup_cpu_limit(cpu_max) is None
    assert cgroup_cpu_limit(tmp_path / "absent") is None


def test_threads_auto_is_the_usable_cores_and_an_explicit_value_is_kept():
    import os

    from calql_vision.hardware import choose_threads, usable_cores

    assert choose_threads(3) == (3, "threads=3 as set")
    threads, why = choose_threads(0)
    assert threads == usable_cores() and why.startswith("auto:")
    # Never more than the affinity mask allows, whatever the machine has in total.
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))
