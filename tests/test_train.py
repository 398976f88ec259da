"""The training program end to end (real CLI, real env, tiny budgets), resume, and bench."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY_TRAIN_ARGS

pytestmark = pytest.mark.slow  # real programs in subprocesses




def run_train(args: list[str], runs_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "calql_vision.train", *args, f"runs_root={runs_root}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )


def read_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_run(lift_demos, tmp_path_factory) -> Path:
    runs_root = tmp_path_factory.mktemp("runs")
    result = run_train([*TINY_TRAIN_ARGS, f"dataset={lift_demos}", "offline_steps=8", "online_env_steps=15"], runs_root)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (runs_root / "lift_visual" / "calql").iterdir()
    return run_dir


def test_smoke_run_writes_the_run_directory(finished_run):
    files = {p.name for p in finished_run.iterdir()}
    assert {"config.yaml", "metrics.csv", "tensorboard", "checkpoints"} <= files
    assert any(name.startswith("online_replay_") for name in files)
    assert list((finished_run / "tensorboard").glob("events.out.tfevents.*"))
    rows = read_rows(finished_run)
    phases = [row["phase"] for row in rows]
    assert phases[0] == "offline" and phases[-1] == "online" and phases == sorted(phases, key=["offline", "online"].index)
    steps = [int(row["step"]) for row in rows]
    assert steps == sorted(set(steps)), "one row per log point, on one increasing step axis"
    assert all(int(r["env_step"]) == 0 for r in rows if r["phase"] == "offline")
    assert int(rows[-1]["env_step"]) >= 15
    for column in ("td_loss", "cql_gap", "bound_rate", "q_data_mean", "mc_return_mean", "actor_loss", "alpha", "entropy"):
        assert all(row[column] != "" for row in rows), column
    evaluated = [row for row in rows if row["eval_success_rate"] != ""]
    assert {r["phase"] for r in evaluated} == {"offline", "online"}
    checkpoint = torch.load(finished_run / "checkpoints" / "latest.pt", weights_only=False)
    assert checkpoint["counters"]["step"] == steps[-1]
    assert checkpoint["counters"]["switched"] is True
    assert (finished_run / checkpoint["online_replay"]).is_file()
    assert not list(finished_run.rglob("*.tmp*")), "no temporary file left behind"
    evaluation_steps = [int(r["step"]) for r in evaluated]
    videos = sorted(int(p.stem.split("_")[1]) for p in (finished_run / "videos").glob("step_*.mp4"))
    assert videos == evaluation_steps, "one video per evaluation, named by step"


def test_calibration_snapshots_hold_heldout_and_online_q_and_returns(finished_run):
    import numpy as np

    snapshots = sorted((finished_run / "calibration").glob("step_*.npz"), key=lambda p: int(p.stem.split("_")[1]))
    assert [str(np.load(p)["phase"]) for p in snapshots] == ["offline", "online"]
    offline, online = (np.load(p) for p in snapshots)
    assert int(offline["step"]) == 8 and int(offline["env_step"]) == 0
    assert len(offline["q_valid"]) == len(offline["g_valid"]) > 0, "held-out demos (mask/valid) are measured"
    assert len(offline["q_online"]) == 0 and len(online["q_online"]) >= 15
    assert np.all(np.isfinite(online["q_online"])) and np.all(online["g_online"] <= 0)


def test_resume_continues_the_counters_without_repeating_steps(finished_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    before = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)["counters"]
    rows_before = read_rows(run_dir)
    result = run_train([f"resume={run_dir}", "online_env_steps=30"], tmp_path / "unused")
    assert result.returncode == 0, result.stderr[-3000:]
    after = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)["counters"]
    assert after["env_step"] >= 30 and after["env_step"] > before["env_step"]
    assert after["episodes"] > before["episodes"]
    # Every online env step is followed by one update (utd 1), across the resume.
    assert after["step"] - 8 == after["env_step"]
    rows = read_rows(run_dir)
    steps = [int(row["step"]) for row in rows]
    assert rows[: len(rows_before)] == rows_before
    assert steps == sorted(set(steps)) and steps[-1] == after["step"]
    assert not (tmp_path / "unused").exists(), "resume writes into the run it continues"


def test_resume_after_a_kill_truncates_rows_past_the_checkpoint(finished_run, tmp_path):
    """A run killed after its last checkpoint logged rows that the resumed run will redo."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    checkpoint_step = torch.load(run_dir / "checkpoints" / "step_8.pt", weights_only=False)["counters"]["step"]
    shutil.copy(run_dir / "checkpoints" / "step_8.pt", run_dir / "checkpoints" / "latest.pt")
    result = run_train([f"resume={run_dir}"], tmp_path / "unused")
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [int(row["step"]) for row in read_rows(run_dir)]
    assert steps == sorted(set(steps)), "rows after the checkpoint were replaced, not duplicated"
    assert checkpoint_step == 8 and steps[-1] >= 8 + 15


