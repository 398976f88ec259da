"""Every evaluation of a compare study, per run: deterministic success at each update count
(offline, then online or the offline control's continuation), and per online run the checks
the pixel study is held to: final success at or above the switch value, and no online
evaluation below half of it.

    PYTHONPATH=. ./run.sh python docs/figures/lift_visual_new_defaults/per_seed.py studies/lift_visual_new_defaults

Reads the runs' metrics.csv through calql_vision.plotting.runs, so a resumed run's repeated
rows and a half-written last line count as they do in `compare` and `plot`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from calql_vision.plotting.runs import discover_runs, evaluations, headline_numbers


def trajectory_table(runs) -> str:
    steps = sorted({int(e[1]) for run in runs for e in evaluations(run.rows)})
    head = "| run | " + " | ".join(f"{s:,}" for s in steps) + " |"
    lines = [head, "|---" * (len(steps) + 1) + "|"]
    for run in runs:
        by_step = {int(e[1]): e[3] for e in evaluations(run.rows)}
        cells = [f"{by_step[s]:.2f}" if s in by_step else "" for s in steps]
        lines.append(f"| {run.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def checks_table(runs) -> str:
    lines = ["| run | switch | worst online | final | final >= switch | every online point >= switch / 2 |",
             "|---|---|---|---|---|---|"]
    for run in runs:
        if run.is_control:
            continue
        h = headline_numbers(run.rows)
        if h["switch"] is None or h["worst"] is None:
            lines.append(f"| {run.label} | unfinished | | | | |")
            continue
        lines.append(
            f"| {run.label} | {h['switch']:.2f} | {h['worst']:.2f} | {h['final']:.2f} | "
            f"{'yes' if h['final'] >= h['switch'] else 'no'} | {'yes' if h['worst'] >= h['switch'] / 2 else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    runs = discover_runs([Path(argv[0]) / "runs"])
    print(trajectory_table(runs))
    print()
    print(checks_table(runs))


if __name__ == "__main__":
    main(sys.argv[1:])
