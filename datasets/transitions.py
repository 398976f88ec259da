"""The in-memory form every dataset format loads into: transitions over frames stored once,
and the per-demo plan that the format readers (robomimic HDF5, LeRobot v3) fill in."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from datasets.reward_to_go import reward_to_go, transform_rewards

# Recorded actions come from float64 controllers and may overshoot +-1 by rounding only.
ACTION_TOLERANCE = 1e-6


def first_action_out_of_range(actions: np.ndarray) -> int | None:
    """The first step whose action leaves [-1, 1] beyond rounding, or None: every reader's rule."""
    if np.abs(actions).max() <= 1.0 + ACTION_TOLERANCE:
        return None
    return int(np.abs(actions).max(axis=1).argmax())


class DatasetError(ValueError):
    """A file that does not follow the robomimic layout; the message names file, demo and key."""


class DatasetFileNotFoundError(DatasetError, FileNotFoundError):
    """The dataset path does not exist (catchable as DatasetError or FileNotFoundError)."""




@dataclass
class TransitionDataset:
    """Offline transitions over frames stored once.

    Memory layout (F frames, T transitions; for a demo of N steps):

    * `images[key]` is uint8 (F, C, H, W), upright as stored, channel-first. Demo d owns the
      contiguous frame block [f_d, f_d + N + 1): its N observations s_0..s_{N-1}, then one
      extra frame, the final next observation s_N. Nothing else holds frames.
    * `proprio` is float32 (F, P): the proprio keys concatenated in the given order, per frame.
    * Transition t is (frame obs_index[t], actions[t], rewards[t], frame next_obs_index[t]);
      next_obs_index == obs_index + 1 always, because each demo's frames are consecutive.
    * Files without `next_obs` (MimicGen) have no s_N. A demo whose last done is 1 keeps its
      final transition as a terminal, and its extra frame is a copy of s_{N-1} (a terminal
      target never reads it). Otherwise the final transition is dropped: N - 1 transitions
      over N frames, and the new last transition is a truncation.
    * `terminals` (done = 1: the episode truly ended, no bootstrap) and `truncations` (last
      transition of a demo that did not end in a terminal: bootstrap there) are separate.
    * `rewards` are transformed, r' = reward_scale * r + reward_bias; `reward_to_go` is the
      Monte-Carlo return per demo (datasets.reward_to_go) with the same gamma and transform.
    """

    path: str
    images: dict[str, np.ndarray]
    proprio: np.ndarray
    obs_index: np.ndarray
    next_obs_index: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    truncations: np.ndarray
    reward_to_go: np.ndarray
    demo_names: list[str]
    demo_of_transition: np.ndarray
    proprio_keys: list[str] = field(default_factory=list)
    gamma: float = 0.99
    reward_scale: float = 1.0
    reward_bias: float = 0.0

    def __post_init__(self) -> None:
        # Buffers built by hand (tests, converters) get the same shape contract as loaded ones.
        num_transitions = len(self.actions)
        for name in ("obs_index", "next_obs_index", "rewards", "terminals", "truncations",
                     "reward_to_go", "demo_of_transition"):
            if len(getattr(self, name)) != num_transitions:
                raise ValueError(f"TransitionDataset: {name} has {len(getattr(self, name))} "
                                 f"entries, actions has {num_transitions}")
        for key, frames in self.images.items():
            if frames.dtype != np.uint8 or frames.ndim != 4 or len(frames) != len(self.proprio):
                raise ValueError(f"TransitionDataset: images[{key!r}] must be uint8 (F, C, H, W) "
                                 f"with F = {len(self.proprio)}, got {frames.dtype} {frames.shape}")

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def num_frames(self) -> int:
        return len(self.proprio)

    @property
    def num_demos(self) -> int:
        return len(self.demo_names)

    @property
    def image_keys(self) -> list[str]:
        return list(self.images)

    @property
    def image_shapes(self) -> dict[str, tuple[int, int, int]]:
        """(C, H, W) per image key."""
        return {key: tuple(frames.shape[1:]) for key, frames in self.images.items()}

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    @property
    def proprio_dim(self) -> int:
        return self.proprio.shape[1]

    @property
    def demo_success(self) -> np.ndarray:
        """bool (num_demos,): the demo's last transition is a terminal (it ended in success)."""
        last = np.full(self.num_demos, -1, dtype=np.int64)
        np.maximum.at(last, self.demo_of_transition, np.arange(len(self)))
        success = np.zeros(self.num_demos, dtype=bool)
        has_any = last >= 0
        success[has_any] = self.terminals[last[has_any]] > 0
        return success

    @property
    def nbytes(self) -> int:
        """Bytes held by all arrays of the dataset."""
        total = sum(frames.nbytes for frames in self.images.values())
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                total += value.nbytes
        return total



