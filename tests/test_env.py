"""The real robosuite environments: stepping, rendering, episode ends, replay, orientation."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, task_config


@pytest.fixture(scope="module", params=["lift_visual", "pick_place_visual"])
def env(request):
    from envs import make_env

    environment = make_env(task_config(request.param, horizon=8), seed=0)
    yield environment
    environment.close()


def test_observations_and_step_api(env):
    obs, info = env.reset(seed=1)
    assert set(obs) == {"agentview_image", "proprio"}
    image = obs["agentview_image"]
    assert image.dtype == np.uint8 and image.shape == (3, 84, 84)
    assert image.std() > 10, "the camera sees a scene, not a blank frame"
    assert obs["proprio"].dtype == np.float32 and obs["proprio"].shape == (3 + 4 + 2,)
    np.testing.assert_allclose(obs["proprio"][:3], info["low_dim"]["robot0_eef_pos"], atol=1e-6)
    assert info["success"] is False

    action = np.zeros(7)
    action[2] = 1.0  # move up: never a success in either task
    results = [env.step(action) for _ in range(8)]
    rewards = [r[1] for r in results]
    terminated = [r[2] for r in results]
    truncated = [r[3] for r in results]
    assert rewards == [0.0] * 8 and not any(terminated)
    assert info["grasped"] is False and not any(r[4]["grasped"] for r in results), "the gripper never reached the object"
    assert truncated == [False] * 7 + [True], "the step limit truncates, it does not terminate"
    assert results[-1][0]["proprio"][2] > obs["proprio"][2] + 0.02, "the end effector moved up"
    with pytest.raises(RuntimeError, match="reset"):
        env.step(action)


def test_actions_are_validated(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.full(7, np.nan))


def test_seeded_reset_is_reproducible_and_seeds_differ(env):
    first, _ = env.reset(seed=5)
    second, _ = env.reset(seed=5)
    other, _ = env.reset(seed=6)
    np.testing.assert_array_equal(first["agentview_image"], second["agentview_image"])
    assert not np.array_equal(first["agentview_image"], other["agentview_image"])


def test_render_high_resolution_frame(env):
    env.reset(seed=0)
    frame = env.render("agentview", 256)
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    small = env.render("agentview", 84)
    obs_image = env._observation()["agentview_image"].transpose(1, 2, 0)
    # The video frame and the policy's observation show the same upright view.
    np.testing.assert_array_equal(small, obs_image)


def test_get_state_and_reset_to_replay_an_episode(env):
    obs, _ = env.reset(seed=2)
    rng = np.random.default_rng(0)
    states, images = [], []
    for action in rng.uniform(-1, 1, size=(5, 7)):
        states.append(env.get_state())
        images.append(obs["agentview_image"])
        obs, *_ = env.step(action)
    env.reset(seed=9)  # somewhere else first
    replayed, info = env.reset_to(states[3])
    np.testing.assert_array_equal(env.get_state(), states[3])
    # The recorded state reproduces the recorded frame exactly (robomimic-style playback).
    np.testing.assert_array_equal(replayed["agentview_image"], images[3])
    assert info["success"] is False
    env.step(np.zeros(7))  # and the episode can go on from there


def test_success_terminates_with_reward_one():
    from envs import make_env
    from envs.scripted import make_scripted_policy

    env = make_env(task_config("lift_visual"), seed=0)
    policy = make_scripted_policy("lift")
    obs, info = env.reset(seed=0)
    policy.reset(env, info)
    steps = []
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act(info))
        steps.append((reward, terminated, truncated, info["success"]))
        if terminated or truncated:
            break
    env.close()
    assert steps[-1] == (1.0, True, False, True)
    assert all(s == (0.0, False, False, False) for s in steps[:-1])


def test_images_are_upright_like_robosuite_opencv_convention():
    """robosuite's own "opencv" image convention is upright; our frames must equal it."""
    script = """
import json, sys, numpy as np
sys.path.insert(0, %r)
import robosuite.macros as macros
macros.IMAGE_CONVENTION = "opencv"
from envs import RobosuiteVisualEnv
env = RobosuiteVisualEnv("Lift", image_size=32)
env.reset(seed=4)
print(json.dumps(env._env._get_observations(force_update=True)["agentview_image"].tolist()))
""" % str(ROOT)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    robosuite_upright = np.array(json.loads(result.stdout.strip().splitlines()[-1]), dtype=np.uint8)

    from envs import RobosuiteVisualEnv

    env = RobosuiteVisualEnv("Lift", image_size=32)
    obs, _ = env.reset(seed=4)
    env.close()
    ours = obs["agentview_image"].transpose(1, 2, 0).astype(int)
    # Two GL contexts may differ in a few edge pixels; a flip changes most of the frame.
    same = np.abs(ours - robosuite_upright).mean()
    flipped = np.abs(ours[::-1] - robosuite_upright).mean()
    assert same < 0.5 and flipped > 10 * max(same, 0.5), (same, flipped)


def test_missing_gl_libraries_name_the_packages(monkeypatch):
    import ctypes.util

    from envs.rendering import MissingGLError, configure_headless_rendering

    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(MissingGLError, match="libegl1 libegl-mesa0 libgl1"):
        configure_headless_rendering()


@pytest.mark.slow
def test_a_job_given_no_gpu_still_renders(tmp_path):
    """Slurm and submitit set CUDA_VISIBLE_DEVICES to "" for a job without GPUs."""
    script = ("from envs import make_env\nfrom conftest import task_config\n"
              "env = make_env(task_config('lift_state', horizon=5), seed=0)\nenv.reset(seed=0)\n"
              "frame = env.render('agentview', 32)\nprint(frame.shape, int(frame.std() > 0))\n")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    env.pop("MUJOCO_EGL_DEVICE_ID", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "(32, 32, 3) 1"
