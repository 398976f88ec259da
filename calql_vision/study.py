"""The numbers of an offline-to-online study: per run, then per algorithm over seeds with a
95% bootstrap interval.

Per run (from its evaluations, calql_vision.plotting.runs.evaluations):
- switch: success of the last offline evaluation (the policy the online phase starts from);
  for a run started with init_from, its source run's.
- dip: how far success falls below the switch value in the first `early_fraction` of the
  online phase, in points: 100 * max(0, switch - min(early online evaluations)). 0 = no dip.
- regret: mean of 1 - success over the online evaluations.
- final: success of the last online evaluation.
- steps_to_threshold: the env step of the first online evaluation with success >= threshold;
  None when it never got there.
- calibration at the switch: mean Q and mean reward-to-go G on the held-out demos.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from calql_vision.plotting.runs import evaluations

BOOTSTRAP_SAMPLES = 10_000


@dataclass
class RunNumbers:
    switch: float | None
    dip: float | None
    regret: float | None
    final: float | None
    steps_to_threshold: float | None
    q_switch: float | None = None
    g_switch: float | None = None


def run_numbers(rows: Sequence[Mapping], online_env_steps: int, threshold: float, early_fraction: float,
                switch: float | None = None) -> RunNumbers:
    """The numbers of one run's metrics rows. `switch` overrides the run's own offline value
    (a run whose pretraining came from another run has no offline evaluation of its own)."""
    evals = evaluations(rows)
    offline = [success for phase, _, _, success in evals if phase == "offline"]
    online = [(env_step, success) for phase, _, env_step, success in evals if phase == "online"]
    if switch is None and offline:
        switch = offline[-1]
    early = [success for env_step, success in online if env_step <= early_fraction * online_env_steps]
    dip = None
    if switch is not None and early:
        dip = 100.0 * max(0.0, switch - min(early))
    reached = [env_step for env_step, success in online if success >= threshold]
    return RunNumbers(
        switch=switch,
        dip=dip,
        regret=float(np.mean([1.0 - s for _, s in online])) if online else None,
        final=online[-1][1] if online else None,
        steps_to_threshold=reached[0] if reached else None,
    )


def bootstrap_interval(values: Sequence[float], level: float = 0.95, samples: int = BOOTSTRAP_SAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean. One value gives (value, value): there is no
    spread to resample, and the table says how many seeds each mean has."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("the interval needs at least one value")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    tail = (1.0 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


@dataclass
class Aggregate:
    n: int  # runs with a value
    mean: float | None
    low: float | None
    high: float | None

    def text(self, fmt: str = ".2f", scale: float = 1.0) -> str:
        if self.mean is None:
            return "-"
        if self.n == 1:
            return f"{self.mean * scale:{fmt}} (1 seed)"
        return f"{self.mean * scale:{fmt}} [{self.low * scale:{fmt}}, {self.high * scale:{fmt}}]"


def aggregate(values: Sequence[float | None]) -> Aggregate:
    """Mean and 95% bootstrap interval of the values that exist (None = undefined for that run)."""
    present = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not present:
        return Aggregate(0, None, None, None)
    low, high = bootstrap_interval(present)
    return Aggregate(len(present), float(np.mean(present)), low, high)


def wilson_half_width(episodes: int, p: float = 0.5, z: float = 1.959964) -> float:
    """Half the width of a Wilson 95% interval for one evaluation of `episodes` episodes at
    success rate p (widest at 0.5): how far apart two points must be to mean something."""
    n = episodes
    return z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
