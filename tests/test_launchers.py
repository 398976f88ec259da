"""compare's launchers: the Slurm one through submitit's local executor (the same jobs, run on
this machine), against the local one, and a preempted job that resumes its run."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, TINY_ALGO_ARGS, TINY_STATE_ARGS

pytest.importorskip("submitit")  # requirements-test.txt installs it


def run_compare(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calql_vision.compare", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


def table(study: Path) -> list[str]:
    return [line for line in (study / "summary.md").read_text().splitlines() if line.startswith("|")]


@pytest.fixture(scope="module")
def tiny_grid(lift_state_demos) -> list[str]:
    return [*TINY_STATE_ARGS, "calql:algo.cql_n_actions=2", "algos=[calql,iql]", "seeds=[0]", "control=false",
            f"dataset={lift_state_demos}", "offline_steps=8", "online_env_steps=8", "jobs=2"]


@pytest.fixture(scope="module")
def local_table(tiny_grid, tmp_path_factory) -> list[str]:
    """The tiny grid's table run on this machine with the local launcher: what every launcher must reproduce."""
    out = tmp_path_factory.mktemp("local")
    local = run_compare([*tiny_grid, f"out={out}"])
    assert local.returncode == 0, local.stdout[-2000:] + local.stderr[-2000:]
    return table(out)


@pytest.mark.slow
def test_a_grid_through_submitit_writes_the_summary_a_local_grid_writes(tiny_grid, local_table, tmp_path):
    slurm = run_compare([*tiny_grid, f"out={tmp_path / 'slurm'}", "launcher=slurm", "slurm_cluster=local"])
    assert slurm.returncode == 0, slurm.stdout[-2000:] + slurm.stderr[-2000:]
    assert table(tmp_path / "slurm") == local_table  # the same runs, the same numbers
    assert list((tmp_path / "slurm" / "slurm").iterdir()), "submitit's job folder"
    again = run_compare([*tiny_grid, f"out={tmp_path / 'slurm'}", "launcher=slurm", "slurm_cluster=local"])
    assert again.returncode == 0 and "started" not in again.stdout  # finished runs are not submitted again
    assert table(tmp_path / "slurm") == local_table


def task_of(controller: int) -> int:
    """The job's task process (submitit's `_submit`), the controller's one child."""
    children = Path(f"/proc/{controller}/task/{controller}/children")
    deadline = time.monotonic() + 120
    while not children.read_text().split():
        assert time.monotonic() < deadline, "submitit never started the task"
        time.sleep(0.1)
    return int(children.read_text().split()[0])


@pytest.mark.slow
def test_a_preempted_job_stops_its_trainer_with_a_checkpoint_and_is_resubmitted_as_its_resume(
        lift_state_demos, tmp_path):
    from calql_vision.launchers import SlurmLauncher

    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "calql_vision.train", *TINY_STATE_ARGS, *TINY_ALGO_ARGS["calql"],
               f"dataset={lift_state_demos}", "offline_steps=8", "online_env_steps=400", "eval_every=1000",
               "checkpoint_every=4", f"runs_root={runs}"]
    settings = OmegaConf.create({"slurm_cluster": "local", "slurm_time_min": 60, "threads": 1,
                                 "slurm_partition": None, "slurm_gpus": 0})
    log = tmp_path / "job.log"
    handle = SlurmLauncher(tmp_path / "slurm", settings).start(command, log, "tiny", runs / "lift_state" / "calql")
    task = task_of(handle.job._process.pid)
    deadline = time.monotonic() + 300
    while not list(runs.glob("lift_state/calql/*/checkpoints/step_*.pt")):  # trained and saved at least once
        assert handle.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    os.kill(task, signal.SIGUSR2)  # what Slurm sends a job it preempts (submitit's signal)
    while handle.poll() is None:
        assert time.monotonic() < deadline + 300, log.read_text()[-2000:]
        time.sleep(0.5)
    text = log.read_text()
    assert handle.returncode == 0, text[-3000:]
    (run_dir,) = (runs / "lift_state" / "calql").iterdir()
    assert "stopped" in text and f"resume={run_dir}" in text.replace("\r", "\n"), text[-3000:]
    with open(run_dir / "metrics.csv", newline="") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f)]
    assert steps == sorted(set(steps)) and steps[-1] == 8 + 400  # one run, every row once, to the end


def test_slurm_without_slurm_is_one_line_and_makes_no_study(tmp_path):
    if shutil.which("sbatch"):
        pytest.skip("this machine has Slurm")
    result = run_compare(["task=lift_state", "algos=[iql]", "seeds=[0]", "launcher=slurm", f"out={tmp_path / 'study'}"])
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "no Slurm here" in result.stderr and "slurm_cluster=local" in result.stderr
    assert not (tmp_path / "study").exists()


@pytest.fixture()
def ray_cluster(tmp_path):
    """A one-node Ray cluster on 127.0.0.1, started as a user would (`ray start --head`)."""
    pytest.importorskip("ray")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    started = subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                              "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=300, env=env)


@pytest.mark.slow
def test_a_grid_on_a_ray_cluster_writes_the_summary_a_local_grid_writes(tiny_grid, local_table, tmp_path, ray_cluster):
    on_ray = run_compare([*tiny_grid, f"out={tmp_path / 'ray'}", "launcher=ray", f"ray_address={ray_cluster}"])
    assert on_ray.returncode == 0, on_ray.stdout[-2000:] + on_ray.stderr[-2000:]
    assert table(tmp_path / "ray") == local_table


def test_ray_without_a_cluster_is_one_line_and_makes_no_study(tmp_path):
    pytest.importorskip("ray")
    result = run_compare(["task=lift_state", "algos=[iql]", "seeds=[0]", "launcher=ray", "ray_address=127.0.0.1:9",
                          f"out={tmp_path / 'study'}"])
    assert result.returncode == 2 and "launcher=ray ray_address=127.0.0.1:9" in result.stderr, result.stderr
    assert not (tmp_path / "study").exists()
