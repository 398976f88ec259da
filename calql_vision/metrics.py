"""Metric rows to metrics.csv (always), TensorBoard and W&B (as `logger` asks), resumable
without duplicate rows in the CSV."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from calql_vision.atomic_file import atomic_file

# metrics.csv columns: these, then every metric the agent declares (agent.METRICS), then the
# online training episodes, the drift metrics (calql_vision/drift.py) and the rates.
# eval_*: the deterministic policy; eval_stochastic_*: the stochastic (exploration) policy on
# the same scenes. train_*: the training episodes that ended since the previous row. *_grasp_rate:
# the fraction of those episodes in which the gripper held the object at some step.
LEADING_COLUMNS = ["phase", "step", "env_step", "eval_success_rate", "eval_return", "eval_grasp_rate",
                   "eval_stochastic_success_rate", "eval_stochastic_return", "eval_stochastic_grasp_rate"]
EPISODE_COLUMNS = ["train_success_rate", "train_return", "train_episodes", "train_grasp_rate"]
RATE_COLUMNS = ["updates_per_s", "env_steps_per_s"]


def metric_columns(agent_metrics: Sequence[str], action_dim: int = 0) -> list[str]:
    """The columns of a run whose agent logs `agent_metrics`; `action_dim` sizes the drift
    metrics' per-dimension columns (0: none)."""
    from calql_vision.drift import drift_columns

    trailing = EPISODE_COLUMNS + drift_columns(action_dim) + RATE_COLUMNS
    return LEADING_COLUMNS + [m for m in agent_metrics if m not in LEADING_COLUMNS + trailing] + trailing


class MetricsLogger:
    """One CSV row per log point, plus the same scalars in TensorBoard under phase/name.
    A value under a name no column holds is an error, not a silently dropped metric."""

    def __init__(self, csv_path: Path, tensorboard_dir: Path | None, agent_metrics: Sequence[str],
                 resume_step: int | None = None, action_dim: int = 0, wandb_run: Any = None) -> None:
        self.columns = metric_columns(agent_metrics, action_dim)
        self.csv_path = csv_path
        if resume_step is not None and self.csv_path.exists():
            self._truncate_after(resume_step)
        new_file = not self.csv_path.exists()
        self._file = open(self.csv_path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="raise")
        if new_file:
            self._writer.writeheader()
            self._file.flush()
        self._tensorboard = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events at or after it: keep the checkpoint's own step, drop later ones.
            purge_step = None if resume_step is None else resume_step + 1
            self._tensorboard = SummaryWriter(str(tensorboard_dir), purge_step=purge_step)
        self._wandb = wandb_run  # calql_vision/wandb_run.py, or None

    def _truncate_after(self, step: int) -> None:
        with open(self.csv_path, newline="") as f:
            reader = csv.DictReader(f)
            rows = [row for row in reader if int(row["step"]) <= step]
        # Columns of the file that this version no longer writes (a run made by older code)
        # stay, empty in the new rows, so resuming loses none of its history.
        self.columns += [c for c in reader.fieldnames or [] if c not in self.columns]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        with atomic_file(self.csv_path) as handle:
            handle.write(text.getvalue().encode())

    def log(self, phase: str, step: int, env_step: int, values: dict[str, Any]) -> None:
        row = {"phase": phase, "step": step, "env_step": env_step, **values}
        self._writer.writerow(row)
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in values.items():
                if value is not None and value == value:  # skip NaN
                    self._tensorboard.add_scalar(f"{phase}/{key}", float(value), step)
        if self._wandb is not None:
            self._wandb.log(phase, step, env_step, values)

    def video(self, step: int, path: Path) -> None:
        """An evaluation video just written (metrics.csv and TensorBoard keep none)."""
        if self._wandb is not None:
            self._wandb.video(step, path)

    def calibration(self, snapshot: dict[str, Any]) -> None:
        """A calibration snapshot just written (the arrays of calibration/step_<n>.npz)."""
        if self._wandb is not None:
            self._wandb.calibration(snapshot)

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.close()
