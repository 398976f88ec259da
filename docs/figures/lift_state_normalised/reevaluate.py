"""Re-evaluate every checkpoint of a finished compare study with more episodes, then report the
study's numbers (calql_vision.study's definitions) from those evaluations.

    PYTHONPATH=. ./run.sh python docs/figures/lift_state_normalised/reevaluate.py evaluate <study dir> [episodes] [jobs]
    PYTHONPATH=. ./run.sh python docs/figures/lift_state_normalised/reevaluate.py report <study dir> [episodes]

Each evaluation uses the run's own training-time evaluation seeds (evaluate's default), so the
first eval_episodes episodes repeat the training-time evaluation exactly: `report` checks that.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from calql_vision.plotting.runs import holds
from study_runs import evaluations, summary_path  # this folder's reader


def run_dirs(study: Path) -> list[Path]:
    return sorted(p for p in study.glob("runs/seed*/*/*/*") if (p / "metrics.csv").is_file())


def eval_steps(run: Path) -> list[int]:
    return sorted({int(row["step"]) for row in evaluations(run)})


def evaluate_one(run: Path, episodes: int) -> None:
    """Every eval step's checkpoint of one run, in this process (one start-up for all)."""
    from calql_vision.evaluate import EvaluateConfig, evaluate_run

    switch = int(OmegaConf.load(run / "config.yaml").offline_steps)
    for step in eval_steps(run):
        if run.parent.name.endswith("-control") and step <= switch:
            continue  # the source run's checkpoint, evaluated there
        checkpoint = run / "checkpoints" / f"step_{step}.pt"
        done = summary_path(run, step)
        if not checkpoint.is_file() or (done and json.loads(done.read_text())["episodes"] >= episodes):
            continue
        cfg = OmegaConf.merge(OmegaConf.structured(EvaluateConfig),
                              {"run": str(run), "checkpoint": checkpoint.name, "episodes": episodes,
                               "video": False, "threads": 1})
        summary, _ = evaluate_run(cfg)
        print(f"{run} step {step}: {summary['success_rate']:.2f}", flush=True)


def evaluate_all(study: Path, episodes: int, jobs: int) -> None:
    waiting, running = list(run_dirs(study)), []
    while waiting or running:
        while waiting and len(running) < jobs:
            run = waiting.pop(0)
            running.append(subprocess.Popen([sys.executable, __file__, "one", str(run), str(episodes)]))
        running[0].wait()
        running = [p for p in running if p.poll() is None]


def report(study: Path, episodes: int) -> None:
    """The compare table's main columns from the re-evaluations, beside the 20-episode ones."""
    from calql_vision.plotting.runs import read_metrics
    from calql_vision.study import aggregate, run_numbers

    def rows_with(run: Path, source: Path | None) -> tuple[list[dict], list[dict]]:
        rows = read_metrics(run / "metrics.csv")
        redone = []
        for row in rows:
            row = dict(row)
            if holds(row):
                step = int(row["step"])
                path = summary_path(run, step) or (summary_path(source, step) if source else None)
                if path is None:  # an early online evaluation: no checkpoint was kept there
                    row["eval_success_rate"] = math.nan
                    redone.append(row)
                    continue
                summary = json.loads(path.read_text())
                first = summary["per_episode"][: int(OmegaConf.load(run / "config.yaml").eval_episodes)]
                original = float(row["eval_success_rate"])
                repeat = sum(e["success"] for e in first) / len(first)
                assert abs(repeat - original) < 1e-9, f"{run} step {step}: {repeat} against {original}"
                row["eval_success_rate"] = summary["success_rate"]
            redone.append(row)
        return rows, redone

    table, trend = {}, {}
    for run in run_dirs(study):
        algo, seed = run.parent.name, run.parent.parent.parent.name
        source = None
        if algo.endswith("-control"):
            source = next((study / "runs" / seed / run.parent.parent.name / algo[: -len("-control")]).iterdir())
        original, redone = rows_with(run, source)
        table.setdefault(algo, {})[seed] = (run_numbers(original, 0.5), run_numbers(redone, 0.5))
        for row in redone:
            if holds(row):
                trend.setdefault(algo, {}).setdefault(int(row["step"]), []).append(float(row["eval_success_rate"]))
    fields = ["switch", "worst", "dip", "final", "stability_offline", "stability_online"]
    print(f"| algorithm | seeds | episodes | {' | '.join(fields)} |")
    print("|" + "---|" * (len(fields) + 3))
    for algo, seeds in sorted(table.items()):
        for which, name in ((0, "as trained"), (1, f"{episodes}")):
            cells = []
            for field in fields:
                values = [getattr(numbers[which], field) for numbers in seeds.values()]
                agg = aggregate(values)
                cells.append("-" if agg.mean is None else f"{agg.mean:.2f} [{agg.low:.2f}, {agg.high:.2f}]")
            print(f"| {algo} | {len(seeds)} | {name} | {' | '.join(cells)} |")
    print()
    for algo, seeds in sorted(table.items()):
        for seed, numbers in sorted(seeds.items()):
            n = numbers[1]
            print(f"{algo} {seed}: switch {n.switch} worst {n.worst} final {n.final}")
    controls = {algo: seeds for algo, seeds in table.items() if algo.endswith("-control")}
    for control, seeds in sorted(controls.items()):
        algo = control[: -len("-control")]
        gains = [table[algo][seed][1].final - numbers[1].final for seed, numbers in seeds.items() if seed in table[algo]]
        agg = aggregate(gains)
        print(f"{algo}: final minus control's ({episodes} episodes) {agg.mean:+.2f} [{agg.low:+.2f}, {agg.high:+.2f}]; "
              f"per seed {[round(g, 2) for g in gains]}")
    # Mean success over the seeds at each update count: a trend (a policy that gets worse with
    # more training) and a swing (up and down between neighbours) give the same stability figure.
    steps = sorted({step for by_step in trend.values() for step in by_step})
    print(f"\n| mean success, {episodes} episodes | " + " | ".join(f"{s:,}" for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for algo, by_step in sorted(trend.items()):
        seeds = max(len(v) for v in by_step.values())
        cells = [(f"{np.mean(by_step[s]):.2f}" + ("" if len(by_step[s]) == seeds else f" ({len(by_step[s])} seeds)"))
                 if s in by_step else "" for s in steps]
        print(f"| {algo} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "one":
        evaluate_one(Path(sys.argv[2]), int(sys.argv[3]))
    elif command == "evaluate":
        evaluate_all(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 50,
                     int(sys.argv[4]) if len(sys.argv) > 4 else 2)
    else:
        report(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 50)
