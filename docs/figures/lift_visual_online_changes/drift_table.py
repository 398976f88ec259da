"""How far the encoder's features and the deterministic action moved, seed by seed: in the last
2,000 offline updates of a compare study's run, in the first 500 updates after the switch, and
in the rest of the phase, for the study's own online phase, its offline control and each
init_from variant; with each one's stability (compare's: the mean absolute change of success
between neighbouring evaluations after the switch, in points).

    PYTHONPATH=. ./run.sh python docs/figures/lift_visual_online_changes/drift_table.py \
        studies/lift_visual_actor_lr3e-5 calql "frozen encoder=studies/lift_visual_frozen_encoder"

`feature_change` and `action_change` are the drift metrics every run logs each `log_every`
updates on its fixed probe set of dataset observations: the mean absolute change of the
encoder's features and of tanh(mean) since the previous log.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lift_state_normalised"))
from study_runs import control_run, one_run, task_folder, variant_run, variants  # noqa: E402  (that folder's readers)

from calql_vision.control import CONTROL_PHASE  # noqa: E402
from calql_vision.plotting.runs import read_metrics  # noqa: E402
from calql_vision.study import stability  # noqa: E402

EARLY_UPDATES = 500  # "right after the switch"
OFFLINE_WINDOW = 2000  # the offline reference: the pretraining's last updates


def logged(rows: list[dict], key: str) -> list[tuple[int, float]]:
    return [(int(row["step"]), row[key]) for row in rows if not math.isnan(row.get(key, math.nan))]


def windows(rows: list[dict], phase: str, key: str) -> tuple[float, float]:
    """Mean of `key` over the phase's first EARLY_UPDATES updates and over the rest."""
    values = logged([row for row in rows if row["phase"] == phase], key)
    switch = 2 * values[0][0] - values[1][0]  # the first log comes one log interval after it
    early = [v for step, v in values if step - switch <= EARLY_UPDATES]
    late = [v for step, v in values if step - switch > EARLY_UPDATES]
    return float(np.mean(early)), float(np.mean(late))


def finished(run: Path, rows: list[dict]) -> bool:
    """Whether the run has made all the environment steps its config asks for."""
    target = OmegaConf.load(run / "config.yaml").online_env_steps
    return max((row["env_step"] for row in rows if row["phase"] == "online"), default=0) >= target


def offline_reference(rows: list[dict], key: str) -> float:
    values = logged([row for row in rows if row["phase"] == "offline"], key)
    last = values[-1][0]
    return float(np.mean([v for step, v in values if step > last - OFFLINE_WINDOW]))


def row_cells(rows: list[dict], phase: str) -> list[str]:
    features, actions = windows(rows, phase, "feature_change"), windows(rows, phase, "action_change")
    steady = stability([dict(row, phase="online") for row in rows if row["phase"] == phase])["online"]
    return [f"{100 * steady:.1f}", *(f"{v:.4f}" for v in features), *(f"{v:.3f}" for v in actions)]


def main(study: str, algo: str, *variant_args: str) -> None:
    folders = variants(variant_args)
    print(f"| {algo}: run | seed | stability after the switch (points) | feature change, last 2,000 offline "
          "| first 500 after the switch | the rest | action change, last 2,000 offline "
          "| first 500 after the switch | the rest |")
    print("|---" * 9 + "|")
    for seed_dir in sorted(Path(study, "runs").glob("seed*")):
        seed = int(seed_dir.name[4:])
        study_run = one_run(task_folder(seed_dir) / algo)
        rows = read_metrics(study_run / "metrics.csv")
        reference = [offline_reference(rows, "feature_change"), offline_reference(rows, "action_change")]
        runs = {"the study's own online phase": (rows, "online"),
                "offline control": (read_metrics(control_run(study_run, algo) / "metrics.csv"), CONTROL_PHASE)}
        for label, folder in folders.items():
            run = variant_run(folder, seed, algo)
            if run is not None:
                run_rows = read_metrics(run / "metrics.csv")
                if finished(run, run_rows):  # a run still going would give a part of its phase
                    runs[label] = (run_rows, "online")
        for label, (run_rows, phase) in runs.items():
            steady, early_f, late_f, early_a, late_a = row_cells(run_rows, phase)
            print(f"| {label} | {seed} | {steady} | {reference[0]:.4f} | {early_f} | {late_f} "
                  f"| {reference[1]:.3f} | {early_a} | {late_a} |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
