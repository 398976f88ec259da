"""WSRL on lift_state: the temperature carried into the online phase against one set to 0.1
at the switch, per seed, from the runs' metrics.csv.

    PYTHONPATH=. ./run.sh python docs/figures/lift_state_normalised/wsrl/temperature_at_switch.py \
        studies/lift_state_norm_wsrl studies/wsrl_online_alpha

Prints a markdown table: success at the switch (the pretraining's last evaluation), every
online evaluation, the worst and the final, with the temperature and the policy's entropy
at the first online evaluation.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path


def rows_of(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def evaluated(rows: list[dict], phase: str) -> list[dict]:
    return [r for r in rows if r["phase"] == phase and r["eval_success_rate"] != ""]


def one_run(run: Path) -> Path:
    (found,) = run.iterdir()
    return found


def line(name: str, seed: int, switch: float, online: list[dict]) -> str:
    success = [float(r["eval_success_rate"]) for r in online]
    first = online[0]
    return (f"| {name} | {seed} | {switch:.2f} | " + " / ".join(f"{s:.2f}" for s in success)
            + f" | {min(success):.2f} | **{success[-1]:.2f}** | {float(first['alpha']):.2f} | "
            f"{float(first['entropy']):+.2f} |")


def main(study: str, variants: str) -> None:
    print("| temperature at the switch | seed | switch | online, 1,375 / 1,750 / 2,500 / 4,000 / 5,500 / 6,000 "
          "env steps | worst | final | alpha at 1,375 steps | entropy at 1,375 steps |")
    print("|---|---|---|---|---|---|---|---|")
    for seed_dir in sorted(Path(study, "runs").glob("seed*")):
        seed = int(seed_dir.name[4:])
        pretraining = one_run(seed_dir / "lift_state" / "wsrl")
        rows = rows_of(pretraining)
        switch = float(evaluated(rows, "offline")[-1]["eval_success_rate"])
        if evaluated(rows, "online"):
            print(line("carried (as published), same run", seed, switch, evaluated(rows, "online")))
        for name, label in (("carried", "carried, from the checkpoint"), ("alpha0p1", "0.1")):
            runs = Path(variants, name, f"seed{seed}", "lift_state", "wsrl")
            if runs.is_dir():
                online = evaluated(rows_of(one_run(runs)), "online")
                if online:
                    print(line(label, seed, switch, online))


if __name__ == "__main__":
    main(*sys.argv[1:3])
