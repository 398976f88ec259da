"""Weights & Biases for one run (`logger=[..., wandb]`): the metric rows on metrics.csv's step
axis, the resolved config, the evaluation videos and a figure of every calibration snapshot.

W&B is optional: the package is imported only when a run asks for it, and asking without it
installed is a one-line error before anything is created. The W&B run id is kept in the run
directory (`wandb_id`), so a resume, however often, continues the same W&B run. Without an
API key (or with `wandb_mode=offline`) W&B writes into `<run>/wandb/` for `wandb sync` later.
"""
from __future__ import annotations

import importlib.util
import math
import netrc
import os
import secrets
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from calql_vision.atomic_file import atomic_file
from calql_vision.config import ConfigError

ID_FILE = "wandb_id"


def require_wandb(loggers) -> None:
    """ConfigError when the settings ask for W&B and the package is missing."""
    if "wandb" in list(loggers) and importlib.util.find_spec("wandb") is None:
        raise ConfigError("logger=wandb needs the wandb package, which is not installed: "
                          "pip install wandb (requirements-test.txt pins the version the tests use)")


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(requested: str) -> tuple[str, str]:
    """(online | offline, why): `auto` is online only where an API key exists; W&B's own
    WANDB_MODE=offline, set in the environment, is obeyed as well."""
    if requested != "auto":
        return requested, f"wandb_mode={requested}"
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
        return "offline", "WANDB_MODE=offline"
    if _has_api_key():
        return "online", "API key found"
    return "offline", "no API key in WANDB_API_KEY or ~/.netrc"


def run_id(run_root: Path) -> str:
    """The run directory's W&B id, made once (an atomic file: never half an id)."""
    path = run_root / ID_FILE
    if path.is_file():
        return path.read_text().strip()
    new_id = secrets.token_hex(4)  # 8 characters of [0-9a-f], as W&B's own ids
    with atomic_file(path) as handle:
        handle.write(new_id.encode())
    return new_id


class WandbRun:
    """The W&B side of a run's logger (calql_vision/metrics.py calls it)."""

    def __init__(self, run_root: Path, cfg: Any) -> None:
        import wandb

        self._wandb = wandb
        mode, why = resolve_mode(cfg.wandb_mode)
        identity = run_id(run_root)
        settings = wandb.Settings(console="off", silent=True, init_timeout=60)  # the terminal keeps our bars
        init = dict(project=cfg.wandb_project, entity=cfg.wandb_entity, group=cfg.wandb_group,
                    tags=[str(t) for t in cfg.wandb_tags], id=identity, resume="allow", dir=str(run_root),
                    name=f"{run_root.parent.name}/{run_root.name}", settings=settings,
                    config=OmegaConf.to_container(cfg, resolve=True))
        try:
            self.run = wandb.init(mode=mode, **init)
        except Exception as error:  # online and unreachable: keep the run, log offline
            if mode != "online":
                raise
            why = f"W&B unreachable: {' '.join(str(error).split())[:120]}"
            mode = "offline"
            self.run = wandb.init(mode=mode, **init)
        # Every metric on the trainer's own step axis (gradient updates, as metrics.csv's `step`):
        # rows a resume writes again after its checkpoint do not collide with W&B's internal step.
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        where = f"; upload later with: wandb sync {run_root / 'wandb'}" if mode == "offline" else ""
        print(f"W&B: {mode} run {identity} ({why}){where}")

    def log(self, phase: str, step: int, env_step: int, values: dict[str, Any]) -> None:
        data = {f"{phase}/{key}": float(value) for key, value in values.items()
                if value is not None and not (isinstance(value, float) and math.isnan(value))}
        self.run.log({**data, "step": step, "env_step": env_step})

    def video(self, step: int, path: Path) -> None:
        self.run.log({"eval/video": self._wandb.Video(str(path), format="mp4"), "step": step})

    def calibration(self, snapshot: dict[str, Any]) -> None:
        """A snapshot (phase, step, env_step and the Q and G arrays of calibration/step_<n>.npz)
        as the Q-against-G figure `plot` draws."""
        from calql_vision.plotting.figures import calibration_snapshot_figure

        figure = calibration_snapshot_figure(snapshot)
        try:
            self.run.log({f"calibration/{snapshot['phase']}": self._wandb.Image(figure), "step": int(snapshot["step"])})
        finally:
            import matplotlib.pyplot as plt

            plt.close(figure)

    def close(self) -> None:
        self.run.finish()
