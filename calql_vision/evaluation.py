"""Deterministic policy rollouts on fixed seeds."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

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


@dataclass
class EvaluationResult:
    episodes: list[EpisodeResult] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return float(np.mean([e.success for e in self.episodes]))

    @property
    def mean_return(self) -> float:
        return float(np.mean([e.episode_return for e in self.episodes]))

    @property
    def mean_length(self) -> float:
        return float(np.mean([e.length for e in self.episodes]))


def evaluate_policy(
    env,
    act: Callable[[dict], np.ndarray],
    episodes: int,
    seed: int,
    on_frame: Callable[[int, dict, dict], None] | None = None,
) -> EvaluationResult:
    """Roll out `act` (obs -> action) for `episodes` episodes with seeds seed, seed+1, ...

    Evaluation seeds are fixed, so successive evaluations of a run see the same scenes.
    `on_frame(episode, obs, info)` is called on every observation (for videos).
    """
    result = EvaluationResult()
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        if on_frame:
            on_frame(i, obs, info)
        total, length, success = 0.0, 0, False
        while True:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            if on_frame:
                on_frame(i, obs, info)
            total += reward
            length += 1
            if terminated or truncated:
                success = bool(info["success"])
                break
        result.episodes.append(EpisodeResult(seed + i, success, total, length))
    return result
