"""The evaluation program: Wilson intervals, video frames and files, and the real CLI on a tiny run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TINY_TRAIN_ARGS, task_config

pytestmark = pytest.mark.slow  # real programs in subprocesses

# The tiny training arguments of tests/test_train.py.



def read_video(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(path, plugin="FFMPEG")  # (T, H, W, 3)


# ---------------------------------------------------------------------- statistics
@pytest.mark.parametrize(
    "successes, n, expected",
    [(8, 10, (0.4902, 0.9433)), (0, 10, (0.0, 0.2775)), (10, 10, (0.7225, 1.0)), (50, 100, (0.4038, 0.5962))],
)
def test_wilson_interval_on_known_counts(successes, n, expected):
    from calql_vision.evaluate import wilson_interval

    assert wilson_interval(successes, n) == pytest.approx(expected, abs=1e-3)


def test_wilson_interval_extremes_are_exact_and_zero_episodes_is_an_error():
    from calql_vision.evaluate import wilson_interval

    assert wilson_interval(0, 3)[0] == 0.0 and wilson_interval(3, 3)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(0, 0)
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


# ---------------------------------------------------------------------- frames and files
def test_compose_frame_puts_the_nearest_neighbour_policy_view_beside_the_scene():
    from calql_vision.video import compose_frame

    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    view = rng.integers(0, 256, (3, 48, 48), dtype=np.uint8)
    frame = compose_frame(scene, view, step=7, success=True)
    assert frame.shape == (96, 192, 3) and frame.dtype == np.uint8
    # Labels sit at the top; below them the halves are the untouched scene and the 2x blocks.
    upscaled = view.transpose(1, 2, 0).repeat(2, axis=0).repeat(2, axis=1)
    assert np.array_equal(frame[60:, :96], scene[60:])
    assert np.array_equal(frame[60:, 96:], upscaled[60:])
    assert not np.array_equal(frame[:30, :96], scene[:30]), "the step and success labels are drawn"
    running = compose_frame(scene, view, step=7, success=False)
    assert not np.array_equal(running, frame), "success is visible on the frame"


def test_write_mp4_rejects_bad_frame_lists_and_leaves_no_file(tmp_path):
    from calql_vision.video import write_mp4

    frame = np.zeros((64, 128, 3), np.uint8)
    with pytest.raises(ValueError):
        write_mp4(tmp_path / "empty.mp4", [])
    with pytest.raises(ValueError):
        write_mp4(tmp_path / "mixed.mp4", [frame, np.zeros((64, 64, 3), np.uint8)])
    with pytest.raises(ValueError):
        write_mp4(tmp_path / "odd.mp4", [np.zeros((63, 128, 3), np.uint8)])
    assert list(tmp_path.iterdir()) == []


def test_a_real_rollout_video_decodes_to_one_frame_per_observation(tmp_path):
    from calql_vision.evaluation import evaluate_policy
    from calql_vision.video import EpisodeVideo, write_mp4
    from envs.vector import EnvWorkers

    videos = {64: EpisodeVideo("agentview", 64), 256: EpisodeVideo("agentview", 256)}

    def on_frame(episode, obs, info, renderer):
        for video in videos.values():
            video.add(renderer, obs, info, step=len(video))

    with EnvWorkers(task_config("lift_visual", horizon=5, image_size=48), num_envs=1) as envs:
        result = evaluate_policy(envs, lambda obs, episode: np.zeros(envs.action_dim), 1, seed=0, on_frame=on_frame)
    length = result.episodes[0].length
    assert length == 5  # standing still never lifts the cube
    for size, video in videos.items():
        path = write_mp4(tmp_path / f"video_{size}.mp4", video.frames, fps=20)
        frames = read_video(path)
        assert frames.shape == (length + 1, size, 2 * size, 3)
        # H.264 is lossy, but the decoded video is the scene we rendered, not noise.
        assert np.abs(frames[0].astype(int) - video.frames[0].astype(int)).mean() < 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video_256.mp4", "video_64.mp4"], "no temp file left"


def test_an_evaluation_counts_the_episodes_that_held_the_object():
    """Episode 0 replays a scripted demonstration of its scene (the simulation is
    deterministic), so it grasps and lifts the cube; episode 1 stands still and does neither."""
    from calql_vision.evaluation import evaluate_policy
    from envs import make_env
    from envs.scripted import make_scripted_policy
    from envs.vector import EnvWorkers

    task, seed = task_config("lift_state"), 3
    env, policy = make_env(task, seed=0), make_scripted_policy("lift")
    _, info = env.reset(seed=seed)
    policy.reset(env, info)
    demonstration, grasped_steps = [], []
    while True:
        demonstration.append(policy.act(info))
        _, _, terminated, truncated, info = env.step(demonstration[-1])
        grasped_steps.append(info["grasped"])
        if terminated or truncated:
            break
    env.close()
    assert terminated and any(grasped_steps) and not grasped_steps[0], "the demonstration grasps on its way"
    taken = {0: 0, 1: 0}

    def act(obs, episode):
        taken[episode] += 1
        return demonstration[taken[episode] - 1] if episode == 0 else np.zeros(7)

    with EnvWorkers(task, num_envs=1) as envs:
        result = evaluate_policy(envs, act, 2, seed=seed)
    assert [(e.success, e.grasped) for e in result.episodes] == [(True, True), (False, False)]
    assert result.episodes[0].length == len(demonstration)
    assert result.grasp_rate == 0.5 and result.success_rate == 0.5


# ---------------------------------------------------------------------- the program
def run_program(module: str, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def tiny_run(lift_demos, tmp_path_factory) -> Path:
    runs_root = tmp_path_factory.mktemp("runs")
    result = run_program(
        "calql_vision.train",
        [*TINY_TRAIN_ARGS, f"dataset={lift_demos}", "offline_steps=4", "online_env_steps=0", f"runs_root={runs_root}"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (runs_root / "lift_visual" / "calql").iterdir()
    return run_dir


def test_evaluate_cli_writes_a_consistent_summary_and_one_video(tiny_run):
    from calql_vision.evaluate import wilson_interval
    from calql_vision.evaluation import evaluation_seed

    result = run_program(
        "calql_vision.evaluate", [f"run={tiny_run}", "episodes=2", "video=true", "video_episodes=1", "video_size=64", "threads=1"]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seed = evaluation_seed(0)  # the run's seed is 0: the training-time evaluation scenes
    out_dir = tiny_run / "eval" / f"latest-seed{seed}"
    assert str(out_dir) in result.stdout and "success" in result.stdout
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["checkpoint"] == str(tiny_run / "checkpoints" / "latest.pt")
    assert summary["step"] == 4 and summary["env_step"] == 0
    assert summary["seed"] == seed and summary["episodes"] == 2
    episodes = summary["per_episode"]
    assert [e["seed"] for e in episodes] == [seed, seed + 1]
    successes = sum(e["success"] for e in episodes)
    assert summary["success_rate"] == pytest.approx(successes / 2)
    assert summary["mean_return"] == pytest.approx(np.mean([e["return"] for e in episodes]))
    assert summary["mean_length"] == pytest.approx(np.mean([e["length"] for e in episodes]))
    assert summary["success_ci95"] == pytest.approx(list(wilson_interval(successes, 2)))
    assert summary["grasp_rate"] == pytest.approx(np.mean([e["grasped"] for e in episodes]))
    assert [e["video"] for e in episodes] == ["episode_0.mp4", None]
    assert sorted(p.name for p in out_dir.iterdir()) == ["episode_0.mp4", "summary.json"], "no temp file left"
    frames = read_video(out_dir / "episode_0.mp4")
    assert frames.shape == (episodes[0]["length"] + 1, 64, 128, 3)


def test_evaluate_a_named_checkpoint_without_video(tiny_run):
    # In-process (the program's own function) to spare a second interpreter start-up.
    from calql_vision.config import load_config
    from calql_vision.evaluate import DESCRIPTION, EvaluateConfig, evaluate_run

    cfg = load_config(
        EvaluateConfig, [f"run={tiny_run}", "checkpoint=step_4.pt", "episodes=1", "video=false", "seed=7"],
        "calql_vision.evaluate", DESCRIPTION,
    )
    summary, out_dir = evaluate_run(cfg)
    assert out_dir == tiny_run / "eval" / "step_4-seed7"
    assert summary["checkpoint"] == str(tiny_run / "checkpoints" / "step_4.pt") and summary["step"] == 4
    assert summary["per_episode"][0]["seed"] == 7 and summary["per_episode"][0]["video"] is None
    assert sorted(p.name for p in out_dir.iterdir()) == ["summary.json"]


def test_evaluate_renders_as_the_run_trained_or_as_asked_beside_it(tiny_run):
    from calql_vision.config import load_config
    from calql_vision.evaluate import DESCRIPTION, EvaluateConfig, evaluate_run

    # The tiny run trained on demos collected with render_quality=auto (fast), and followed them.
    assert (tiny_run / "config.yaml").read_text().count("render_quality: fast") == 1
    args = [f"run={tiny_run}", "episodes=1", "video=false", "seed=11"]
    own, own_dir = evaluate_run(load_config(EvaluateConfig, args, "calql_vision.evaluate", DESCRIPTION))
    other, other_dir = evaluate_run(
        load_config(EvaluateConfig, [*args, "render_quality=full"], "calql_vision.evaluate", DESCRIPTION)
    )
    assert own["render_quality"] == "fast" and other["render_quality"] == "full"
    assert other_dir == own_dir.with_name(own_dir.name + "-full"), "never over the run's own evaluation"


def test_missing_run_or_checkpoint_is_a_clear_error(tiny_run, tmp_path):
    missing_run = tmp_path / "no_such_run"
    result = run_program("calql_vision.evaluate", [f"run={missing_run}"])
    assert result.returncode == 2 and str(missing_run) in result.stderr
    result = run_program("calql_vision.evaluate", [f"run={tmp_path}"])
    assert result.returncode == 2 and "config.yaml" in result.stderr
    result = run_program("calql_vision.evaluate", [f"run={tiny_run}", "checkpoint=step_999.pt"])
    assert result.returncode == 2
    assert str(tiny_run / "checkpoints" / "step_999.pt") in result.stderr
    assert "latest.pt" in result.stderr and "step_4.pt" in result.stderr, "the available checkpoints are listed"
    result = run_program("calql_vision.evaluate", [f"run={tiny_run}", "episodes=2", "episods=3"])
    assert result.returncode == 2 and "'episodes'" in result.stderr
