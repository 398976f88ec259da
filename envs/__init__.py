"""Simulated robot tasks with camera observations (robosuite / MuJoCo, headless)."""
from envs.rendering import configure_headless_rendering

configure_headless_rendering()

from envs.robosuite_env import RobosuiteVisualEnv, make_env  # noqa: E402

__all__ = ["RobosuiteVisualEnv", "make_env", "configure_headless_rendering"]
