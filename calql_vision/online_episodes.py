"""The training episodes that the environment workers are in the middle of.

Online updates are interleaved with environment steps, so a checkpoint can fall inside
episodes. An episode in progress is saved as its scene seed and the actions taken so far
(a few kB): the simulation is deterministic, so a resumed run resets a worker to that seed,
replays the actions and has the very same frames, state and recorder again, the way robomimic
replays a demonstration from its actions. The replayed observation is checked against the
saved one, so a simulation that stopped being deterministic is reported, not trusted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calql_vision.replay import EpisodeRecorder, RecordedEpisode


class ReplayMismatch(RuntimeError):
    """Replaying a saved episode's actions did not give the saved observation."""


@dataclass
class EpisodeInProgress:
    seed: int
    recorder: EpisodeRecorder = field(default_factory=EpisodeRecorder)
    actions: list[np.ndarray] = field(default_factory=list)  # float64, exactly as sent
    last_proprio: np.ndarray | None = None
    grasped: bool = False  # the gripper held the object at some step so far

    def finish(self, returns: tuple[float, float, float]) -> RecordedEpisode:
        episode = self.recorder.finish(*returns)
        episode["grasped"] = self.grasped
        return episode


class OnlineEpisodes:
    """One episode in progress per worker of `workers` (envs.vector.EnvWorkers).

    Scene seeds come from `first_seed` plus the number of episodes begun so far (the counter
    `counters["episodes_started"]`, saved with checkpoints), given to workers in index order.
    """

    def __init__(self, workers: Any, first_seed: int, gamma: float, reward_scale: float, reward_bias: float) -> None:
        self.workers = workers
        self.first_seed = first_seed
        self.returns = (gamma, reward_scale, reward_bias)
        self.slots: list[EpisodeInProgress] = []

    # ------------------------------------------------------------------ start and resume
    def start(self, counters: dict[str, Any], saved: list[dict[str, Any]] | None = None) -> None:
        """Begin an episode on every worker, or continue the saved ones (state())."""
        if saved:
            if len(saved) != self.workers.num_envs:
                raise ValueError(f"the checkpoint holds {len(saved)} episodes in progress for {self.workers.num_envs} workers")
            self.slots = [EpisodeInProgress(int(s["seed"])) for s in saved]
        else:
            self.slots = [EpisodeInProgress(self._next_seed(counters)) for _ in range(self.workers.num_envs)]
        for index, obs in self.workers.reset({i: s.seed for i, s in enumerate(self.slots)}).items():
            self._begin(index, obs)
        if saved:
            self._replay([np.asarray(s["actions"], dtype=np.float64).reshape(-1, self.workers.action_dim) for s in saved],
                         [s["last_proprio"] for s in saved])

    def _replay(self, actions: list[np.ndarray], last_proprio: list[np.ndarray | None]) -> None:
        """Step the freshly reset workers through the saved actions and check where they end."""
        for t in range(max(map(len, actions))):
            step = {i: a[t] for i, a in enumerate(actions) if t < len(a)}
            for index, result in self.workers.step(step).items():
                self._record(index, step[index], result)
        for index, (slot, expected) in enumerate(zip(self.slots, last_proprio)):
            if expected is not None and not np.array_equal(slot.last_proprio, expected):
                raise ReplayMismatch(
                    f"replaying the {len(slot.actions)} saved actions of worker {index}'s episode (scene seed "
                    f"{slot.seed}) did not reach the saved observation: the simulation is not deterministic here")

    def _next_seed(self, counters: dict[str, Any]) -> int:
        seed = self.first_seed + counters["episodes_started"]
        counters["episodes_started"] += 1
        return seed

    def _begin(self, index: int, obs: dict[str, np.ndarray]) -> None:
        slot = self.slots[index]
        slot.recorder.start(obs)
        slot.last_proprio = np.array(obs["proprio"])

    def _record(self, index: int, action: np.ndarray, result: Any) -> None:
        slot = self.slots[index]
        slot.recorder.add(action, result.reward, result.terminated, result.truncated, result.obs)
        slot.actions.append(np.array(action, dtype=np.float64))
        slot.last_proprio = np.array(result.obs["proprio"])
        slot.grasped = slot.grasped or bool(result.info["grasped"])

    # ------------------------------------------------------------------ stepping
    def observations(self) -> dict[str, np.ndarray]:
        """The workers' current observations as one batch (for one policy call)."""
        current = [slot.recorder.last_observation() for slot in self.slots]
        return {key: np.stack([obs[key] for obs in current]) for key in current[0]}

    def step(self, actions: np.ndarray, counters: dict[str, Any]) -> list[RecordedEpisode]:
        """One step of every worker (row i of `actions` to worker i). Returns the episodes
        that ended, in worker order; their workers begin new episodes."""
        results = self.workers.step({i: actions[i] for i in range(len(self.slots))})
        finished, ended = [], []
        for index, result in results.items():
            self._record(index, actions[index], result)
            if result.done:
                finished.append(self.slots[index].finish(self.returns))
                ended.append(index)
        for index in ended:
            self.slots[index] = EpisodeInProgress(self._next_seed(counters))
        for index, obs in self.workers.reset({i: self.slots[i].seed for i in ended}).items():
            self._begin(index, obs)
        return finished

    def cut_all(self, counters: dict[str, Any]) -> list[RecordedEpisode]:
        """End every episode here, as truncated (the budget ran out while updates are still owed
        and no episode has ended to learn from); the workers begin new episodes."""
        cut = [slot.finish(self.returns) for slot in self.slots if len(slot.actions) > 0]
        self.start(counters)
        return cut

    def state(self) -> list[dict[str, Any]]:
        """What a checkpoint keeps of the episodes in progress."""
        return [{"seed": slot.seed, "actions": np.array(slot.actions, dtype=np.float64).reshape(-1, self.workers.action_dim),
                 # None for a worker whose reset failed: its episode had not begun.
                 "last_proprio": None if slot.last_proprio is None else np.array(slot.last_proprio)}
                for slot in self.slots]
