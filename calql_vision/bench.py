"""Measure what bounds training speed on this machine: gradient updates per second, environment
steps per second with rendering, and replay bytes per stored transition.

    python -m calql_vision.bench task=lift_visual batch_size=256 encoder.strides=[2,2,1,1]
    python -m calql_vision.bench algo=rlpd precision=fp32 threads=2
"""
from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import torch

from calql_vision.config import BenchConfig, ConfigError, load_config
from calql_vision.losses import return_range
from calql_vision.startup import run_program

DESCRIPTION = __doc__.split("\n\n")[0] + """

Updates are timed on a synthetic batch of the task's observation and action shapes (no dataset
needed; a task without cameras has a state vector only), for each phase the algorithm has (offline, then online after its switch):
`warmup` untimed updates, then the median of `windows` windows of `window_updates` updates.
The first phase is timed again in the other precision (bf16 / fp32) beside the chosen one.
Environment steps/s are timed for each entry of `num_envs` (worker processes stepped in
lock-step with random actions), with the ratio to the first. They are rendered with
task.render_quality (auto: fast, as a run without a dataset); `python -m calql_vision.bench_render`
times both qualities side by side."""


def observation_sizes(task, egl_device: int | None) -> tuple[int, int]:
    """(proprio or state size, action size) of the task, read off one environment."""
    from envs.vector import EnvWorkers

    with EnvWorkers(task, 1, egl_device=egl_device) as workers:
        return workers.proprio_dim, workers.action_dim


def synthetic_batch(image_keys, image_shape, proprio_dim, action_dim, batch_size, device) -> dict:
    generator = torch.Generator().manual_seed(0)

    def images():
        return {k: torch.randint(0, 256, (batch_size, *image_shape), dtype=torch.uint8, generator=generator).to(device)
                for k in image_keys}

    def floats(*shape, low=-1.0, high=1.0):
        return (torch.rand(*shape, generator=generator) * (high - low) + low).to(device)

    return {
        "obs": images(), "next_obs": images(),
        "proprio": floats(batch_size, proprio_dim), "next_proprio": floats(batch_size, proprio_dim),
        "actions": floats(batch_size, action_dim),
        "rewards": (torch.rand(batch_size, generator=generator) < 0.05).float().to(device) - 1.0,
        "terminals": torch.zeros(batch_size, device=device),
        "truncations": torch.zeros(batch_size, device=device),
        "reward_to_go": floats(batch_size, low=-100.0, high=0.0),
    }


def time_updates(agent, batch, warmup: int, windows: int, window_updates: int, device) -> list[float]:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        agent.update(batch)
    sync()
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(window_updates):
            agent.update(batch)
        sync()
        rates.append(window_updates / (time.perf_counter() - start))
    return rates


def _algo_shape(algo) -> str:
    """The settings that set an update's cost, for the bench's header line."""
    parts = []
    if "num_critics" in algo:
        parts.append(f"{algo.num_critics} critics" + (" with LayerNorm" if algo.critic_layer_norm else ""))
    if "cql_n_actions" in algo:
        parts.append(f"{algo.cql_n_actions} CQL actions per kind")
    if "num_z" in algo:
        parts.append(f"{algo.num_z} Z heads")
    if "expectile" in algo:
        parts.append("2 critics, V head")
    return ", ".join(parts)


