"""Metric rows to metrics.csv and TensorBoard, resumable without duplicate rows."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from calql_vision.atomic_file import atomic_file

# metrics.csv columns: these, then every metric the agent declares (agent.METRICS), then these.
LEADING_COLUMNS = ["phase", "step", "env_step", "eval_success_rate", "eval_return"]
EXTRA_COLUMNS = ["episode_return", "episode_success", "updates_per_s", "env_steps_per_s"]


def metric_columns(agent_metrics: Sequence[str]) -> list[str]:
    return LEADING_COLUMNS + [m for m in agent_metrics if m not in LEADING_COLUMNS + EXTRA_COLUMNS] + EXTRA_COLUMNS


class MetricsLogger:
    """One CSV row per log point, plus the same scalars in TensorBoard under phase/name.
    A value under a name no column holds is an error, not a silently dropped metric."""

    def __init__(self, csv_path: Path, tensorboard_dir: Path, agent_metrics: Sequence[str],
                 resume_step: int | None = None) -> None:
        self.columns = metric_columns(agent_metrics)
        self.csv_path = csv_path
        if resume_step is not None and self.csv_path.exists():
            self._truncate_after(resume_step)
        new_file = not self.csv_path.exists()
        self._file = open(self.csv_path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="raise")
        if new_file:
            self._writer.writeheader()
            self._file.flush()
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events at or after it: keep the checkpoint's own step, drop later ones.
        purge_step = None if resume_step is None else resume_step + 1
        self._tensorboard = SummaryWriter(str(tensorboard_dir), purge_step=purge_step)

    def _truncate_after(self, step: int) -> None:
        with open(self.csv_path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row["step"]) <= step]
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
        for key, value in values.items():
            if value is not None and value == value:  # skip NaN
                self._tensorboard.add_scalar(f"{phase}/{key}", float(value), step)

    def close(self) -> None:
        self._file.close()
        self._tensorboard.close()
