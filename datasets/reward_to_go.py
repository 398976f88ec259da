"""Monte-Carlo reward-to-go for Cal-QL's calibration bound.

One function serves offline demonstrations and online episodes, so both phases bound the
critic with the same numbers. Rules (see docs/data.md):

* rewards are transformed first: r' = scale * r + bias;
* a segment ends at a terminal (done = 1) or at the end of the trajectory (a time limit,
  which is *not* a terminal);
* a segment whose every r' equals the failure reward r_neg = scale * 0 + bias never
  succeeded, and every step of it gets r_neg / (1 - gamma): the value of failing forever.
  The short finite sum would be far too high and the "lower bound" would push Q up;
* otherwise G_t = r'_t + gamma * (1 - d_t) * G_{t+1}, with G after the segment = 0.
"""
from __future__ import annotations

import numpy as np


def transform_rewards(rewards: np.ndarray, scale: float, bias: float) -> np.ndarray:
    """r' = scale * r + bias, as float32."""
    return (scale * np.asarray(rewards, dtype=np.float64) + bias).astype(np.float32)


def fail_forever_value(gamma: float, bias: float) -> float:
    """G of a segment that never succeeded: the failure reward r_neg = scale * 0 + bias, forever."""
    return bias / (1.0 - gamma)


def reward_to_go(
    rewards: np.ndarray,
    terminals: np.ndarray,
    gamma: float,
    scale: float = 1.0,
    bias: float = 0.0,
) -> np.ndarray:
    """Reward-to-go of every step of ONE trajectory (raw rewards in, float32 G out).

    `terminals[t]` is 1 where step t ended the episode for real (task success); the final
    step may be a terminal or a time-limit cut. Several terminals split the trajectory into
    segments, each computed on its own.
    """
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    terminals = np.asarray(terminals).reshape(-1).astype(bool)
    if rewards.shape != terminals.shape:
        raise ValueError(
            f"reward_to_go: rewards {rewards.shape} and terminals {terminals.shape} differ in length"
        )
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"reward_to_go: gamma must be in [0, 1), got {gamma}")
    transformed = scale * rewards + bias
    failure_reward = bias  # scale * 0 + bias
    returns = np.zeros_like(transformed)
    ends = np.flatnonzero(terminals)
    if len(transformed) and (len(ends) == 0 or ends[-1] != len(transformed) - 1):
        ends = np.append(ends, len(transformed) - 1)
    start = 0
    for end in ends:
        segment = transformed[start : end + 1]
        if np.all(segment == failure_reward):
            returns[start : end + 1] = fail_forever_value(gamma, failure_reward)
        else:
            running = 0.0
            for t in range(end, start - 1, -1):
                # Inside a segment only its last step can be a terminal; the (1 - d) factor
                # there is what zeroes G beyond it.
                running = transformed[t] + gamma * (0.0 if terminals[t] else 1.0) * running
                returns[t] = running
        start = end + 1
    return returns.astype(np.float32)
