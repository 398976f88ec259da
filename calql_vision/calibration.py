"""Calibration snapshots: the critic's Q(s, a) next to the Monte-Carlo reward-to-go G.

Written by the trainer at the offline-to-online switch and at the end of training, on
held-out demonstrations (the dataset's `valid` mask), on online episodes and on a sample of
the training data, so `calql_vision.plot` can draw Q against G without loading a model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from calql_vision.atomic_file import atomic_file

MAX_POINTS = 2000  # per source: enough for a scatter plot, cheap to compute


def q_and_return(agent, replay, rng: np.random.Generator, device, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """min(Q1, Q2)(s, a) and G for up to MAX_POINTS transitions of `replay` (none if empty)."""
    if replay is None or len(replay) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    indices = np.arange(replay.valid_start, replay.num_transitions_added)
    if len(indices) > MAX_POINTS:
        indices = np.sort(rng.choice(indices, MAX_POINTS, replace=False))
    q_values, returns = [], []
    for start in range(0, len(indices), batch_size):
        batch = replay.gather(indices[start : start + batch_size], device)
        q_values.append(agent.q_values(batch))
        returns.append(batch["reward_to_go"].cpu().numpy())
    return np.concatenate(q_values).astype(np.float32), np.concatenate(returns).astype(np.float32)


def save_calibration(path: Path, phase: str, step: int, env_step: int, **arrays: np.ndarray) -> None:
    """np.savez that never leaves half a file (see atomic_file)."""
    with atomic_file(path) as handle:
        np.savez(handle, phase=np.array(phase), step=np.array(step), env_step=np.array(env_step), **arrays)
