"""Two compare studies of one algorithm side by side, seed by seed: success at the switch,
the worst online point, the final, the offline control's final and worst, and the stability
(mean absolute change of success between neighbouring evaluations) of the offline phase, the
online phase and the control, in points. Each study is labelled on the command line:

    PYTHONPATH=. ./run.sh python docs/figures/lift_visual_batch128/paired.py calql \
        "batch 64=studies/lift_visual_new_defaults" "batch 128=studies/lift_visual_batch128"

Numbers come from the functions `compare` uses, so they mean what they mean in its summary.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lift_state_normalised"))
from study_runs import variants  # noqa: E402  (that folder's label=folder reader)

from calql_vision.plotting.runs import discover_runs, headline_numbers  # noqa: E402
from calql_vision.study import stability  # noqa: E402

COLUMNS = ("switch", "worst online", "final", "control's final", "control's worst",
           "stability offline", "stability online", "stability control")


def seed_numbers(run, control) -> list[float | None]:
    """One row of COLUMNS for an online run and its control (None where either lacks one)."""
    numbers, steady = headline_numbers(run.rows), stability(run.rows)
    row = [numbers["switch"], numbers["worst"], numbers["final"]]
    if control is None:
        row += [None, None]
        control_steady = None
    else:
        control_numbers = headline_numbers(control.rows)
        row += [control_numbers["final"], control_numbers["worst"]]
        control_steady = stability(control.rows)["online"]
    points = [None if v is None else 100 * v for v in (steady["offline"], steady["online"], control_steady)]
    return row + points


def cell(value: float | None, column: str) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if column.startswith("stability") else f"{value:.2f}"


def study_rows(algo: str, folder: Path) -> dict[int, list[float | None]]:
    runs = [r for r in discover_runs([folder / "runs"]) if r.algo == algo]
    controls = {r.seed: r for r in runs if r.is_control}
    return {r.seed: seed_numbers(r, controls.get(r.seed)) for r in runs if not r.is_control}


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    numbers = {label: study_rows(argv[0], folder) for label, folder in variants(argv[1:]).items()}
    seeds = sorted(set.intersection(*(set(rows) for rows in numbers.values())))
    print(f"| {argv[0]}: study | seed | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for seed in seeds:
        for label, rows in numbers.items():
            print(f"| {label} | {seed} | " + " | ".join(cell(v, c) for v, c in zip(rows[seed], COLUMNS)) + " |")
    for label, rows in numbers.items():
        means = []
        for i, column in enumerate(COLUMNS):
            values = [rows[s][i] for s in seeds if rows[s][i] is not None]
            means.append(cell(float(np.mean(values)), column) if len(values) == len(seeds) else "")
        print(f"| **{label}, mean** | {len(seeds)} seeds | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
