"""How large the entropy bonus in ACA's soft backup is against the per-step cost, beside success.

    PYTHONPATH=. python docs/figures/lift_state_normalised/aca_alpha0p1/entropy_bonus.py <study dir> [...]

With the sparse reward shifted to -1 per step and 0 on the (terminal) success step, a critic
with the entropy in its target sees about r + gamma * alpha * H per step (H: the policy's
entropy, the `entropy` column). Once alpha * H exceeds 1 every step short of success is worth
more than ending the episode, so the soft value is positive and success lowers it. The table
prints, at every evaluation: success, alpha, H, the estimated per-step soft reward -1 + alpha * H
and the critic's mean Q on dataset actions.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

from calql_vision.plotting.runs import read_metrics


def logged(value) -> bool:
    return value not in ("", None) and not math.isnan(float(value))


def nearest_logged(rows: list[dict], step: int, key: str) -> float:
    """The value of `key` at the last row at or before `step` that has one."""
    best = math.nan
    for row in rows:
        if int(float(row["step"])) > step:
            break
        if logged(row.get(key)):
            best = float(row[key])
    return best


def report(study: Path) -> None:
    print(f"## {study}\n")
    print("| run | updates | phase | success | alpha | entropy H | -1 + alpha H | mean Q (data) |")
    print("|---|---|---|---|---|---|---|---|")
    for run in sorted(p for p in study.glob("runs/seed*/*/*/*") if (p / "metrics.csv").is_file()):
        rows = read_metrics(run / "metrics.csv")
        for row in rows:
            if not logged(row.get("eval_success_rate")):
                continue
            step = int(float(row["step"]))
            alpha = nearest_logged(rows, step, "alpha")
            entropy = nearest_logged(rows, step, "entropy")
            q = nearest_logged(rows, step, "q_data_mean")
            name = f"{run.parent.name} {run.parent.parent.parent.name}"
            print(f"| {name} | {step} | {row['phase']} | {float(row['eval_success_rate']):.2f} | {alpha:.3f} | "
                  f"{entropy:+.2f} | {alpha * entropy - 1:+.2f} | {q:+.1f} |")
    print()


if __name__ == "__main__":
    for path in sys.argv[1:]:
        report(Path(path))
