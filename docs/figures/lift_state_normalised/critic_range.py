"""Where one method's critic stands against the returns it can have, per seed: the mean Q on the
batch's data actions (q_data_mean) at the switch and online, the TD loss, and (runs that log
them) the shares of the targets' next-state values below and above that range, for the study's
own online phase and for init_from variants (as switch_variants.py takes them).

    PYTHONPATH=. ./run.sh python docs/figures/lift_state_normalised/critic_range.py studies/lift_state_norm cql \\
        "without the change=studies/online_warmup/carried" "clip_bootstrap=studies/clip_bootstrap"

With rewards of -1 or 0 and a discount of 0.99 no return lies below -100 (and none above 0).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

from calql_vision.plotting.runs import read_metrics
from study_runs import one_run, variant_run, variants  # this folder's reader


def runs_of(study: str, algo: str, folders: dict[str, Path]) -> list[tuple[str, int, Path]]:
    found = []
    for seed_dir in sorted(Path(study, "runs").glob("seed*")):
        seed = int(seed_dir.name[4:])
        found.append(("the study's own online phase", seed, one_run(seed_dir / "lift_state" / algo)))
        for label, folder in folders.items():
            run = variant_run(folder, seed, algo)
            if run is not None:
                found.append((label, seed, run))
    return found


def main(study: str, algo: str, *variant_args: str) -> None:
    print(f"| {algo}: variant | seed | Q at the switch | online Q: first row / lowest / last | TD loss: highest / last "
          f"| Monte-Carlo return of the batch, last row | bootstrap values below / above the range (mean of the rows): offline; online "
          f"| online rows |")
    print("|---|---|---|---|---|---|---|---|")
    for label, seed, run in runs_of(study, algo, variants(variant_args)):
        rows = read_metrics(run / "metrics.csv")
        offline = [r for r in rows if r["phase"] == "offline"]
        online = [r for r in rows if r["phase"] == "online"]
        if not online:
            continue
        switch = f"{offline[-1]['q_data_mean']:.1f}" if offline else "(the study's)"
        q = [r["q_data_mean"] for r in online]
        td = [r["td_loss"] for r in online]
        print(f"| {label} | {seed} | {switch} | {q[0]:.1f} / {min(q):.1f} / {q[-1]:.1f} | {max(td):.1f} / {td[-1]:.1f} "
              f"| {online[-1]['mc_return_mean']:.1f} | {outside(offline)}; {outside(online)} | {len(online)} |")


def outside(rows: list[dict]) -> str:
    """Mean shares (%) of bootstrap values below and above the returns' range; '-' for runs made
    before the agents logged them (and for a variant's offline phase, which is the study's)."""
    def mean(key: str) -> float:
        values = [r[key] for r in rows if not math.isnan(r.get(key, math.nan))]
        return sum(values) / len(values) if values else math.nan

    below, above = mean("bootstrap_below_range"), mean("bootstrap_above_range")
    return "-" if math.isnan(below) else f"{100 * below:.1f}% / {100 * above:.1f}%"


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
