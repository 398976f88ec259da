"""The compare program: a tiny grid of real training runs in a subprocess."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_ALGO_ARGS, TINY_STATE_ARGS, TINY_TRAIN_ARGS

ROOT = Path(__file__).resolve().parent.parent


def run_compare(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calql_vision.compare", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


def table_row(summary: str, algo: str) -> list[str]:
    (line,) = [line for line in summary.splitlines() if line.startswith(f"| {algo} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.slow
def test_a_tiny_grid_writes_its_table_skips_finished_runs_and_survives_a_failing_one(lift_state_demos, tmp_path):
    # Low-dim: what compare does with its runs does not depend on what they observe.
    out = tmp_path / "study"
    args = [*TINY_STATE_ARGS, *TINY_ALGO_ARGS["calql"], "algos=[calql,cql]", "seeds=[0,1]", "jobs=2", f"out={out}",
            f"dataset={lift_state_demos}", "offline_steps=4", "online_env_steps=30", "eval_every=10",
            "eval_episodes=1", "checkpoint_every=4",
            "cql:algo.critic_lr=1e8"]  # every cql run diverges at once; the calql runs must not care
    first = run_compare(args)
    assert first.returncode == 1, first.stderr[-3000:]

    summary = (out / "summary.md").read_text()
    calql, cql = table_row(summary, "calql"), table_row(summary, "cql")
    assert calql[1] == "2/2" and cql[1] == "0/2"
    assert set(cql[2:]) == {"-", "-; reached in 0/0"}, cql
    # Two seeds give a mean and an interval in every defined cell ("-" where undefined).
    assert calql[2].count("[") == 1 and calql[4].count("[") == 1, calql
    assert "cql-seed0: failed (exit code 3; error: training diverged" in summary
    assert "Evaluation size: 1 episodes" in summary
    for figure in ("success.png", "calibration.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = {p.stem: json.loads(p.read_text()) for p in (out / "jobs").glob("*.json")}
    assert {name: r["status"] for name, r in records.items()} == {
        "calql-seed0": "done", "calql-seed1": "done", "cql-seed0": "failed", "cql-seed1": "failed",
        "calql-control-seed0": "done", "calql-control-seed1": "done"}
    assert "cql-control-seed0: skipped (cql-seed0 failed)" in summary
    # Every calql run beside its offline continuation control, paired by seed.
    header = table_row(summary, "algorithm")
    control = dict(zip(header, calql))
    assert control["offline control: final success"].count("[") == 1, control
    assert control["final minus control's (same seed)"].count("[") == 1, control
    for seed in (0, 1):
        (control_dir,) = (out / "runs" / f"seed{seed}" / "lift_state" / "calql-control").iterdir()
        assert f"control_of: {records[f'calql-seed{seed}']['run']}" in (control_dir / "config.yaml").read_text()
    for seed in (0, 1):
        (run_dir,) = (out / "runs" / f"seed{seed}" / "lift_state" / "calql").iterdir()
        assert records[f"calql-seed{seed}"]["run"] == str(run_dir)
        assert "seed: %d" % seed in (run_dir / "config.yaml").read_text()
    finished = {name: Path(r["run"], "metrics.csv").stat().st_mtime_ns for name, r in records.items()
                if r["status"] == "done"}

    second = run_compare(args)
    assert second.returncode == 1, second.stderr[-3000:]
    assert "4 of 8 runs finished earlier; running 4" in second.stdout
    assert "started calql" not in second.stdout, "finished runs are not run again"
    for name, mtime in finished.items():
        assert Path(records[name]["run"], "metrics.csv").stat().st_mtime_ns == mtime
    assert table_row((out / "summary.md").read_text(), "calql") == calql


def test_a_bad_setting_for_one_algorithm_stops_before_anything_starts(tmp_path):
    out = tmp_path / "study"
    result = run_compare(["algos=[calql,cql]", "seeds=[0]", f"out={out}", "cql:algo.critic_lr=0"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: the cql runs: algo.critic_lr=0.0: expected > 0"]
    assert not out.exists(), "no study directory for a study that never began"


def test_a_pretraining_whose_networks_do_not_fit_is_refused_before_anything_starts(tmp_path):
    out = tmp_path / "study"
    # WSRL's own defaults are 10 LayerNorm critics; Cal-QL pretrains 2 without LayerNorm.
    result = run_compare(["algos=[calql,wsrl]", "seeds=[0]", f"out={out}"])
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip().splitlines() == [
        "error: pretrain_from.wsrl=calql: the networks differ (algo.num_critics 10 against 2, "
        "algo.critic_layer_norm True against False, algo.actor_layer_norm True against False); set "
        "wsrl:algo.num_critics=2 wsrl:algo.critic_layer_norm=false wsrl:algo.actor_layer_norm=false, "
        "or pretrain_from.wsrl=null to pretrain wsrl itself"]


@pytest.mark.parametrize("grid", [["seeds=[]"], ["algos=[]"]])
def test_an_empty_grid_is_refused_before_anything_starts(grid, tmp_path):
    out = tmp_path / "study"
    result = run_compare([*grid, f"out={out}"])
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip().splitlines()[-1].endswith("an empty grid runs nothing; expected at least one "
                                                          "algorithm and one seed")


def test_compare_sets_seed_and_algo_itself(tmp_path):
    result = run_compare(["seed=3", f"out={tmp_path / 'study'}"])
    assert result.returncode == 2 and "seed= is set by compare for each run; use seeds=[...]" in result.stderr


@pytest.mark.slow
def test_a_compare_killed_outright_leaves_no_trainer_behind_and_its_rerun_finishes_every_run(lift_demos, tmp_path):
    import os
    import signal

    out = tmp_path / "study"
    args = [*TINY_TRAIN_ARGS, "algos=[calql]", "seeds=[0]", "control=false", f"out={out}", f"dataset={lift_demos}",
            "offline_steps=200", "online_env_steps=30", "eval_every=100"]
    compare = subprocess.Popen([sys.executable, "-m", "calql_vision.compare", *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = out / "runs" / "seed0" / "lift_visual" / "calql"
    deadline = time.monotonic() + 600
    while not any(len(p.read_text().splitlines()) > 1 for p in runs.glob("*/metrics.csv")):  # training began
        assert compare.poll() is None and time.monotonic() < deadline, "the run never began"
        time.sleep(0.2)
    (run_dir,) = runs.iterdir()
    trainer = int((run_dir / ".lock").read_text())
    compare.send_signal(signal.SIGKILL)
    compare.wait()

    rerun = run_compare(args)  # at once: the trainer may still be saving its checkpoint
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "Every run finished." in (out / "summary.md").read_text()
    assert list(runs.iterdir()) == [run_dir], "the live run was kept and resumed, not deleted or doubled"
    with pytest.raises(ProcessLookupError):
        os.kill(trainer, 0)  # the first trainer stopped with its compare
    steps = [int(row.split(",")[1]) for row in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] >= 200


def test_a_failure_s_reason_is_this_attempt_s_error_line_or_its_signal(tmp_path):
    from calql_vision.compare import last_error

    log = tmp_path / "run.log"
    log.write_text("error: an earlier attempt failed\n")
    start = log.stat().st_size
    with open(log, "a") as handle:
        handle.write("offline:  17%|###   | 1/6 [00:01<00:05]\r")
    assert last_error(log, -9, start) == "killed by SIGKILL"
    assert last_error(log, 1, 0) == "error: an earlier attempt failed"
    with open(log, "a") as handle:
        handle.write("\nTraceback (most recent call last):\nValueError: bad\n")
    assert last_error(log, 1, start) == "ValueError: bad"



def test_a_trainer_started_by_a_compare_that_ignores_ctrl_c_still_stops_on_it_while_loading(tmp_path):
    """`compare ... &` in a script starts compare with SIGINT ignored, and compare stops its
    trainers with SIGINT. A trainer that inherited the ignore would miss a stop sent while it
    loads (before it installs its own handlers) and train to the end while compare waits."""
    import os
    import signal

    from calql_vision.launchers import LocalLauncher
    from calql_vision.startup import PAUSE_VARIABLE

    log = tmp_path / "train.log"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as compare has it then
    try:
        os.environ[PAUSE_VARIABLE] = "import"  # the trainer waits for a signal while it loads
        trainer = LocalLauncher().start([sys.executable, "-m", "calql_vision.train"], log, "calql-seed0", tmp_path)
    finally:
        del os.environ[PAUSE_VARIABLE]
        signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + 120
        while "paused at import" not in log.read_text():
            assert trainer.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        trainer.send_signal(signal.SIGINT)  # what compare sends
        assert trainer.wait(timeout=60) == 128 + signal.SIGINT
    except subprocess.TimeoutExpired:
        pytest.fail("the trainer ignored compare's stop")
    finally:
        trainer.kill()
    assert log.read_text().strip().splitlines()[-1] == "stopped by SIGINT during start-up"
