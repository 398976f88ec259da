"""Cal-QL and CQL on lift_state switched to online at an earlier pretraining checkpoint, per
seed, beside the 5-seed study's own switch at 6,000 updates and the offline continuation at
the same update count, every number on 50 scenes.

    PYTHONPATH=. ./run.sh python docs/figures/lift_state_normalised/early_switch.py \
        studies/lift_state_norm studies/early_switch/from3000 3000

The study's checkpoints must have been re-evaluated on 50 scenes (reevaluate.py): the switch
value at the earlier checkpoint, and the offline trajectory it continues on (the run's own
offline checkpoints, then its control's), are read from those evaluations. The early-switch
runs evaluate on 50 scenes themselves.
"""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf
from study_runs import evaluations, one_run, reevaluated  # this folder's reader


def online_evaluations(run: Path) -> list[tuple[int, float]]:
    return [(int(row["env_step"]), row["eval_success_rate"]) for row in evaluations(run, "online")]


def offline_success(study_run: Path, control: Path, updates: int, switch: int) -> float | None:
    """The offline trajectory's success at `updates`: the run's own checkpoint up to its switch,
    its control's after it."""
    return reevaluated(study_run if updates <= switch else control, updates)


def main(study: str, early: str, start: str) -> None:
    start_step = int(start)
    print(f"| method | seed | success at {start_step:,} updates | online from there, env steps: evaluations | worst "
          f"| final | offline on to the same updates | the study's online phase (switch at 6,000): final |")
    print("|---|---|---|---|---|---|---|---|")
    means: dict[str, list[tuple[float, ...]]] = {}
    for algo in ("calql", "cql"):
        for seed_dir in sorted(Path(study, "runs").glob("seed*")):
            runs = Path(early, seed_dir.name, "lift_state", algo)
            if not runs.is_dir():
                continue
            online = online_evaluations(one_run(runs))
            if not online:
                continue
            study_run = one_run(seed_dir / "lift_state" / algo)
            settings = OmegaConf.load(study_run / "config.yaml")
            study_switch = int(settings.offline_steps)
            control = one_run(seed_dir / "lift_state" / f"{algo}-control")
            switch = reevaluated(study_run, start_step)
            last_step, final = online[-1]
            # One update per environment step online (utd 1), so the offline trajectory at the
            # same number of updates is start + last_step.
            offline = offline_success(study_run, control, start_step + last_step, study_switch)
            study_final = reevaluated(study_run, study_switch + int(settings.online_env_steps))
            worst = min(s for _, s in online)
            print(f"| {algo} | {seed_dir.name[4:]} | {switch:.2f} | "
                  + " / ".join(f"{s:.2f}" for _, s in online) + f" | {worst:.2f} | **{final:.2f}** | "
                  f"{offline:.2f} | {study_final:.2f} |")
            if last_step == 6000:
                means.setdefault(algo, []).append((switch, worst, final, offline, study_final))
    print("\n| method | seeds finished | switch | worst | final | offline on | the study's final |")
    print("|---|---|---|---|---|---|---|")
    for algo, rows in means.items():
        cells = " | ".join(f"{sum(r[i] for r in rows) / len(rows):.2f}" for i in range(5))
        print(f"| {algo} | {len(rows)} | {cells} |")


if __name__ == "__main__":
    main(*sys.argv[1:4])