def time_env_steps(task, num_envs: int, steps: int, egl_device: int | None = None) -> float:
    """Environment steps/s of `num_envs` workers stepped in lock-step with random actions
    (after one untimed step each, so start-up is not counted)."""
    from envs.vector import EnvWorkers

    rng = np.random.default_rng(0)
    with EnvWorkers(task, num_envs, seed=0, egl_device=egl_device) as workers:
        workers.reset({i: i for i in range(num_envs)})
        seeds = iter(range(num_envs, 10**9))
        done: list[int] = []
        timed = 0
        for t in range(1 + -(-steps // num_envs)):
            if t == 1:
                start = time.perf_counter()
            results = workers.step({i: rng.uniform(-1, 1, size=workers.action_dim) for i in range(num_envs)})
            done = [i for i, result in results.items() if result.done]
            if done:
                workers.reset({i: next(seeds) for i in done})
            timed += num_envs if t >= 1 else 0
        return timed / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = load_config(BenchConfig, argv, "calql_vision.bench", DESCRIPTION)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from calql_vision.agents import ObsSpec, algorithm, make_agent
    from calql_vision.hardware import choose_precision, choose_threads, egl_device
    from calql_vision.replay import FrameReplay
    from calql_vision.hardware import resolve_device
    from encoders.factory import count_parameters

    threads, threads_why = choose_threads(cfg.threads)
    torch.set_num_threads(threads)
    device = resolve_device(cfg.device)
    task = cfg.task
    image_keys = [f"{camera}_image" for camera in task.cameras]
    image_shape = (3, task.image_size, task.image_size)
    proprio_dim, action_dim = observation_sizes(task, egl_device(device))
    spec = ObsSpec(tuple(image_keys), image_shape, proprio_dim, action_dim)
    precision, why = choose_precision(cfg.precision, device)
    agent = make_agent(cfg.algo, cfg.encoder, spec, device, precision)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; precision {precision} ({why}); torch threads {threads} ({threads_why})")
    shape = f", channels {cfg.encoder.channels}, strides {list(cfg.encoder.strides)}" if cfg.encoder.kind == "conv" else ""
    seen = f"images {len(image_keys)}x{image_shape} + {proprio_dim} proprio" if image_keys else f"state vector {proprio_dim}"
    print(f"encoder: {cfg.encoder.kind} {count_parameters(agent.encoder):,} parameters{shape}; {seen}; "
          f"batch {cfg.batch_size}")
    print(f"algorithm: {cfg.algo.name} ({_algo_shape(cfg.algo)})")
    # Each phase the algorithm has, with its own losses: an online update may differ (WSRL's
    # high UTD and plain SAC critic, ACA's critics on R + w c(log pi_0)).
    phases = (["offline"] if algorithm(cfg.algo.name).pretrains else []) + ["online"]
    def batch_for(learner) -> dict:  # an online update may take several slices (critic_updates)
        rows = cfg.batch_size * learner.batch_slices
        batch = synthetic_batch(image_keys, image_shape, proprio_dim, action_dim, rows, device)
        learner.return_range = return_range(float(batch["rewards"].min()), float(batch["rewards"].max()),
                                            cfg.algo.discount)  # what algo.clip_bootstrap clips to
        return batch

    chosen_rate = None
    for phase in phases:
        if phase == "online":
            agent.on_online_start()
        rates = time_updates(agent, batch_for(agent), cfg.warmup, cfg.windows, cfg.window_updates, device)
        chosen_rate = chosen_rate or statistics.median(rates)
        print(f"gradient updates/s, {phase}: {statistics.median(rates):.2f} (median of {cfg.windows} windows; "
              f"min {min(rates):.2f}, max {max(rates):.2f}; one update = {agent.batch_slices} critic and 1 actor update)")
    if cfg.compare_precision:
        # The same first phase in the other precision, so the choice can be checked in one run.
        other = "fp32" if agent.precision == "bf16" else "bf16"
        rival = make_agent(cfg.algo, cfg.encoder, spec, device, other)
        if phases[0] == "online":
            rival.on_online_start()
        rival_rate = statistics.median(time_updates(rival, batch_for(rival), cfg.warmup, cfg.windows,
                                                    cfg.window_updates, device))
        print(f"gradient updates/s, {phases[0]}, precision {other} for comparison: {rival_rate:.2f} "
              f"(the chosen {agent.precision} runs {chosen_rate / rival_rate:.2f}x that)")

    from envs.render_quality import resolve_render_quality

    quality = resolve_render_quality(task.render_quality)
    base_rate = None
    for num_envs in cfg.num_envs:
        try:
            rate = time_env_steps(task, num_envs, cfg.env_steps, egl_device(device))
        except ConfigError as error:  # more workers than the memory holds: said, the rest still timed
            print(f"environment steps/s, num_envs={num_envs}: not timed: {error}")
            continue
        base_rate = base_rate or rate
        seen = (f"{len(task.cameras)} camera(s) at {task.image_size}px, render_quality={quality}, rendering included"
                if task.cameras else "low-dim observations, nothing rendered")
        print(f"environment steps/s, num_envs={num_envs}: {rate:.1f} ({task.env_name}, {seen}; "
              f"{rate / base_rate:.2f}x num_envs={cfg.num_envs[0]})")

    replay = FrameReplay(1024, {k: image_shape for k in image_keys}, proprio_dim, action_dim)
    per_transition = replay.bytes_per_transition(mean_episode_length=task.horizon)
    print(f"replay bytes per stored transition: {per_transition:,.0f} (episodes of {task.horizon} steps; "
          f"frames stored once, next_obs by index) -> {per_transition * 1e6 / 2**30:.1f} GiB per million")
    return 0


if __name__ == "__main__":
    sys.exit(run_program(main))
