"""What the collecting policy gathered in each online run: per variant and seed, the online
training episodes that ended and the share of them that succeeded, over the first half of the
online phase and over all of it, with the temperature and entropy at the last row.

    PYTHONPATH=. ./run.sh python docs/figures/lift_visual_switch/collection.py calql \
        "the study's own online phase=studies/lift_visual_new_defaults/runs" \
        "carried, from the checkpoint=studies/lift_visual_switch_alpha/carried" ...

Each `label=folder` holds `seed<k>/<task>/<algo>/<run>` (a compare study's `runs` folder or an
init_from variant's). Reads the rows `train` logs (train_episodes and train_success_rate: the
episodes that ended since the previous row, and their success) through
calql_vision.plotting.runs.read_metrics, so a resume's repeated rows count once.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lift_state_normalised"))
from study_runs import variant_run, variants  # noqa: E402  (that folder's reader)

from calql_vision.plotting.runs import read_metrics  # noqa: E402


def episodes(online: list[dict], until_env_step: float = float("inf")) -> tuple[int, float]:
    """(episodes, successes) of the online rows up to `until_env_step` (a row with no episode
    ended has train_episodes nan or 0, and counts for nothing)."""
    count = successes = 0.0
    for row in online:
        if row["train_episodes"] > 0 and row["env_step"] <= until_env_step:
            count += row["train_episodes"]
            successes += row["train_episodes"] * row["train_success_rate"]
    return int(count), successes


def main(algo: str, *variant_args: str) -> None:
    print(f"| {algo}: variant | seed | episodes, first half | succeeded | episodes, all | succeeded | alpha at the end | entropy there |")
    print("|---|---|---|---|---|---|---|---|")
    for label, folder in variants(variant_args).items():
        for seed in sorted(int(path.name[4:]) for path in Path(folder).glob("seed*")):
            run = variant_run(folder, seed, algo)
            if run is None:
                continue
            online = [row for row in read_metrics(run / "metrics.csv") if row["phase"] == "online"]
            n_half, s_half = episodes(online, max(row["env_step"] for row in online) / 2)
            n_all, s_all = episodes(online)
            print(f"| {label} | {seed} | {n_half} | {s_half / max(n_half, 1):.2f} | {n_all} | {s_all / max(n_all, 1):.2f} "
                  f"| {online[-1]['alpha']:.3f} | {online[-1]['entropy']:+.2f} |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
