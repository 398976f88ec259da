"""Every algorithm through the real CLI, init_from, and how each draws its online batches
(real robosuite env, real scripted demos, tiny budgets)."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from calql_vision.agents import ALGORITHMS
from calql_vision.checkpoint import checkpoint_differences
from conftest import ROOT, TINY_ALGO_ARGS, TINY_TRAIN_ARGS

pytestmark = pytest.mark.slow  # real programs in subprocesses

# The shared tiny run without the Cal-QL-only key, plus what each method needs to stay tiny.
BASE_ARGS = [a for a in TINY_TRAIN_ARGS if not a.startswith(("algo.cql_n_actions", "eval_every"))] + ["eval_every=12"]
ALGO_ARGS = TINY_ALGO_ARGS
OFFLINE_STEPS, ONLINE_ENV_STEPS = 6, 30


def run_train(args: list[str], runs_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "calql_vision.train", *args, f"runs_root={runs_root}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )


def algo_args(name: str, demos: Path) -> list[str]:
    return [*BASE_ARGS, f"algo={name}", *ALGO_ARGS[name], f"dataset={demos}"]


def read_rows(run_dir: Path) -> tuple[list[str], list[dict]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def test_every_algorithm_has_a_tiny_run_here():
    assert set(ALGO_ARGS) == set(ALGORITHMS)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_tiny_run_of_every_algorithm_through_the_cli(name, lift_demos, tmp_path):
    result = run_train([*algo_args(name, lift_demos), f"offline_steps={OFFLINE_STEPS}",
                        f"online_env_steps={ONLINE_ENV_STEPS}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "lift_visual" / name).iterdir()
    columns, rows = read_rows(run_dir)
    agent_class = ALGORITHMS[name].agent_class
    assert set(agent_class.METRICS) <= set(columns), "metrics.csv has a column for every metric the agent reports"
    reported = {c for c in agent_class.METRICS if any(row[c] != "" for row in rows)}
    assert {"td_loss", "q_data_mean", "actor_loss"} <= reported
    phases = {row["phase"] for row in rows}
    assert phases == ({"offline", "online"} if ALGORITHMS[name].pretrains else {"online"})
    checkpoint = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)
    counters = checkpoint["counters"]
    warmup = next((int(a.split("=")[1]) for a in ALGO_ARGS[name] if a.startswith("algo.warmup_steps")), 0)
    offline = OFFLINE_STEPS if ALGORITHMS[name].pretrains else 0
    # One update per environment step after the warm-up (utd 1); none during it.
    assert counters["step"] == offline + counters["env_step"] - warmup
    assert counters["env_step"] >= ONLINE_ENV_STEPS and counters["switched"]
    evaluated = [row for row in rows if row["eval_success_rate"] != ""]
    assert evaluated and list((run_dir / "videos").glob("step_*.mp4"))
    assert list((run_dir / "calibration").glob("step_*.npz"))
    # evaluate rebuilding each algorithm's agent from its run: test_online_metrics (low-dim, every
    # algorithm) and test_evaluate (pixels); the agent classes are the same for both.


@pytest.fixture(scope="module")
def calql_pretraining(lift_demos, tmp_path_factory) -> Path:
    """A Cal-QL run that stops at the switch: its pretraining serves the init_from tests."""
    runs_root = tmp_path_factory.mktemp("pretrain")
    result = run_train([*algo_args("calql", lift_demos), "offline_steps=4", "online_env_steps=0"], runs_root)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (runs_root / "lift_visual" / "calql").iterdir()
    return run_dir


def test_init_from_starts_wsrl_and_cql_from_one_calql_pretraining(calql_pretraining, lift_demos, tmp_path):
    pretrained = torch.load(calql_pretraining / "checkpoints" / "step_4.pt", weights_only=False)["agent"]
    for name, extra in (("cql", []), ("wsrl", ["algo.num_critics=2", "algo.critic_layer_norm=false",
                                               "algo.actor_layer_norm=false", "algo.critic_updates=1"])):
        args = [a for a in algo_args(name, lift_demos) if not a.startswith(("algo.num_critics", "algo.critic_updates"))]
        result = run_train([*args, *extra, f"init_from={calql_pretraining}", "offline_steps=50", "online_env_steps=15"],
                           tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        (run_dir,) = (tmp_path / "lift_visual" / name).iterdir()
        _, rows = read_rows(run_dir)
        assert {row["phase"] for row in rows} == {"online"}, "no pretraining of its own"
        # The calibration snapshot at the switch is the pretrained critic's, not a fresh one's.
        snapshot = np.load(sorted((run_dir / "calibration").glob("step_*.npz"))[0])
        assert str(snapshot["phase"]) == "offline" and int(snapshot["step"]) == 0
        source = np.load(calql_pretraining / "calibration" / "step_4.npz")
        np.testing.assert_allclose(snapshot["q_valid"], source["q_valid"], rtol=1e-5, atol=1e-5)
        assert pretrained["encoder"].keys()


def test_init_from_refuses_incompatible_sources_before_creating_a_run(calql_pretraining, lift_demos, tmp_path):
    result = run_train([*algo_args("iql", lift_demos), f"init_from={calql_pretraining}"], tmp_path)
    assert result.returncode == 2
    assert "a calql checkpoint cannot start algo=iql" in result.stderr and "Traceback" not in result.stderr
    # WSRL's default 10 LayerNorm critics cannot load a 2-critic Cal-QL pretraining.
    args = [a for a in algo_args("wsrl", lift_demos) if not a.startswith("algo.num_critics")]
    result = run_train([*args, "algo.num_critics=10", f"init_from={calql_pretraining}"], tmp_path)
    assert result.returncode == 2 and "do not fit algo=wsrl" in result.stderr, result.stderr[-2000:]
    result = run_train([*algo_args("cql", lift_demos), "encoder.channels=16", f"init_from={calql_pretraining}"], tmp_path)
    assert result.returncode == 2 and "['encoder']" in result.stderr
    assert not (tmp_path / "lift_visual").exists() or not any((tmp_path / "lift_visual").rglob("config.yaml"))


def build_trainer(name: str, demos: Path, run_dir: Path, *extra: str):
    from calql_vision.config import TrainConfig, load_config
    from calql_vision.run_dir import RunDir
    from calql_vision.launch import DESCRIPTION
    from calql_vision.train import Trainer

    cfg = load_config(TrainConfig, [*algo_args(name, demos), *extra], "calql_vision.train", DESCRIPTION,
                      base_file="base.yaml")
    run_dir.mkdir()
    return Trainer(cfg, RunDir(run_dir))


def offline_rows(trainer, batch: dict) -> int:
    """Rows of the batch that are offline transitions (matched on action and reward-to-go)."""
    dataset = trainer.dataset
    offline = {(tuple(a), g) for a, g in zip(dataset.actions.astype(np.float32).tolist(),
                                             dataset.reward_to_go.astype(np.float32).tolist())}
    rows = zip(batch["actions"].numpy().tolist(), batch["reward_to_go"].numpy().tolist())
    return sum((tuple(a), g) in offline for a, g in rows)


@pytest.mark.parametrize("name,expected_offline", [("rlpd", 0.5), ("calql", 0.5), ("wsrl", 0.0), ("iql", None)])
def test_online_batches_mix_as_the_method_says(name, expected_offline, lift_demos, tmp_path):
    trainer = build_trainer(name, lift_demos, tmp_path / "run", "batch_size=64")
    try:
        trainer.agent.on_online_start()
        trainer.online_episodes.start(trainer.counters)
        while trainer.counters["episodes"] == 0:  # one whole episode in the online replay
            trainer._step_environments()
        batches = [trainer._online_batch() for _ in range(20)]
    finally:
        trainer.envs.close()
    rows = len(batches[0]["actions"])
    assert rows == 64 * trainer.agent.batch_slices
    shares = [offline_rows(trainer, b) / rows for b in batches]
    if expected_offline is not None:
        assert shares == [expected_offline] * len(shares)  # exactly, in every batch
    else:  # uniform over the union: the offline share is the offline data's share, on average
        union_share = len(trainer.offline_replay) / (len(trainer.offline_replay) + len(trainer.online_replay))
        assert abs(np.mean(shares) - union_share) < 0.06 and len(set(shares)) > 1


def test_online_collection_acts_with_the_configured_explore_std_scale(lift_demos, tmp_path):
    trainer = build_trainer("calql", lift_demos, tmp_path / "run", "algo.explore_std_scale=0")
    calls, act = [], trainer.agent.act

    def recording_act(obs, deterministic, generator=None, std_scale=1.0):
        action = act(obs, deterministic, generator, std_scale)
        calls.append((obs, action))
        return action

    trainer.agent.act = recording_act
    try:
        trainer.agent.on_online_start()
        trainer.online_episodes.start(trainer.counters)
        for _ in range(3):  # no update is owed before the first episode ends: the policy stays put
            trainer._step_environments()
        trainer.agent.act = act
        assert len(calls) == 3 and trainer.counters["step"] == 0
        for obs, action in calls:  # scale 0: every collecting action is the policy's mean
            np.testing.assert_allclose(action, act(obs, deterministic=True), atol=1e-6)
    finally:
        trainer.envs.close()


def test_aca_seeds_the_online_buffer_with_the_best_offline_episodes(lift_demos, tmp_path):
    trainer = build_trainer("aca", lift_demos, tmp_path / "run", "algo.seed_top_episodes=2")
    trainer.envs.close()
    dataset = trainer.dataset
    demo_returns = {d: dataset.rewards[dataset.demo_of_transition == d].sum() for d in np.unique(dataset.demo_of_transition)}
    best = sorted(demo_returns, key=lambda d: -demo_returns[d])[:2]
    trainer._seed_online_replay()
    assert len(trainer.online_replay) == sum(int((dataset.demo_of_transition == d).sum()) for d in best)
    seeded = trainer.online_replay.sample(256, np.random.default_rng(0), "cpu")
    assert offline_rows(trainer, seeded) == 256, "every seeded transition is an offline one"
    chosen = {g for g in seeded["reward_to_go"].numpy().tolist()}
    best_returns = set(dataset.reward_to_go[np.isin(dataset.demo_of_transition, best)].astype(np.float32).tolist())
    assert chosen <= best_returns


@pytest.mark.parametrize("name", ["aca", "wsrl"])
def test_stopping_and_resuming_online_equals_one_uninterrupted_run(name, lift_demos, tmp_path):
    """ACA (pi_0, R and the seeded buffer built at the switch) and WSRL (warm-up, high-UTD
    slices) carry new state across a resume: the result must not depend on the stop."""
    args = [*algo_args(name, lift_demos), f"offline_steps={OFFLINE_STEPS}", "eval_every=1000", "checkpoint_every=1000"]
    whole = run_train([*args, "online_env_steps=30"], tmp_path / "whole")
    first = run_train([*args, "online_env_steps=15"], tmp_path / "parts")
    assert whole.returncode == 0 and first.returncode == 0, (whole.stderr + first.stderr)[-3000:]
    (run_dir,) = (tmp_path / "parts" / "lift_visual" / name).iterdir()
    rest = run_train([f"resume={run_dir}", "online_env_steps=30"], tmp_path / "unused")
    assert rest.returncode == 0, rest.stderr[-3000:]
    (whole_dir,) = (tmp_path / "whole" / "lift_visual" / name).iterdir()
    expected = torch.load(whole_dir / "checkpoints" / "latest.pt", weights_only=False)
    resumed = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)
    assert checkpoint_differences(expected, resumed) == []
