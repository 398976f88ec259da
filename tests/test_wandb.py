"""Weights & Biases logging (logger=wandb) with the real package in offline mode: what the
run files hold is read back and set against metrics.csv."""
from __future__ import annotations

import csv
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from calql_vision.config import ConfigError, TrainConfig, load_config
from conftest import ROOT, TINY_ALGO_ARGS, TINY_STATE_ARGS

wandb = pytest.importorskip("wandb")  # requirements-test.txt installs it; a user's machine may not

BLOCK = 32768  # W&B's run file: LevelDB's log format (32 KiB blocks, 7-byte record headers)


def wandb_records(path: Path) -> list:
    """Every protobuf Record of an offline run file (`run-<id>.wandb`), in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    records, pending, position = [], b"", 7  # after the file's own 7-byte header
    while position + 7 <= len(data):
        left = BLOCK - position % BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        position += 7
        if kind == 0 and length == 0:  # zero padding to the end of the block
            position += left - 7
            continue
        part = data[position:position + length]
        position += length
        pending = part if kind in (1, 2) else pending + part  # FULL / FIRST start a record
        if kind in (1, 4):  # FULL / LAST end one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def history(path: Path) -> list[dict]:
    rows = []
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def offline_env(tmp_path: Path) -> dict:
    """No API key anywhere (HOME elsewhere: no ~/.netrc), so wandb_mode=auto goes offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path / "home")
    return env


def run_train(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calql_vision.train", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=offline_env(tmp_path))


def test_logger_takes_one_name_or_a_list_and_refuses_unknown_ones():
    def logger(*argv):
        return list(load_config(TrainConfig, list(argv), "calql_vision.train", "", base_file="base.yaml").logger)

    assert logger() == ["tensorboard"]
    assert logger("logger=wandb") == ["wandb"]
    assert logger("logger=[tensorboard,wandb]") == ["tensorboard", "wandb"]
    assert logger("logger=[]") == []
    with pytest.raises(ConfigError, match="logger"):
        logger("logger=mlflow")


def test_asking_for_wandb_without_the_package_is_one_line_and_makes_no_run(tmp_path, monkeypatch, capsys):
    import calql_vision.wandb_run as wandb_run
    from calql_vision import train

    monkeypatch.setattr(wandb_run.importlib.util, "find_spec", lambda name: None)
    code = train.main(["task=lift_state", "logger=wandb", f"runs_root={tmp_path / 'runs'}"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "needs the wandb package" in error[0] and "pip install wandb" in error[0]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_an_offline_wandb_run_holds_the_metrics_csv_values_and_a_resume_continues_it(lift_state_demos, tmp_path):
    args = [*TINY_STATE_ARGS, *TINY_ALGO_ARGS["calql"], f"dataset={lift_state_demos}", "offline_steps=8",
            "online_env_steps=8", "eval_every=8", "logger=[tensorboard,wandb]", "wandb_tags=[tiny]",
            f"runs_root={tmp_path / 'runs'}"]
    first = run_train(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs" / "lift_state" / "calql").iterdir()
    said = [line for line in first.stdout.splitlines() if line.startswith("W&B:")]
    assert len(said) == 1 and "offline" in said[0] and "no API key" in said[0] and "wandb sync" in said[0]
    identity = (run_dir / "wandb_id").read_text().strip()
    (run_file,) = offline_runs(run_dir)
    assert run_file.name == f"run-{identity}.wandb"
    records = wandb_records(run_file)
    (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run_record.run_id == identity and list(run_record.tags) == ["tiny"]
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["algo"]["name"] == "calql" and config["offline_steps"] == 8  # the resolved config
    logged = history(run_file)
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    compared = 0
    for row in rows:  # every value of every row, under phase/column, at the row's step
        at_step = {k: v for h in logged if h.get("step") == int(row["step"]) for k, v in h.items()}
        for column, value in row.items():
            if column in ("phase", "step", "env_step") or value == "" or math.isnan(float(value)):
                continue
            assert at_step[f"{row['phase']}/{column}"] == pytest.approx(float(value), rel=1e-6), (row["step"], column)
            compared += 1
    assert compared > 50
    keys = {k for h in logged for k in h}
    assert any(k.startswith("eval/video") for k in keys), "the evaluation videos"
    assert any(k.startswith("calibration/offline") for k in keys), "the calibration snapshot's figure"

    # Resumed with a larger budget: the same W&B run continues past the first run's last step.
    resumed = run_train([f"resume={run_dir}", "online_env_steps=16", "threads=1"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run_dir / "wandb_id").read_text().strip() == identity
    first_file, second_file = offline_runs(run_dir)
    assert second_file.name == f"run-{identity}.wandb" and first_file != second_file
    steps_before = {h["step"] for h in history(first_file) if "step" in h}
    steps_after = {h["step"] for h in history(second_file) if "online/td_loss" in h}
    # It resumed from the first run's final checkpoint: its rows all come after the first's.
    assert steps_after and min(steps_after) > max(steps_before)
    with open(run_dir / "metrics.csv", newline="") as f:
        assert {int(row["step"]) for row in csv.DictReader(f) if row["phase"] == "online"} >= steps_after


@pytest.mark.slow
def test_compare_groups_a_study_s_runs_and_tags_algorithm_seed_and_control(lift_state_demos, tmp_path):
    out = tmp_path / "my_study"
    args = [*TINY_STATE_ARGS, *TINY_ALGO_ARGS["calql"], "algos=[calql]", "seeds=[3]", f"out={out}",
            f"dataset={lift_state_demos}", "offline_steps=8", "online_env_steps=8", "logger=wandb"]
    result = subprocess.run([sys.executable, "-m", "calql_vision.compare", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=900, env=offline_env(tmp_path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    labels = {}
    for run_file in out.glob("runs/seed3/lift_state/*/*/wandb/offline-run-*/run-*.wandb"):
        (run,) = [r.run for r in wandb_records(run_file) if r.WhichOneof("record_type") == "run"]
        labels[run_file.parents[3].name] = (run.run_group, list(run.tags))
    assert labels == {"calql": ("my_study", ["calql", "seed3"]),
                      "calql-control": ("my_study", ["calql", "seed3", "control"])}