def test_unknown_key_and_missing_dataset_are_clear_errors(tmp_path):
    result = run_train(["task=lift_visual", "batch_sise=8"], tmp_path)
    assert result.returncode == 2 and "unknown config key 'batch_sise'" in result.stderr and "'batch_size'" in result.stderr
    result = run_train(["task=lift_visual", f"dataset={tmp_path / 'missing.hdf5'}"], tmp_path / "runs")
    assert result.returncode == 2 and "missing.hdf5" in result.stderr
    assert not (tmp_path / "runs").exists(), "a bad start leaves no run directory behind"
    result = run_train(["task=no_such_task"], tmp_path)
    assert result.returncode == 2 and "lift_visual" in result.stderr and "pick_place_visual" in result.stderr


def test_dataset_with_other_image_size_is_rejected(lift_demos, tmp_path):
    result = run_train(["task=lift_visual", "task.image_size=32", f"dataset={lift_demos}", "offline_steps=1"], tmp_path)
    assert result.returncode == 2
    assert "task.image_size=48" in result.stderr
    assert not list(tmp_path.rglob("config.yaml")), "the run that never started was removed"


def test_help_lists_the_keys():
    result = subprocess.run([sys.executable, "-m", "calql_vision.train", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0
    for key in ("offline_steps", "online_env_steps", "algo.mixing_ratio", "algo.calibrated", "encoder.kind", "resume",
                "preset", "init_from"):
        assert key in result.stdout
    # Each algorithm's own keys: IQL's help has its expectile and none of Cal-QL's keys.
    iql = subprocess.run([sys.executable, "-m", "calql_vision.train", "algo=iql", "--help"], cwd=ROOT,
                         capture_output=True, text=True)
    assert iql.returncode == 0 and "algo.expectile=0.9" in iql.stdout and "cql_weight" not in iql.stdout
    assert "aca | calql | cql | iql | rlpd | sac | wsrl" in iql.stdout


def test_a_key_of_another_algorithm_is_an_error_listing_the_valid_keys(tmp_path):
    result = subprocess.run([sys.executable, "-m", "calql_vision.train", "algo=iql", "algo.cql_weight=5",
                             f"runs_root={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown config key 'algo.cql_weight'" in result.stderr and "'expectile'" in result.stderr
    assert not list(tmp_path.iterdir())


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "calql_vision.bench", "task.image_size=32", "encoder.channels=8", "encoder.strides=[2,2]",
         "batch_size=8", "warmup=1", "windows=2", "window_updates=2", "env_steps=5", "threads=1", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def test_bench_prints_its_figures_for_each_phase():
    result = run_bench()
    assert result.returncode == 0, result.stderr[-2000:]
    for label in ("algorithm: calql", "gradient updates/s, offline:", "gradient updates/s, online:",
                  "gradient updates/s, offline, precision", "for comparison", "environment steps/s, num_envs=1:",
                  "environment steps/s, num_envs=2:", "1.00x num_envs=1", "replay bytes per stored transition:"):
        assert label in result.stdout
    # An online-only method has no offline update to time; RLPD's online update is 2 critic updates here,
    # and its targets' bootstrap is clipped to the range of the returns bench gives it.
    result = run_bench("algo=rlpd", "algo.num_critics=3", "algo.critic_updates=2", "algo.hidden_dims=[32,32]",
                       "algo.clip_bootstrap=true", "num_envs=[1]")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "offline:" not in result.stdout and "gradient updates/s, online:" in result.stdout
    assert "one update = 2 critic and 1 actor update" in result.stdout


def test_plot_draws_a_real_run(finished_run, tmp_path):
    """plot reads what train writes: curves, diagnostics and the calibration snapshots."""
    result = subprocess.run(
        [sys.executable, "-m", "calql_vision.plot", str(finished_run), f"out={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("success.png", "calibration.png", "diagnostics.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    summary = (tmp_path / "summary.txt").read_text()
    assert "calql" in summary and "regret" in summary


def test_bad_dataset_file_is_a_clear_error_and_leaves_nothing(tmp_path):
    import h5py

    bad = tmp_path / "bad.hdf5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("data/demo_0/rewards", data=[0.0, 1.0])
    result = run_train(["task=lift_visual", f"dataset={bad}"], tmp_path / "runs")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "bad.hdf5" in result.stderr and "demo_0" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "runs").rglob("config.yaml"))
