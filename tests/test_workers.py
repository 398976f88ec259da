"""Environment workers (envs/vector.py) with the real robosuite env: several workers give the
same episodes as one, evaluation does not depend on their number, and a worker that dies or
hangs is reported, never waited on forever."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import ROOT, TINY_TRAIN_ARGS, task_config

SMALL_LIFT = dict(horizon=12, image_size=32)


def worker_pids(workers) -> list[int]:
    return [worker.process.pid for worker in workers._workers]  # noqa: SLF001


def datasets_of(path) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(path, "r") as f:
        f["data"].visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def test_two_workers_collect_the_same_file_as_one(tmp_path):
    from calql_vision.collect import collect_demonstrations

    task = task_config("lift_visual", horizon=30, image_size=32)
    files = {}
    for num_envs in (1, 2):
        files[num_envs] = tmp_path / f"{num_envs}.hdf5"
        collect_demonstrations(task, episodes=3, noise=0.3, out=str(files[num_envs]), seed=5, show_progress=False,
                               num_envs=num_envs)
    one, two = datasets_of(files[1]), datasets_of(files[2])
    assert sorted(one) == sorted(two) and any(key.endswith("agentview_image") for key in one)
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)


def proprio_policy(obs: dict, episode: int = 0) -> np.ndarray:
    """Deterministic, and different for every state: episodes drift apart if anything differs."""
    p = obs["proprio"]
    return np.tanh(np.array([p[0] - 0.05, p[1] + 0.05, 1.02 - p[2], p[3], p[4], p[5], p[7] * 10]))


def test_evaluation_results_do_not_depend_on_the_number_of_workers():
    from calql_vision.evaluation import evaluate_policy
    from envs.vector import EnvWorkers

    runs = {}
    for num_envs in (1, 2):
        last_obs: dict[int, dict] = {}
        with EnvWorkers(task_config("lift_visual", **SMALL_LIFT), num_envs) as envs:
            result = evaluate_policy(envs, proprio_policy, 3, seed=40,
                                     on_frame=lambda episode, obs, info, renderer: last_obs.__setitem__(episode, obs))
        runs[num_envs] = (result, last_obs)
    (one, one_obs), (two, two_obs) = runs[1], runs[2]
    assert [e.seed for e in one.episodes] == [40, 41, 42]
    assert one.episodes == two.episodes
    for episode in range(3):
        for key in one_obs[episode]:
            np.testing.assert_array_equal(one_obs[episode][key], two_obs[episode][key])
    # The scenes differ between seeds, so the comparison above compared something.
    assert not np.array_equal(one_obs[0]["proprio"], one_obs[1]["proprio"])


def test_a_killed_worker_is_reported_with_its_task_and_seed():
    from envs.vector import EnvWorkerError, EnvWorkers

    with EnvWorkers(task_config("lift_visual", **SMALL_LIFT), 2, seed=7) as envs:
        envs.reset({0: 1, 1: 2})
        os.kill(worker_pids(envs)[1], signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(EnvWorkerError, match=r"worker 1 \(Lift, construction seed 7.*killed by signal 9|worker 1 .* is gone") as raised:
            envs.step({0: np.zeros(7), 1: np.zeros(7)})
        assert raised.value.index == 1


def test_a_hung_worker_is_killed_and_reported_after_the_timeout():
    from envs.vector import EnvWorkerError, EnvWorkers

    with EnvWorkers(task_config("lift_visual", **SMALL_LIFT), 1, timeout_s=2) as envs:
        envs.reset({0: 1})
        os.kill(worker_pids(envs)[0], signal.SIGSTOP)
        started = time.time()
        with pytest.raises(EnvWorkerError, match="gave no answer in 2 s and was killed"):
            envs.step({0: np.zeros(7)})
        assert time.time() - started < 30


def test_a_failing_request_names_the_worker_and_the_cause():
    from envs.vector import EnvWorkerError, EnvWorkers

    with EnvWorkers(task_config("lift_visual", **SMALL_LIFT), 1) as envs:
        envs.reset({0: 1})
        with pytest.raises(EnvWorkerError, match=r"worker 0 .* failed: ValueError: action must have shape"):
            envs.step({0: np.zeros(3)})
        # The worker keeps serving after a failed request.
        assert envs.step({0: np.zeros(7)})[0].obs["agentview_image"].shape == (3, 32, 32)


def test_more_workers_than_cores_is_allowed_but_warned():
    from calql_vision.hardware import usable_cores
    from envs.vector import EnvWorkers

    with pytest.warns(UserWarning, match=f"num_envs={usable_cores() + 1} is more than the {usable_cores()} cores"):
        workers = EnvWorkers(task_config("lift_visual", **SMALL_LIFT), usable_cores() + 1)
    with workers:
        assert len(workers.reset({i: i for i in range(len(workers))})) == usable_cores() + 1


def test_the_evaluation_environment_leaves_a_training_episode_untouched():
    """Each worker keeps a separate evaluation environment (with its own GL context)."""
    from envs.vector import EnvWorkers

    actions = [np.array([0.5, -0.3, 0.2, 0, 0, 0, 1.0])] * 4
    frames = []
    for evaluate_between in (False, True):
        with EnvWorkers(task_config("lift_visual", **SMALL_LIFT), 1) as envs:
            envs.reset({0: 3})
            for t, action in enumerate(actions):
                if evaluate_between and t == 2:
                    envs.reset({0: 99}, role="eval")
                    envs.step({0: -action}, role="eval")
                obs = envs.step({0: action})[0].obs
            frames.append(obs)
    np.testing.assert_array_equal(frames[0]["agentview_image"], frames[1]["agentview_image"])
    np.testing.assert_array_equal(frames[0]["proprio"], frames[1]["proprio"])


@pytest.mark.slow
def test_a_worker_killed_during_training_stops_the_run_with_a_checkpoint_that_resumes(lift_demos, tmp_path):
    args = [*TINY_TRAIN_ARGS, f"dataset={lift_demos}", "offline_steps=4", "online_env_steps=300", "num_envs=2",
            "checkpoint_every=1000", "eval_every=1000", f"runs_root={tmp_path}"]
    process = subprocess.Popen([sys.executable, "-m", "calql_vision.train", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not any(tmp_path.glob("lift_visual/calql/*/calibration/*.npz")):  # written at the switch
        assert process.poll() is None and time.time() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.05)
    children = [pid for task in os.listdir(f"/proc/{process.pid}/task")
                for pid in open(f"/proc/{process.pid}/task/{task}/children").read().split()]
    workers = [int(pid) for pid in children if b"envs.worker" in open(f"/proc/{pid}/cmdline", "rb").read()]
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 4, stderr[-3000:]
    assert "environment worker" in stderr and "killed by signal 9" in stderr and "resume=" in stderr
    (run_dir,) = (tmp_path / "lift_visual" / "calql").iterdir()
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    resumed = subprocess.run([sys.executable, "-m", "calql_vision.train", f"resume={run_dir}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    import torch

    counters = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)["counters"]
    assert counters["env_step"] >= 300
