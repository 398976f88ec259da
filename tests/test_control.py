"""The offline continuation control (train control_of=<run>) and the early evaluations after
the switch: real runs on the low-dim Lift task through the real program."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from calql_vision.control import early_evaluation_points, equivalent_env_step
from conftest import ROOT, TINY_ALGO_ARGS, TINY_STATE_ARGS

OFFLINE, ONLINE, EVERY = 8, 24, 8
# Losses of one update, logged every 2 updates: equal only if the control trains exactly as the
# same run would have gone on offline.
TRAINING_COLUMNS = ("td_loss", "critic_loss", "actor_loss", "alpha", "cql_gap")


def run_train(args: list[str], runs_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calql_vision.train", *args, f"runs_root={runs_root}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def rows_of(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def only_run(folder: Path) -> Path:
    (run_dir,) = folder.iterdir()
    return run_dir


@pytest.fixture(scope="module")
def online_run(lift_state_demos, tmp_path_factory) -> Path:
    """A tiny Cal-QL run: 8 offline updates, 24 online steps (utd 1, no warm-up)."""
    root = tmp_path_factory.mktemp("runs")
    result = run_train([*TINY_STATE_ARGS, *TINY_ALGO_ARGS["calql"], f"dataset={lift_state_demos}", "eval_video=false",
                        f"offline_steps={OFFLINE}", f"online_env_steps={ONLINE}", f"eval_every={EVERY}"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run(root / "lift_state" / "calql")


def test_a_control_row_stands_at_the_online_run_s_env_step_of_as_many_updates():
    class Settings:
        online_env_steps = 1000

        class algo:
            utd, warmup_steps = 4, 100

    assert [equivalent_env_step(Settings, n) for n in (0, 1, 4, 5, 400)] == [0, 101, 101, 102, 200]


def test_early_evaluations_halve_towards_the_switch():
    assert early_evaluation_points(1000, 2) == {500, 250}
    assert early_evaluation_points(1000, 0) == set()
    assert early_evaluation_points(2, 3) == {1}  # what rounds to 0 is dropped


@pytest.mark.slow
def test_the_online_run_evaluates_early_after_the_switch(online_run):
    evaluated = [(r["phase"], int(r["step"])) for r in rows_of(online_run) if r["eval_success_rate"]]
    online = [step for phase, step in evaluated if phase == "online"]
    # eval_every=8 and eval_early=2: 2 and 4 updates into the online phase, then every 8.
    assert online[:3] == [OFFLINE + 2, OFFLINE + 4, OFFLINE + 8], evaluated
    assert ("offline", OFFLINE) in evaluated


@pytest.mark.slow
def test_a_control_trains_on_exactly_as_the_offline_phase_would_have_gone_on(online_run, lift_state_demos, tmp_path):
    result = run_train([f"control_of={online_run}", "threads=1"], tmp_path / "controls")
    assert result.returncode == 0, result.stderr[-3000:]
    control = only_run(tmp_path / "controls" / "lift_state" / "calql-control")
    # The reference: the same run with no online phase and the offline budget raised by as many
    # updates as the online phase made.
    result = run_train([*TINY_STATE_ARGS, *TINY_ALGO_ARGS["calql"], f"dataset={lift_state_demos}", "eval_video=false",
                        f"offline_steps={OFFLINE + ONLINE}", "online_env_steps=0", f"eval_every={EVERY}"],
                       tmp_path / "longer")
    assert result.returncode == 0, result.stderr[-3000:]
    longer = {int(r["step"]): r for r in rows_of(only_run(tmp_path / "longer" / "lift_state" / "calql"))}

    rows = rows_of(control)
    source_rows = [r for r in rows_of(online_run) if int(r["step"]) <= OFFLINE and r["phase"] == "offline"]
    assert rows[:len(source_rows)] == source_rows, "the rows up to the switch are the run's own"
    after = rows[len(source_rows):]
    assert {r["phase"] for r in after} == {"control"}
    assert [int(r["step"]) for r in after][-1] == OFFLINE + ONLINE
    for row in after:
        step = int(row["step"])
        assert int(row["env_step"]) == step - OFFLINE  # utd 1, no warm-up: one update per env step
        for column in TRAINING_COLUMNS:
            assert row[column] == longer[step][column], (step, column)
    # Evaluated at the online run's update counts (early ones included), not elsewhere.
    online_evals = [int(r["step"]) for r in rows_of(online_run) if r["phase"] == "online" and r["eval_success_rate"]]
    assert [int(r["step"]) for r in after if r["eval_success_rate"]] == online_evals
    assert not list(control.glob("online_replay_*.npz")), "a control never steps an environment"
    assert (control / "calibration" / f"step_{OFFLINE + ONLINE}.npz").is_file()
    assert "control_of: " + str(online_run) in (control / "config.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("extra, message", [
    (["batch_size=16"], "cannot change batch_size (8 -> 16)"),
    (["offline_steps=20"], "cannot change offline_steps (8 -> 20)"),
    (["eval_episodes=5"], "cannot change eval_episodes (2 -> 5)"),
])
def test_a_control_that_would_not_be_its_run_is_refused_before_a_directory_exists(online_run, extra, message,
                                                                                   tmp_path):
    result = run_train([f"control_of={online_run}", *extra], tmp_path / "controls")
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "controls").exists()


@pytest.mark.slow
def test_a_run_without_a_switch_of_its_own_has_no_control(tmp_path):
    result = run_train([f"control_of={tmp_path / 'nowhere'}"], tmp_path / "controls")
    assert result.returncode == 2 and "control_of=" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "controls").exists()
