"""Scripted waypoint demonstrators, for machines that have no robot logs yet.

Each policy is a small phase machine: proportional control of the end-effector position
toward a waypoint (action = clip(gain * error, -1, 1)), a fixed gripper command per phase,
and for every phase both a position tolerance and a step budget, because P-control never
converges exactly under contact and would otherwise deadlock. The policies read privileged
state (the object position, `info["object_pos"]`); the learner never does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

OPEN, CLOSE = -1.0, 1.0


@dataclass
class Phase:
    name: str
    gripper: float
    tolerance: float  # metres; the phase ends when the end effector is this close...
    max_steps: int  # ...or after this many steps
    hold_steps: int = 0  # minimum steps in the phase (gripper needs time to close/open)


class WaypointPolicy:
    """Base class: subclasses define `phases` and `target(phase, low_dim)`."""

    gain = 10.0
    phases: tuple[Phase, ...] = ()

    def reset(self, env, info) -> None:
        self._phase = 0
        self._phase_steps = 0
        self.goal = env.goal_position()
        self.object_start = np.array(info["object_pos"])

    @property
    def phase_name(self) -> str:
        return self.phases[min(self._phase, len(self.phases) - 1)].name

    def target(self, phase: Phase, low_dim: dict) -> np.ndarray:
        raise NotImplementedError

    def act(self, info) -> np.ndarray:
        low_dim = info["low_dim"]
        eef = low_dim["robot0_eef_pos"]
        self.object_pos = info["object_pos"]
        while True:
            phase = self.phases[min(self._phase, len(self.phases) - 1)]
            error = self.target(phase, low_dim) - eef
            finished = self._phase_steps >= phase.hold_steps and (
                np.linalg.norm(error) < phase.tolerance or self._phase_steps >= phase.max_steps
            )
            if finished and self._phase < len(self.phases) - 1:
                self._phase += 1
                self._phase_steps = 0
                continue
            break
        self._phase_steps += 1
        action = np.zeros(7)
        action[:3] = np.clip(self.gain * error, -1.0, 1.0)
        action[6] = phase.gripper
        return action


class LiftPolicy(WaypointPolicy):
    phases = (
        Phase("hover", OPEN, 0.02, 40),
        Phase("descend", OPEN, 0.01, 30),
        Phase("grasp", CLOSE, 1.0, 10, hold_steps=10),
        Phase("lift", CLOSE, 0.01, 200),
    )

    def target(self, phase: Phase, low_dim: dict) -> np.ndarray:
        cube = self.object_pos
        if phase.name == "hover":
            return cube + [0, 0, 0.08]
        if phase.name in ("descend", "grasp"):
            return cube + [0, 0, 0.0]
        return self.object_start + [0, 0, 0.15]


class PickPlacePolicy(WaypointPolicy):
    # Heights from measurement: grasping at the can centre makes the open fingers hit the bin
    # floor, so aim 1 cm higher; carried at z = 1.05 the arm cannot reach the far corner of
    # the target quarter, so carry at 1.00.
    carry_height = 1.00
    phases = (
        Phase("hover", OPEN, 0.02, 60),
        Phase("descend", OPEN, 0.01, 40),
        Phase("grasp", CLOSE, 1.0, 10, hold_steps=10),
        Phase("lift", CLOSE, 0.02, 40),
        Phase("carry", CLOSE, 0.02, 80),
        Phase("lower", CLOSE, 0.02, 30),
        Phase("release", OPEN, 1.0, 8, hold_steps=8),
        Phase("retreat", OPEN, 0.01, 200),
    )

    def target(self, phase: Phase, low_dim: dict) -> np.ndarray:
        can = self.object_pos
        goal = self.goal
        if phase.name == "hover":
            return can + [0, 0, 0.10]
        if phase.name in ("descend", "grasp"):
            return can + [0, 0, 0.01]
        if phase.name == "lift":
            return np.array([can[0], can[1], self.carry_height])
        if phase.name == "carry":
            return np.array([goal[0], goal[1], self.carry_height])
        if phase.name in ("lower", "release"):
            return np.array([goal[0], goal[1], goal[2] + 0.07])
        return np.array([goal[0], goal[1], self.carry_height + 0.05])


SCRIPTED_POLICIES = {"lift": LiftPolicy, "pick_place": PickPlacePolicy}


def make_scripted_policy(name: str) -> WaypointPolicy:
    if name not in SCRIPTED_POLICIES:
        raise ValueError(f"unknown scripted policy '{name}'; choose from {sorted(SCRIPTED_POLICIES)}")
    return SCRIPTED_POLICIES[name]()


def noisy(action: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian action noise, clipped back into the action box."""
    if noise > 0:
        action = action + rng.normal(0.0, noise, size=action.shape)
    return np.clip(action, -1.0, 1.0)


def record_scripted_episode(env, policy: WaypointPolicy, seed: int, noise: float) -> dict[str, Any]:
    """One scripted episode from reset(seed), as robomimic demo arrays (images HWC, upright).
    The noise has its own stream, seeded from the scene seed: an episode depends on its seed
    alone, whichever process records it."""
    rng = np.random.default_rng([seed, 1])  # noise stream independent of the scene seed
    obs, info = env.reset(seed=seed)
    policy.reset(env, info)
    frames = {key: [obs[key].transpose(1, 2, 0)] for key in env.image_keys}
    low_dim = {key: [value] for key, value in info["low_dim"].items()}
    actions, states, rewards, dones = [], [], [], []
    while True:
        states.append(env.get_state())
        action = noisy(policy.act(info), noise, rng)
        obs, reward, terminated, truncated, info = env.step(action)
        actions.append(action)
        rewards.append(reward)
        dones.append(int(terminated))
        for key in env.image_keys:
            frames[key].append(obs[key].transpose(1, 2, 0))
        for key, value in info["low_dim"].items():
            low_dim[key].append(value)
        if terminated or truncated:
            break
    sequences = {**{k: np.stack(v) for k, v in frames.items()}, **{k: np.stack(v) for k, v in low_dim.items()}}
    return {
        "actions": np.stack(actions),
        "states": np.stack(states),
        "rewards": np.array(rewards),
        "dones": np.array(dones),
        "obs": {k: v[:-1] for k, v in sequences.items()},
        "next_obs": {k: v[1:] for k, v in sequences.items()},
        "model_file": env.model_xml(),
        "success": bool(terminated),
    }
