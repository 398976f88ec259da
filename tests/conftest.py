"""Shared fixtures. Tests run from the repository root (./run.sh python -m pytest tests)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: runs the real programs in subprocesses (deselect with -m 'not slow' for a fast lane)"
    )


# A training run small enough for tests: 48 px images, a two-layer encoder, tiny MLPs.
TINY_TRAIN_ARGS = [
    "task=lift_visual", "task.image_size=48", "task.horizon=15",
    "encoder.channels=8", "encoder.strides=[2,2]", "encoder.feature_dim=16",
    "algo.hidden_dims=[32,32]", "algo.cql_n_actions=2", "batch_size=8",
    "eval_every=4", "eval_episodes=1", "log_every=2", "checkpoint_every=4", "threads=1",
    "video_size=64",
]


# A low-dim training run small enough for tests (no rendering but the videos).
TINY_STATE_ARGS = [
    "task=lift_state", "task.horizon=15", "algo.hidden_dims=[32,32]", "batch_size=8",
    "eval_every=8", "eval_episodes=2", "log_every=2", "checkpoint_every=8", "threads=1", "video_size=64",
]


# What each method needs on top of a tiny run to stay tiny: a short warm-up, the smallest
# ensembles, and the CQL sample count where there is one.
TINY_ALGO_ARGS = {
    "calql": ["algo.cql_n_actions=2"],
    "cql": ["algo.cql_n_actions=2"],
    "wsrl": ["algo.cql_n_actions=2", "algo.num_critics=3", "algo.critic_updates=2", "algo.warmup_steps=10"],
    "sac": ["algo.warmup_steps=10"],
    "rlpd": ["algo.num_critics=3", "algo.warmup_steps=10"],
    "iql": [],
    "aca": ["algo.seed_top_episodes=2"],
}


def task_config(name: str, **overrides):
    """The task's real config file, with optional field overrides."""
    from omegaconf import OmegaConf

    from calql_vision.config import TaskConfig, load_group_file

    config = OmegaConf.merge(OmegaConf.structured(TaskConfig), load_group_file("task", name))
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture(scope="session")
def lift_demos(tmp_path_factory) -> Path:
    """Four noisy scripted Lift episodes with a short horizon (some fail), written once."""
    from calql_vision.collect import collect_demonstrations

    out = tmp_path_factory.mktemp("demos") / "lift.hdf5"
    collect_demonstrations(
        task_config("lift_visual", horizon=60, image_size=48),
        episodes=4, noise=0.6, out=str(out), seed=3, show_progress=False, valid_fraction=0.25,
    )
    return out


@pytest.fixture(scope="session")
def lift_state_demos(tmp_path_factory) -> Path:
    """Four noisy scripted low-dim Lift episodes (some fail), written once."""
    from calql_vision.collect import collect_demonstrations

    out = tmp_path_factory.mktemp("state_demos") / "lift_state.hdf5"
    collect_demonstrations(task_config("lift_state", horizon=60), episodes=4, noise=0.6, out=str(out), seed=3,
                           show_progress=False, valid_fraction=0.25)
    return out
