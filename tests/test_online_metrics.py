"""What a run records of its online phase: stochastic evaluations on the evaluation scenes,
the training episodes of each row, the drift metrics; and every algorithm on a low-dim task
through the real programs (real robosuite env, real scripted demos, tiny budgets)."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from calql_vision.agents import ALGORITHMS, ObsSpec, make_agent
from calql_vision.drift import DriftProbe, drift_columns
from calql_vision.replay import FrameReplay
from calql_vision.train import training_episode_metrics
from conftest import ROOT, TINY_ALGO_ARGS, TINY_STATE_ARGS, task_config

ALGO_ARGS = TINY_ALGO_ARGS
OFFLINE_STEPS, ONLINE_ENV_STEPS = 6, 32


def read_rows(run_dir: Path) -> tuple[list[str], list[dict]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


# ---------------------------------------------------------------------- unit level
def test_training_episode_metrics_by_hand():
    assert training_episode_metrics([]) == {"train_episodes": 0.0}
    episodes = [(1.0, True, True), (0.0, False, True), (1.0, True, True), (0.0, False, False), (0.0, False, False)]
    metrics = training_episode_metrics(episodes)
    assert metrics == {"train_episodes": 5.0, "train_success_rate": 0.4, "train_return": 0.4, "train_grasp_rate": 0.6}
    # An episode carried over from a checkpoint written before grasps were recorded: unknown.
    assert "train_grasp_rate" not in training_episode_metrics([*episodes, (0.0, False, None)])


def probe_replay(spec: ObsSpec, episodes: int = 3, steps: int = 20) -> FrameReplay:
    rng = np.random.default_rng(0)
    replay = FrameReplay(200, {k: spec.image_shape for k in spec.image_keys}, spec.proprio_dim, spec.action_dim)
    for _ in range(episodes):
        replay.add_episode(
            images={k: rng.integers(0, 256, (steps + 1, *spec.image_shape), dtype=np.uint8) for k in spec.image_keys},
            proprio=rng.normal(size=(steps + 1, spec.proprio_dim)).astype(np.float32),
            actions=rng.uniform(-0.9, 0.9, (steps, spec.action_dim)).astype(np.float32),
            rewards=-np.ones(steps, np.float32), terminals=np.zeros(steps, np.float32),
            truncations=np.eye(1, steps, steps - 1, dtype=np.float32)[0], reward_to_go=-np.full(steps, 10, np.float32),
        )
    return replay


@pytest.mark.parametrize("pixels", [True, False])
def test_drift_is_zero_for_a_frozen_agent_and_positive_after_an_update(pixels):
    from omegaconf import OmegaConf

    from calql_vision.agents import algo_schema
    from calql_vision.config import EncoderConfig, load_group_file

    if pixels:
        spec = ObsSpec(("agentview_image",), (3, 32, 32), 9, 7)
        encoder = {"kind": "conv", "channels": 8, "strides": [2, 2], "feature_dim": 16}
    else:
        spec = ObsSpec((), (3, 32, 32), 19, 7)
        encoder = {"kind": "state", "hidden_dims": [], "augment_pad": 0}
    algo = OmegaConf.merge(OmegaConf.structured(algo_schema("calql")), load_group_file("algo", "calql"),
                           {"hidden_dims": [32, 32], "cql_n_actions": 2})
    torch.manual_seed(0)
    agent = make_agent(algo, OmegaConf.merge(OmegaConf.structured(EncoderConfig), encoder), spec,
                       torch.device("cpu"), "fp32")
    replay = probe_replay(spec)
    probe = DriftProbe(replay, torch.device("cpu"), size=32)
    assert len(probe) == 32
    first = probe.measure(agent)
    assert set(first) == {"policy_std", *(f"policy_std_{i}" for i in range(7))}, "no change without an earlier view"
    assert all(v > 0 for v in first.values())
    frozen = probe.measure(agent)
    assert set(frozen) == set(drift_columns(7))
    assert frozen["action_change"] == 0.0 and frozen["feature_change"] == 0.0
    assert all(frozen[f"action_change_{i}"] == 0.0 for i in range(7))
    for seed in range(3):
        agent.update(replay.sample(16, np.random.default_rng(seed), "cpu"))
    moved = probe.measure(agent)
    assert moved["action_change"] > 0 and all(moved[f"action_change_{i}"] >= 0 for i in range(7))
    assert moved["action_change"] == pytest.approx(np.mean([moved[f"action_change_{i}"] for i in range(7)]))
    # The pixel encoder moves with the critic; the state vector itself never changes.
    assert (moved["feature_change"] > 0) if pixels else (moved["feature_change"] == 0.0)
    # What a checkpoint keeps gives a resumed probe the same next measurement.
    assert all(t.device.type == "cpu" for t in probe.state().values()), "kept on the CPU, whatever the agent's device"
    resumed = DriftProbe(replay, torch.device("cpu"), size=32)
    resumed.load_state(probe.state())
    agent.update(replay.sample(16, np.random.default_rng(9), "cpu"))
    assert resumed.measure(agent) == probe.measure(agent)


def test_resuming_a_run_written_by_older_code_keeps_its_old_columns(tmp_path):
    from calql_vision.metrics import MetricsLogger

    path = tmp_path / "metrics.csv"
    path.write_text("phase,step,env_step,eval_success_rate,eval_return,td_loss,episode_return,episode_success\n"
                    "online,10,5,,,0.5,1.0,1.0\nonline,20,10,,,0.4,0.0,0.0\n")
    logger = MetricsLogger(path, tmp_path / "tb", ["td_loss"], resume_step=10, action_dim=7)
    logger.log("online", 12, 6, {"td_loss": 0.3, "train_episodes": 1.0, "action_change_6": 0.1})
    logger.close()
    columns, rows = read_rows(tmp_path)
    assert {"episode_return", "episode_success", "train_episodes", "action_change_6"} <= set(columns)
    assert [(r["step"], r["episode_success"], r["train_episodes"]) for r in rows] == [("10", "1.0", ""), ("12", "", "1.0")]


# ---------------------------------------------------------------------- a trainer on the real env
def build_trainer(demos: Path, run_dir: Path, *extra: str):
    from calql_vision.config import TrainConfig, load_config
    from calql_vision.run_dir import RunDir
    from calql_vision.launch import DESCRIPTION
    from calql_vision.train import Trainer

    cfg = load_config(TrainConfig, [*TINY_STATE_ARGS, *ALGO_ARGS["calql"], f"dataset={demos}", *extra],
                      "calql_vision.train", DESCRIPTION, base_file="base.yaml")
    run_dir.mkdir()
    return Trainer(cfg, RunDir(run_dir))


def test_stochastic_evaluation_uses_the_same_scenes_and_leaves_training_randomness_alone(lift_state_demos, tmp_path):
    trainer = build_trainer(lift_state_demos, tmp_path / "run", "eval_episodes=3", "eval_video=false")
    scenes: dict[str, list[int]] = {}
    actions: dict[str, list[np.ndarray]] = {}
    reset, act = trainer.envs.reset, trainer._act

    def recording_reset(seeds, role="train"):
        if role == "eval":
            scenes.setdefault(current, []).extend(seeds.values())
        return reset(seeds, role)

    def recording_act(obs, deterministic, generator=None):
        action = act(obs, deterministic, generator)
        actions.setdefault(current, []).append(action)
        return action

    trainer.envs.reset, trainer._act = recording_reset, recording_act
    try:
        torch_state, numpy_state = torch.get_rng_state(), trainer.rng.bit_generator.state
        results = {}
        for current, deterministic in (("deterministic", True), ("stochastic", False), ("stochastic again", False)):
            results[current] = trainer.evaluate(deterministic=deterministic)
        assert torch.equal(torch.get_rng_state(), torch_state) and trainer.rng.bit_generator.state == numpy_state
    finally:
        trainer.envs.close()
    assert scenes["deterministic"] == scenes["stochastic"] == [trainer._eval_seed + i for i in range(3)]
    assert [e.seed for e in results["stochastic"].episodes] == [e.seed for e in results["deterministic"].episodes]
    # The stochastic policy acts differently, and the same way at every evaluation.
    assert not np.allclose(actions["deterministic"][0], actions["stochastic"][0])
    np.testing.assert_array_equal(np.stack(actions["stochastic"]), np.stack(actions["stochastic again"]))
    assert results["stochastic"].episodes == results["stochastic again"].episodes


# ---------------------------------------------------------------------- every algorithm, real programs
def run_train(args: list[str], runs_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "calql_vision.train", *args, f"runs_root={runs_root}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def episode_ends(run_dir: Path) -> list[tuple[int, bool]]:
    """(env step at which it ended, success) of every online episode, read from the run's
    saved online replay: with one worker an episode enters the replay when it ends, one
    transition per environment step, so its end is the running count of transitions."""
    checkpoint = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)
    replay = FrameReplay.load(run_dir / checkpoint["online_replay"])
    ends = np.flatnonzero((replay.terminals + replay.truncations)[: len(replay)] > 0)
    return [(int(end) + 1, bool(replay.terminals[end] > 0)) for end in ends]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_on_a_low_dim_task_then_evaluate_with_a_video(name, lift_state_demos, tmp_path):
    assert set(ALGO_ARGS) == set(ALGORITHMS)
    result = run_train([*TINY_STATE_ARGS, f"algo={name}", *ALGO_ARGS[name], f"dataset={lift_state_demos}",
                        f"offline_steps={OFFLINE_STEPS}", f"online_env_steps={ONLINE_ENV_STEPS}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "lift_state" / name).iterdir()
    columns, rows = read_rows(run_dir)
    assert {"eval_stochastic_success_rate", "eval_grasp_rate", "eval_stochastic_grasp_rate", "train_success_rate",
            "train_episodes", "train_grasp_rate", *drift_columns(7)} <= set(columns)
    evaluated = [row for row in rows if row["eval_success_rate"] != ""]
    assert evaluated and all(row["eval_stochastic_success_rate"] != "" for row in evaluated)
    assert all(0 <= float(row[key]) <= 1 for row in evaluated for key in ("eval_grasp_rate", "eval_stochastic_grasp_rate"))
    # The probe set is dataset observations: SAC from scratch reads none, so it has no drift metrics.
    probed = ALGORITHMS[name].uses_dataset
    assert all((row["action_change"] != "" and row["policy_std_6"] != "") == probed for row in rows[1:])
    online = [row for row in rows if row["phase"] == "online"]
    checkpoint = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)
    # The state statistics are the training frames' (encoder.normalize_state, on for state
    # tasks), fixed at creation: every checkpoint carries them; SAC reads no data and none.
    statistics = checkpoint["agent"]["state_normalizer"]
    if probed:
        from datasets import load_robomimic_hdf5

        frames = load_robomimic_hdf5(lift_state_demos, [], list(task_config("lift_state").proprio_keys),
                                     gamma=0.99, filter_key="train", show_progress=False).proprio.astype(np.float64)
        np.testing.assert_allclose(statistics["mean"], frames.mean(0), atol=1e-5)
        np.testing.assert_allclose(statistics["std"], frames.std(0) + 1e-3, atol=1e-5)
    else:
        assert not statistics["mean"].any() and bool((statistics["std"] == 1).all())
    assert sum(float(row["train_episodes"]) for row in online) == checkpoint["counters"]["episodes"] > 0
    if name != "aca":  # ACA's replay also holds the offline episodes it was seeded with
        ends = episode_ends(run_dir)
        previous = int(rows[rows.index(online[0]) - 1]["env_step"]) if rows.index(online[0]) else 0
        for row in online:  # a hand count of the episodes that ended since the previous row
            step = int(row["env_step"])
            ended = [success for end, success in ends if previous < end <= step]
            assert float(row["train_episodes"]) == len(ended), (row["env_step"], ends)
            if ended:
                assert float(row["train_success_rate"]) == pytest.approx(np.mean(ended))
                assert 0 <= float(row["train_grasp_rate"]) <= 1
            else:
                assert row["train_success_rate"] == row["train_grasp_rate"] == ""
            previous = step
    evaluation = subprocess.run([sys.executable, "-m", "calql_vision.evaluate", f"run={run_dir}", "episodes=1",
                                 "video_episodes=1", "video_size=64", "threads=1"],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    (video,) = run_dir.glob("eval/*/episode_0.mp4")
    import imageio.v2 as imageio

    frames = imageio.mimread(video)
    assert len(frames) == 16 and frames[0].shape == (64, 64, 3), "the scene alone: a state policy has no view"
