"""Figures and a headline table from run directories.

    python -m calql_vision.plot runs/lift_visual
    python -m calql_vision.plot runs/lift_visual/calql runs/lift_visual/cql out=report/

Reading runs and the headline numbers live in plotting/runs.py, the figures in
plotting/figures.py; this module is the command line and the summary table.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from calql_vision.config import ConfigError
from calql_vision.plotting.runs import (  # noqa: F401 (API)
    Run,
    calibration_numbers,
    discover_runs,
    fail_forever_return,
    headline_numbers,
    read_metrics,
)
from calql_vision.startup import run_program

USAGE = """usage: python -m calql_vision.plot <run dir or runs root> [more paths ...] [out=<dir>]

More: docs/evaluation.md (every page: README.md, Documentation)

Finds every run directory (one holding metrics.csv and config.yaml) under the given paths
and writes into out=<dir> (default: <first path>/plots):
  success.png      evaluation success rate on one x axis: the offline phase left of 0 (its
                   gradient steps rescaled to the width of the online phase), the online phase
                   right of 0 (environment steps); per algorithm the mean over seeds with a
                   min-max band, each seed as a thin line; dashed: the stochastic (exploration)
                   policy's evaluations, dotted: the online training episodes' success, both
                   means over seeds where the runs logged them
  drift.png        what moved across the switch, one row per run on the same x axis: success
                   (deterministic, stochastic, training episodes), action_change, feature_change
                   and policy_std (mean and each action dimension, the gripper last); runs
                   without these columns (older runs) are left out, and with none it is skipped
  calibration.png  critic Q(s, a) against the Monte-Carlo return-to-go G on held-out demos,
                   online episodes and a training sample, up to 4 runs: left column the last
                   calibration/step_*.npz of the offline phase, right column the latest one
                   (no right column when no run has an online phase; runs without those
                   files are left out, with a note)
  diagnostics.png  the losses and statistics the runs' agents logged (td_loss, actor_loss,
                   alpha, then e.g. cql_gap and bound_rate for Cal-QL, value_loss and adv_mean
                   for IQL, z_loss and prior_weight for ACA; up to 8) and Q vs G over gradient
                   steps, every run overlaid, a dotted line where the online phase starts
  summary.txt      per run: success at the switch (deterministic and stochastic policy), the
                   dip and the worst online success (as compare defines them, calql_vision.study),
                   final success, online regret (mean of 1 - success); and the calibration at
                   the end of the offline phase: mean Q against mean G on the training sample
                   and the held-out demos, over all their transitions and over those whose G is
                   an observed return (segments that reached a success); also printed
"""


def _progress(run: Run) -> str:
    if not run.rows:
        return "no rows"
    last = run.rows[-1]
    if last["phase"] == "offline":
        return f"offline {int(last['step'])}/{run.offline_steps}"
    return f"online {int(last['env_step'])}/{run.online_env_steps}"


def _aligned(lines: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _cell(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def summary_table(runs: Sequence[Run]) -> str:
    lines = [["run", "algo", "seed", "progress", "switch", "switch stoch", "dip", "worst", "final", "regret"]]
    for run in runs:
        numbers = headline_numbers(run.rows)
        lines.append([run.name, run.algo, str(run.seed), _progress(run), *(_cell(v) for v in numbers.values())])
    text = _aligned(lines) + (
        "\n\nsuccess rates of the deterministic evaluations; switch: the last offline evaluation (else one"
        "\nonline at env step 0); switch stoch: the stochastic (exploration) policy in that evaluation, where"
        "\nlogged; worst: lowest online evaluation after the switch; dip: switch - worst, at least 0 (compare"
        "\nreports it x 100, in points); regret: mean of 1 - success over online evaluations; progress: last"
        "\nlogged step of the phase / its budget\n"
    )
    calibration = calibration_table(runs)
    return text + ("\n" + calibration if calibration else "")


def calibration_table(runs: Sequence[Run]) -> str:
    """Q against G in the last offline calibration snapshot of each run ("" when none has one)."""
    lines = [["run", "algo", "step", "sample", "n", "mean Q", "mean G", "Q<G", "observed", "Q obs", "G obs"]]
    for run in runs:
        snapshot = run.calibration.get("offline")
        if snapshot is None:
            continue
        fail_forever = fail_forever_return(run.config)
        for sample in ("train", "valid"):
            numbers = calibration_numbers(snapshot[f"q_{sample}"], snapshot[f"g_{sample}"], fail_forever)
            if not numbers["n"]:
                continue
            lines.append([
                run.name, run.algo, str(int(snapshot["step"])), sample, str(numbers["n"]),
                _cell(numbers["q"], ".1f"), _cell(numbers["g"], ".1f"), _cell(numbers["below"]),
                _cell(numbers["observed"]), _cell(numbers["q_observed"], ".1f"), _cell(numbers["g_observed"], ".1f"),
            ])
    if len(lines) == 1:
        return ""
    return (
        "calibration at the end of offline pretraining (calibration/step_<n>.npz):\n" + _aligned(lines) +
        "\n\nmean Q: min(Q1, Q2)(s, a) on dataset actions; mean G: Monte-Carlo return-to-go; Q<G: share"
        "\nof transitions with Q below G; observed: share whose G is an observed return (the segment"
        "\nreached a success), the rest carry the fail-forever value reward_bias / (1 - gamma);"
        "\nQ obs / G obs: the means over the observed-return transitions only\n"
    )


# ---------------------------------------------------------------------- entry point
def parse_args(argv: Sequence[str]) -> tuple[list[Path], Path]:
    paths, out = [], None
    for arg in argv:
        key, _, value = arg.partition("=")
        if value and not Path(arg).exists():
            if key != "out":
                raise ConfigError(f"unknown key '{key}'; the only key is out=<dir> (see --help)")
            out = Path(value)
        else:
            paths.append(Path(arg))
    if not paths:
        raise ConfigError("give at least one run directory or runs root (see --help)")
    return paths, out or paths[0] / "plots"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        paths, out = parse_args(argv)
        runs = discover_runs(paths)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    from calql_vision.plotting.figures import (MAX_DRIFT_RUNS, plot_calibration, plot_diagnostics, plot_drift,
                                               plot_success)

    print(f"{len(runs)} run(s); writing to {out}")
    plot_success(runs, out / "success.png")
    plot_diagnostics(runs, out / "diagnostics.png")
    without = plot_drift(runs, out / "drift.png")
    if len(without) == len(runs):
        print("note: drift.png skipped: no run logged action_change, feature_change or policy_std (older runs do not)")
    elif without:
        print(f"note: drift.png leaves out runs without the drift columns, or past its first "
              f"{MAX_DRIFT_RUNS}: {', '.join(without)}")
    without = plot_calibration(runs, out / "calibration.png")
    if len(without) == len(runs):
        print("note: calibration.png skipped: no run has calibration/step_*.npz (older runs do not write them)")
    elif without:
        print(f"note: calibration.png leaves out runs without calibration/step_*.npz: {', '.join(without)}")
    table = summary_table(runs)
    (out / "summary.txt").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(run_program(main))
