"""Policy rollouts on fixed scene seeds (deterministic, or stochastic with per-episode noise)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


def evaluation_seed(run_seed: int) -> int:
    """First scene seed of a run's evaluations: far from the demo (0, 1, ...) and training seeds."""
    return 1_000_000 + 1000 * run_seed


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    episode_return: float
    length: int
    # The gripper held the object at some step (the env's info "grasped"): tells an episode
    # that never took hold of the object from one that held it and failed to lift or place it.
    grasped: bool


@dataclass
class EvaluationResult:
    episodes: list[EpisodeResult] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return float(np.mean([e.success for e in self.episodes]))

    @property
    def grasp_rate(self) -> float:
        return float(np.mean([e.grasped for e in self.episodes]))

    @property
    def mean_return(self) -> float:
        return float(np.mean([e.episode_return for e in self.episodes]))

    @property
    def mean_length(self) -> float:
        return float(np.mean([e.length for e in self.episodes]))


def evaluate_policy(
    envs,
    act: Callable[[dict, int], np.ndarray],
    episodes: int,
    seed: int,
    on_frame: Callable[[int, dict, dict, Any], None] | None = None,
    on_episode_end: Callable[[int, EpisodeResult], None] | None = None,
) -> EvaluationResult:
    """Roll out `act` (one obs and its episode's index -> action) for `episodes` episodes with
    scene seeds seed, seed+1, ... on the "eval" environments of `envs` (envs.vector.EnvWorkers).
    The episode index lets a stochastic policy draw each episode's noise from its own stream.

    The episodes are spread over the workers (each takes the next episode when its own ends)
    and stepped in lock-step. The policy is called once per observation, not once per batch:
    a batched forward pass rounds differently with the batch's size (about 1e-9 here), and
    an episode's result must not depend on which episodes shared its steps. So the result is
    the same whatever the number of workers. `on_frame(episode, obs, info, renderer)` sees
    every observation (renderer.render(camera, size) draws that episode's scene, for videos);
    `on_episode_end(episode, result)` is called as each one ends.
    """
    results: dict[int, EpisodeResult] = {}
    running: dict[int, list] = {}  # worker -> [episode, obs, return, length, grasped so far]
    next_episode = 0

    def start(workers: list[int]) -> None:
        nonlocal next_episode
        seeds = {}
        for worker in workers:
            if next_episode < episodes:
                running[worker] = [next_episode, None, 0.0, 0, False]
                seeds[worker] = seed + next_episode
                next_episode += 1
        for worker, obs in envs.reset(seeds, role="eval").items():
            running[worker][1] = obs
            if on_frame:
                on_frame(running[worker][0], obs, {"success": False}, envs.renderer(worker, "eval"))

    start(list(range(envs.num_envs)))
    while running:
        actions = {worker: act(state[1], state[0]) for worker, state in running.items()}
        finished = []
        for worker, step in envs.step(actions, role="eval").items():
            state = running[worker]
            state[1:] = [step.obs, state[2] + step.reward, state[3] + 1, state[4] or bool(step.info["grasped"])]
            if on_frame:
                on_frame(state[0], step.obs, step.info, envs.renderer(worker, "eval"))
            if step.done:
                episode = state[0]
                results[episode] = EpisodeResult(seed + episode, bool(step.info["success"]), *state[2:])
                if on_episode_end:
                    on_episode_end(episode, results[episode])
                del running[worker]
                finished.append(worker)
        if finished:
            start(finished)
    return EvaluationResult([results[i] for i in range(episodes)])
