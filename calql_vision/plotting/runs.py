"""Run directories as the plot program reads them, and the headline numbers of a run."""
from __future__ import annotations

import csv
import math
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import yaml
from omegaconf import OmegaConf

from calql_vision.config import ConfigError
from calql_vision.control import CONTROL_PHASE
from calql_vision.run_dir import RunDir
from datasets.reward_to_go import fail_forever_value


@dataclass
class Run:
    """One run directory: its config.yaml and its metrics.csv rows."""

    path: Path
    name: str  # relative to the path it was found under
    config: Any
    rows: list[dict[str, Any]]

    @property
    def algo(self) -> str:
        return str(OmegaConf.select(self.config, "algo.name", default="?"))

    @property
    def seed(self) -> Any:
        return self.config.get("seed", "?")

    @property
    def offline_steps(self) -> int:
        return int(self.config.get("offline_steps") or 0)

    @property
    def online_env_steps(self) -> int:
        return int(self.config.get("online_env_steps") or 0)

    @property
    def is_control(self) -> bool:
        """An offline continuation control (train control_of=...), not an online run."""
        return self.config.get("control_of") is not None

    @property
    def label(self) -> str:
        return f"{self.algo}{' offline control' if self.is_control else ''} seed {self.seed}"

    @cached_property
    def calibration(self) -> dict[str, dict[str, np.ndarray]]:
        """{'offline': the last calibration/step_*.npz written in the offline phase, 'online':
        the latest one}, each present only when it exists (one file written offline fills only
        'offline'). Read once per run: the figure and the summary table both use it."""
        loaded = []
        for path in RunDir(self.path).calibrations():
            try:
                with np.load(path) as data:
                    loaded.append({k: data[k] for k in data.files})
            except (OSError, ValueError, zipfile.BadZipFile) as error:
                print(f"note: skipping unreadable {path}: {error}")
        loaded.sort(key=lambda d: int(d["step"]))
        chosen = {}
        offline = [d for d in loaded if str(d["phase"]) == "offline"]
        if offline:
            chosen["offline"] = offline[-1]
        if loaded and (not offline or loaded[-1] is not offline[-1]):
            chosen["online"] = loaded[-1]
        return chosen


# ---------------------------------------------------------------------- reading runs
def _number(value: Any) -> float:
    return math.nan if value is None or value == "" else float(value)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.csv rows as floats (nan where empty), sorted by step, offline before online at
    one step (an evaluation at the switch may be logged in both phases at the last offline
    step). A resumed run's repeated step keeps its last row; a half-written last line of a run
    in progress is dropped."""
    by_step: dict[tuple[int, bool], dict[str, Any]] = {}
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            if None in raw or None in raw.values() or raw.get("phase") not in ("offline", "online", CONTROL_PHASE):
                continue
            try:
                row = {k: v if k == "phase" else _number(v) for k, v in raw.items()}
            except ValueError:
                continue
            by_step[(int(row["step"]), row["phase"] != "offline")] = row
    return [by_step[key] for key in sorted(by_step)]


def discover_runs(paths: Sequence[Path]) -> list[Run]:
    """Every folder with metrics.csv and config.yaml under the paths (a path may be a run itself)."""
    runs, seen = [], set()
    for root in paths:
        if not root.exists():
            raise ConfigError(f"{root}: no such file or directory")
        found = sorted(p.parent for p in root.rglob(RunDir.METRICS_FILE) if RunDir(p.parent).config.is_file())
        if not found:
            raise ConfigError(f"{root}: no run directories (a folder with metrics.csv and config.yaml) under it")
        for run_dir in found:
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            name = str(run_dir.relative_to(root)) if run_dir != root else str(root)
            try:
                config = OmegaConf.load(RunDir(run_dir).config)
                runs.append(Run(run_dir, name, config, read_metrics(RunDir(run_dir).metrics)))
            except (OSError, ValueError, yaml.YAMLError) as error:
                print(f"note: skipping {run_dir}: {error}")
    if not runs:
        raise ConfigError("none of the run directories found could be read (see the notes above)")
    return sorted(runs, key=lambda r: (r.algo, str(r.seed).zfill(9), r.name))


def holds(row: Mapping[str, Any], key: str = "eval_success_rate") -> bool:
    """Whether a metrics row holds `key` (an empty cell, or nan as read_metrics gives it, does not)."""
    return not math.isnan(_number(row.get(key)))


def evaluations(rows: Sequence[Mapping[str, Any]],
                key: str = "eval_success_rate") -> list[tuple[str, float, float, float]]:
    """(phase, step, env_step, value) of the rows that hold `key` (default: the deterministic
    evaluation's success; eval_stochastic_success_rate, train_success_rate, ... likewise), by
    step. A column the run's metrics.csv lacks (older runs) gives []. An offline control's rows
    past the switch count as its "online" phase: they stand where the online run's would, at the
    same update counts, so every number and figure treats the two alike (calql_vision/control.py)."""
    evals = []
    for row in rows:
        if holds(row, key):
            phase = "online" if row["phase"] == CONTROL_PHASE else row["phase"]
            evals.append((phase, _number(row["step"]), _number(row["env_step"]), _number(row[key])))
    return sorted(evals, key=lambda e: e[1])


def headline_numbers(rows: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """switch, stochastic_switch, dip and worst as calql_vision.study defines them (shared with
    compare: switch = the last offline evaluation or one online at env step 0, worst = the lowest
    online evaluation after it, dip = max(0, switch - worst)); final: last evaluation; regret:
    mean of 1 - success over online evaluations. None = undefined."""
    from calql_vision.study import dip_numbers  # study reads runs with this module

    evals = evaluations(rows)
    online = [e for e in evals if e[0] == "online"]
    dip = dip_numbers(rows)
    return {
        "switch": dip.switch,
        "stochastic_switch": dip.stochastic_switch,
        "dip": dip.dip,
        "worst": dip.worst,
        "final": evals[-1][3] if evals else None,
        "regret": float(np.mean([1.0 - e[3] for e in online])) if online else None,
    }


def fail_forever_return(config: Mapping[str, Any]) -> float:
    """The fail-forever G (datasets.reward_to_go) under a run's reward transform and discount."""
    bias = float(config.get("reward_bias", 0.0) or 0.0)
    discount = float((config.get("algo") or {}).get("discount", 0.99))
    return fail_forever_value(discount, bias)


def calibration_numbers(q: np.ndarray, g: np.ndarray, fail_forever: float) -> dict[str, float | None]:
    """Mean Q and mean G of a calibration sample, and the same over its transitions whose G is
    an observed return (their segment reached a success). The other transitions carry the
    fail-forever value, a floor far below what a bootstrapping critic can estimate there, so
    they pull the mean G down; reporting both keeps that visible. None = no such transitions."""
    q, g = np.asarray(q, np.float64), np.asarray(g, np.float64)
    if len(q) == 0:
        return {"n": 0, "q": None, "g": None, "below": None, "observed": None, "q_observed": None, "g_observed": None}
    observed = ~np.isclose(g, fail_forever, rtol=1e-5, atol=1e-6)
    some = bool(observed.any())
    return {
        "n": len(q),
        "q": float(q.mean()),
        "g": float(g.mean()),
        "below": float((q < g).mean()),
        "observed": float(observed.mean()),
        "q_observed": float(q[observed].mean()) if some else None,
        "g_observed": float(g[observed].mean()) if some else None,
    }
