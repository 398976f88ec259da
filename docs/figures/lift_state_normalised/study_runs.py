"""What the scripts in this folder read from a study's runs: the one run in a folder, its
evaluations from metrics.csv (calql_vision.plotting.runs.read_metrics and holds: a resume's repeated
steps and a half-written last line are dropped), and evaluate's re-evaluation summaries."""
from __future__ import annotations

import json
from pathlib import Path

from calql_vision.control import CONTROL_SUFFIX
from calql_vision.plotting.runs import holds, read_metrics


def one_run(folder: Path) -> Path:
    """The single run directory in `folder` (ValueError if there are none or several)."""
    (found,) = Path(folder).iterdir()
    return found


def variants(args: list[str] | tuple[str, ...]) -> dict[str, Path]:
    """`label=folder` arguments -> {label: folder} (SystemExit naming a malformed one)."""
    found = {}
    for arg in args:
        label, sep, folder = arg.rpartition("=")
        if not sep or not label:
            raise SystemExit(f"{arg}: expected label=folder")
        found[label] = Path(folder)
    return found


def task_folder(seed_folder: Path) -> Path:
    """`<seed folder>/<task>`: the one task a study's seed folder holds."""
    return one_run(seed_folder)


def variant_run(folder: Path, seed: int, algo: str) -> Path | None:
    """A variant's run of `seed`, `<folder>/seed<k>/<task>/<algo>/<run>`; None where there is
    none or it has not written metrics.csv yet (a run still starting)."""
    seed_folder = Path(folder) / f"seed{seed}"
    if not seed_folder.is_dir():
        return None
    runs = task_folder(seed_folder) / algo
    if runs.is_dir() and (one_run(runs) / "metrics.csv").is_file():
        return one_run(runs)
    return None


def control_run(study_run: Path, algo: str) -> Path:
    """The offline continuation control compare puts beside a study's run of `algo`:
    `<task>/<algo>-control/<run>`."""
    return one_run(Path(study_run).parent.parent / f"{algo}{CONTROL_SUFFIX}")


def evaluations(run: Path, phase: str | None = None) -> list[dict]:
    """The run's metric rows that hold an evaluation, in step order; only `phase`'s if given."""
    return [row for row in read_metrics(Path(run) / "metrics.csv")
            if holds(row) and (phase is None or row["phase"] == phase)]


def summary_path(run: Path, step: int) -> Path | None:
    """evaluate's summary.json for the run's checkpoint at `step`, if it was re-evaluated."""
    found = sorted((Path(run) / "eval").glob(f"step_{step}-seed*/summary.json"))
    return found[0] if found else None


def reevaluated(run: Path, step: int) -> float | None:
    """Success of that re-evaluation, None if there is none."""
    found = summary_path(run, step)
    return json.loads(found.read_text())["success_rate"] if found else None
