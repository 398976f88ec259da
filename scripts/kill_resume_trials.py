"""kill -9 a tiny training run at random moments, resume it until it finishes, and check that
the result equals one uninterrupted run's (agent tensors and counters, bit for bit).

    ./run.sh python scripts/kill_resume_trials.py dataset=<demos.hdf5> [trials=20] [seed=0] [out=/tmp/kill_trials]

Checkpoints are written after every update, so many kills land inside a checkpoint or replay
write. A kill before the first checkpoint leaves nothing to resume: that run starts again, as
does a first run that finished before its kill (every trial has at least one kill).
"""
from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
from calql_vision.checkpoint import checkpoint_differences  # noqa: E402
from calql_vision.run_dir import RunDir  # noqa: E402

TINY_RUN = [
    "task=lift_visual", "task.image_size=48", "task.horizon=15",
    "encoder.channels=8", "encoder.strides=[2,2]", "encoder.feature_dim=16",
    "algo.hidden_dims=[32,32]", "algo.cql_n_actions=2", "batch_size=8",
    "offline_steps=10", "online_env_steps=30", "eval_every=1000", "eval_episodes=1",
    "log_every=2", "checkpoint_every=1", "threads=1", "eval_video=false",
]


def train(args: list[str], kill_after: float | None = None) -> int:
    """The trainer's exit code; with kill_after, SIGKILL after that many seconds (None if it
    finished first)."""
    process = subprocess.Popen([sys.executable, "-m", "calql_vision.train", *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = process.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.communicate()
        return -signal.SIGKILL
    if process.returncode != 0:
        raise RuntimeError(f"train {' '.join(args)} failed ({process.returncode}): {stderr[-2000:]}")
    return 0


def final_state(run_dir: Path) -> dict:
    return torch.load(RunDir(run_dir).latest, weights_only=False)


def only_run(runs_root: Path) -> Path | None:
    found = list(runs_root.glob("lift_visual/calql/*"))
    return found[0] if found else None


def trial(dataset: str, runs_root: Path, duration: float, rng: random.Random) -> tuple[int, Path]:
    """Kill runs and resumes at random moments until one finishes; returns (kills, run dir).
    A first run that finishes before its kill is started again: every trial has a kill."""
    kills = 0
    while True:
        run_dir = only_run(runs_root)
        if run_dir is not None and (kills == 0 or not any(RunDir(run_dir).checkpoints.glob("*.pt"))):
            shutil.rmtree(run_dir)  # unkilled, or killed before its first checkpoint: start again
            run_dir = None
        args = [f"resume={run_dir}"] if run_dir else [*TINY_RUN, f"dataset={dataset}", f"runs_root={runs_root}"]
        # Two kills at most, then let it finish: every trial ends.
        kill_after = rng.uniform(1.0, duration) if kills < 2 else None
        if train(args, kill_after) != 0:
            kills += 1
        elif kills > 0:
            return kills, only_run(runs_root)


def main(argv: list[str]) -> int:
    options = dict(a.split("=", 1) for a in argv)
    dataset, trials = options["dataset"], int(options.get("trials", 20))
    out = Path(options.get("out", "/tmp/kill_trials"))
    rng = random.Random(int(options.get("seed", 0)))
    shutil.rmtree(out, ignore_errors=True)
    started = time.time()
    train([*TINY_RUN, f"dataset={dataset}", f"runs_root={out / 'whole'}"])
    duration = time.time() - started
    expected = final_state(only_run(out / "whole"))
    failures = 0
    for i in range(trials):
        kills, run_dir = trial(dataset, out / f"trial_{i}", duration, rng)
        problems = checkpoint_differences(expected, final_state(run_dir))
        failures += bool(problems)
        print(f"trial {i}: {kills} kill(s), {'identical' if not problems else 'DIFFERS: ' + ', '.join(problems[:5])}",
              flush=True)
    print(f"{trials - failures}/{trials} trials equal the uninterrupted run (uninterrupted run {duration:.1f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