@dataclass
class DemoPlan:
    """What one demo (episode) contributes, decided and validated before any image is read; the
    loaders of each format build these, and assemble_transitions joins them."""

    name: str
    num_steps: int  # N, rows in the file
    num_transitions: int  # N, or N - 1 when the final transition is dropped
    num_frames: int  # num_transitions + 1
    final_frame: str  # "next_obs": s_N from the file; "repeat": copy of s_{N-1}; "none"
    actions: np.ndarray
    rewards_raw: np.ndarray
    dones: np.ndarray
    proprio: np.ndarray  # (num_frames, P) float32
    proprio_dims: dict[str, int]
    image_hw: dict[str, tuple[int, int]]



def assemble_transitions(path: str, plans: list[DemoPlan], images: dict[str, np.ndarray], proprio_keys: list[str],
              gamma: float, reward_scale: float, reward_bias: float) -> TransitionDataset:
    obs_index, truncations, returns, demo_of_transition = [], [], [], []
    offset = 0
    for i, plan in enumerate(plans):
        obs_index.append(offset + np.arange(plan.num_transitions, dtype=np.int64))
        truncated = np.zeros(plan.num_transitions, dtype=np.float32)
        truncated[-1] = float(plan.dones[-1] == 0)
        truncations.append(truncated)
        returns.append(reward_to_go(plan.rewards_raw, plan.dones, gamma, reward_scale, reward_bias))
        demo_of_transition.append(np.full(plan.num_transitions, i, dtype=np.int32))
        offset += plan.num_frames
    obs_index_all = np.concatenate(obs_index)
    rewards_raw = np.concatenate([plan.rewards_raw for plan in plans])
    return TransitionDataset(
        path=path,
        images=images,
        proprio=np.concatenate([plan.proprio for plan in plans]),
        obs_index=obs_index_all,
        next_obs_index=obs_index_all + 1,
        actions=np.concatenate([plan.actions for plan in plans]),
        rewards=transform_rewards(rewards_raw, reward_scale, reward_bias),
        terminals=np.concatenate([plan.dones for plan in plans]).astype(np.float32),
        truncations=np.concatenate(truncations),
        reward_to_go=np.concatenate(returns),
        demo_names=[plan.name for plan in plans],
        demo_of_transition=np.concatenate(demo_of_transition),
        proprio_keys=list(proprio_keys),
        gamma=gamma,
        reward_scale=reward_scale,
        reward_bias=reward_bias,
    )


def describe(dataset: TransitionDataset) -> str:
    """One paragraph for CLIs: what was loaded and what it costs in memory."""
    shapes = ", ".join(f"{key} {shape}" for key, shape in dataset.image_shapes.items()) or "none"
    success = dataset.demo_success
    return (
        f"{dataset.path}: {dataset.num_demos} demos, {len(dataset)} transitions, "
        f"{dataset.num_frames} frames; images (C, H, W): {shapes}; proprio dim {dataset.proprio_dim} "
        f"({', '.join(dataset.proprio_keys) or 'none'}); action dim {dataset.action_dim}; "
        f"success {success.mean():.0%} of demos ({int(success.sum())}/{len(success)}), "
        f"{int(dataset.terminals.sum())} terminals, {int(dataset.truncations.sum())} truncations; "
        f"{dataset.nbytes / 2**20:.1f} MiB in memory."
    )
