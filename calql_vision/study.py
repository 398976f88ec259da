"""The numbers of an offline-to-online study: per run, then per algorithm over seeds with a
95% bootstrap interval. `compare`'s summary.md and `plot`'s summary.txt both take the switch,
the dip and the worst online success from here, so the two programs mean one thing by them.

Per run (from its deterministic evaluations, calql_vision.plotting.runs.evaluations):
- switch: success of the policy the online phase starts from: the last offline evaluation,
  or an online evaluation at env step 0 where the run logs one (the trainer's online
  evaluations come after updates today); for a run started with init_from and neither, its
  source run's. stochastic_switch: the stochastic (exploration)
  policy's success in that same evaluation, where the run logged it.
- worst: the lowest online evaluation after the switch (env step > 0).
- dip: the worst drop below the switch value, max(0, switch - worst); compare shows it in
  points (x 100). 0 = success never fell below the switch value.
- regret: mean of 1 - success over the online evaluations.
- final: success of the last online evaluation.
- steps_to_threshold: the env step of the first online evaluation with success >= threshold;
  None when it never got there.
- train_success: success rate of all the online training (exploration) episodes, from the
  rows' train_success_rate weighted by their train_episodes.
- stability_offline / stability_online: the mean absolute change of success between
  neighbouring evaluations within the phase (the jump across the switch is the dip's).
- calibration at the switch: mean Q and mean reward-to-go G on the held-out demos.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from calql_vision.plotting.runs import evaluations

BOOTSTRAP_SAMPLES = 10_000
STOCHASTIC = "eval_stochastic_success_rate"  # older runs' metrics.csv files lack it


@dataclass
class RunNumbers:
    switch: float | None
    dip: float | None  # a success rate; compare shows it in points
    regret: float | None
    final: float | None
    steps_to_threshold: float | None
    worst: float | None = None
    stochastic_switch: float | None = None
    train_success: float | None = None
    stability_offline: float | None = None
    stability_online: float | None = None
    q_switch: float | None = None
    g_switch: float | None = None


@dataclass
class Dip:
    switch: float | None
    stochastic_switch: float | None
    worst: float | None
    dip: float | None


def _value(row: Mapping, key: str) -> float | None:
    """A logged number, None where the row has no such column (older runs) or left it empty."""
    value = row.get(key)
    if value is None or value == "":
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _online_after_switch(rows: Sequence[Mapping]) -> list[tuple[float, float]]:
    """(env_step, success) of the online evaluations after the switch. One at env step 0 ran
    before any online data or online update (updates wait for the first ended episode), so it
    measures the switch policy, not what the online phase made of it."""
    return [(env_step, success) for phase, _, env_step, success in evaluations(rows)
            if phase == "online" and env_step > 0]


def switch_row(rows: Sequence[Mapping]) -> Mapping | None:
    """The row whose evaluation is the switch: the latest evaluation of the policy the online
    phase starts from, i.e. the last offline one or, where the run also (or only) evaluates
    online at env step 0, that one; None when there is neither (pretrained elsewhere, or not
    there yet). Rows at one step: offline before online, as read_metrics orders them."""
    at_switch = [row for row in rows if _value(row, "eval_success_rate") is not None
                 and (row["phase"] == "offline" or float(row["env_step"]) == 0)]
    return sorted(at_switch, key=lambda row: float(row["step"]))[-1] if at_switch else None  # stable: online last


def dip_numbers(rows: Sequence[Mapping], switch: float | None = None,
                stochastic_switch: float | None = None) -> Dip:
    """Switch, worst online success and dip of one run's rows (see the module docstring). `switch`
    and `stochastic_switch` are used when the run has no switch evaluation of its own (a run whose
    pretraining came from another run: pass the source's)."""
    row = switch_row(rows)
    if row is not None:
        switch, stochastic_switch = _value(row, "eval_success_rate"), _value(row, STOCHASTIC)
    online = [success for _, success in _online_after_switch(rows)]
    worst = min(online) if online else None
    dip = max(0.0, switch - worst) if switch is not None and worst is not None else None
    return Dip(switch, stochastic_switch, worst, dip)


def stability(rows: Sequence[Mapping]) -> dict[str, float | None]:
    """{"offline", "online"}: the mean absolute change of deterministic success between
    neighbouring evaluations of the phase (online: those after the switch); None with fewer
    than two. How much one evaluation says: a high value is noise or a policy that swings."""
    offline = [success for phase, _, _, success in evaluations(rows) if phase == "offline"]
    online = [success for _, success in _online_after_switch(rows)]
    return {phase: float(np.mean(np.abs(np.diff(values)))) if len(values) > 1 else None
            for phase, values in (("offline", offline), ("online", online))}


def training_success(rows: Sequence[Mapping]) -> float | None:
    """The success rate of all online training episodes: each row's train_success_rate covers
    its train_episodes episodes (rows without a count weigh 1); None when none was logged."""
    weighted = []
    for row in rows:
        rate, episodes = _value(row, "train_success_rate"), _value(row, "train_episodes")
        if row["phase"] == "online" and rate is not None and (episodes is None or episodes > 0):
            weighted.append((rate, 1.0 if episodes is None else episodes))
    if not weighted:
        return None
    return float(sum(r * n for r, n in weighted) / sum(n for _, n in weighted))


def run_numbers(rows: Sequence[Mapping], threshold: float, switch: float | None = None,
                stochastic_switch: float | None = None) -> RunNumbers:
    """The numbers of one run's metrics rows. `switch` and `stochastic_switch` stand in for a
    run without a switch evaluation of its own (its pretraining came from another run)."""
    online = [(env_step, success) for phase, _, env_step, success in evaluations(rows) if phase == "online"]
    dip = dip_numbers(rows, switch, stochastic_switch)
    steadiness = stability(rows)
    reached = [env_step for env_step, success in online if success >= threshold]
    return RunNumbers(
        switch=dip.switch,
        dip=dip.dip,
        regret=float(np.mean([1.0 - s for _, s in online])) if online else None,
        final=online[-1][1] if online else None,
        steps_to_threshold=reached[0] if reached else None,
        worst=dip.worst,
        stochastic_switch=dip.stochastic_switch,
        train_success=training_success(rows),
        stability_offline=steadiness["offline"],
        stability_online=steadiness["online"],
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
