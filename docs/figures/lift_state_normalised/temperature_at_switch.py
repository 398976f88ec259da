"""One method on lift_state: the temperature carried into the online phase against one set to
0.1 at the switch, per seed, from the runs' metrics.csv.

    PYTHONPATH=. ./run.sh python docs/figures/lift_state_normalised/temperature_at_switch.py \
        studies/lift_state_norm_wsrl studies/wsrl_online_alpha wsrl
    PYTHONPATH=. ./run.sh python docs/figures/lift_state_normalised/temperature_at_switch.py \
        studies/lift_state_norm studies/calql_online_alpha calql

The first folder is the compare study that pretrained (and fine-tuned) each seed; the second
holds `<variant>/seed<k>/lift_state/<algo>/<run>` for the variants `carried` (the same
init_from procedure without the change: another random draw) and `alpha0p1`.

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


def variants_of(seed: int, rows: list[dict], variants: str, algo: str) -> dict[str, list[dict]]:
    """Label -> the online evaluations of that variant of this seed (those that have run)."""
    found = {"carried (the default), same run": evaluated(rows, "online")}
    for name, label in (("carried", "carried, from the checkpoint"), ("alpha0p1", "0.1")):
        runs = Path(variants, name, f"seed{seed}", "lift_state", algo)
        if runs.is_dir():
            found[label] = evaluated(rows_of(one_run(runs)), "online")
    return {label: online for label, online in found.items() if online}


def main(study: str, variants: str, algo: str) -> None:
    table, finals, schedule = [], {}, []
    for seed_dir in sorted(Path(study, "runs").glob("seed*")):
        seed = int(seed_dir.name[4:])
        rows = rows_of(one_run(seed_dir / "lift_state" / algo))
        switch = float(evaluated(rows, "offline")[-1]["eval_success_rate"])
        for label, online in variants_of(seed, rows, variants, algo).items():
            table.append(line(label, seed, switch, online))
            success = [float(r["eval_success_rate"]) for r in online]
            finals.setdefault(label, []).append((switch, min(success), success[-1], len(online)))
            schedule = max(schedule, online, key=len)
    steps = " / ".join(f"{int(r['env_step']):,}" for r in schedule)
    print(f"| temperature at the switch | seed | switch | online, {steps} env steps | worst | final "
          f"| alpha at the first online evaluation | entropy there |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(table))
    # Means over the seeds whose run of that variant has finished (as many evaluations as the
    # longest), so a run still going does not pull a mean.
    longest = max(n for runs in finals.values() for *_, n in runs)
    print("\n| temperature at the switch | seeds finished | switch | worst | final |\n|---|---|---|---|---|")
    for label, runs in finals.items():
        done = [r for r in runs if r[3] == longest]
        if done:
            means = [sum(r[i] for r in done) / len(done) for i in range(3)]
            print(f"| {label} | {len(done)} | {means[0]:.2f} | {means[1]:.2f} | {means[2]:.2f} |")


if __name__ == "__main__":
    main(*sys.argv[1:4])
