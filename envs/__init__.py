"""Simulated robot tasks with camera observations (robosuite / MuJoCo, headless)."""
import logging

from envs.rendering import configure_headless_rendering

configure_headless_rendering()
# robosuite logs advice about private macro files and optional robot packages on every
# import, and a line per env built; keep its errors, drop the chatter.
logging.getLogger("robosuite_logs").addFilter(lambda record: record.levelno >= logging.ERROR)

from envs.robosuite_env import RobosuiteVisualEnv, make_env  # noqa: E402

__all__ = ["RobosuiteVisualEnv", "make_env", "configure_headless_rendering"]
