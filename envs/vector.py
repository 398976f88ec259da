"""Several environments at once: one process per environment, stepped in lock-step.

    workers = EnvWorkers(task, num_envs=2, seed=0)
    obs = workers.reset({0: 10, 1: 11})                  # {index: obs}, scene seeds 10 and 11
    results = workers.step({0: action0, 1: action1})     # {index: StepResult}, both at once
    workers.close()

This is the boundary between acting and learning. The learner sends actions (one batched
policy call for all environments, on its own device) and receives observations as plain
arrays; nothing of the learner (torch, weights, replay) crosses it. A later setup with actor
processes on other hosts would cross the same boundary with policy weights one way
(`PixelAgent.policy_state_dict()`, encoder + actor) and finished episodes the other.

Frames come back through one shared-memory block per worker, not pickled with the rest of
the observation: at 84 px a frame is 21 kB and the pickled small values about 1 kB.

A worker that dies, or answers nothing within `timeout_s`, raises EnvWorkerError naming the
worker, its task and its seed; the others are stopped with it when the caller closes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass
from multiprocessing import Pipe, shared_memory
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
# Long enough for a worker's first reset (robosuite builds the model, ~1-3 s on a busy CPU)
# and for a scripted episode of several hundred rendered steps.
DEFAULT_TIMEOUT_S = 300.0
TASK_KEYS = ("env_name", "robot", "cameras", "image_size", "horizon", "control_freq", "proprio_keys", "render_quality")
# multiprocessing's resource tracker, a process of its own, frees the shared memory of a trainer
# killed with SIGKILL, as it should, then warns of "leaked shared_memory objects" into the
# user's terminal. It takes its warning filters from this process's -W options when it starts
# (multiprocessing.util._args_from_interpreter_flags), so this one line silences that warning
# there and nowhere else.
QUIET_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"


def _quiet_resource_tracker() -> None:
    """Before the first shared memory block starts the tracker: a killed trainer's workers and
    tracker then end without a word (the memory is freed all the same)."""
    if QUIET_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(QUIET_TRACKER)


class EnvWorkerError(RuntimeError):
    """An environment worker crashed, hung or failed a request."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


@dataclass
class StepResult:
    obs: dict[str, np.ndarray]
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


def task_values(task: Any) -> dict[str, Any]:
    """The settings a worker needs to build the task's environment, as plain JSON values."""
    values = {}
    for key in TASK_KEYS:
        if hasattr(task, key) or (isinstance(task, Mapping) and key in task):
            value = task[key] if isinstance(task, Mapping) else getattr(task, key)
            values[key] = list(value) if key in ("cameras", "proprio_keys") else value
    return values


class _Worker:
    """The parent's handle on one worker process."""

    def __init__(self, index: int, task: dict[str, Any], seed: int, extra_env: dict[str, str]) -> None:
        self.index, self.seed, self.task_name = index, seed, task.get("env_name", "?")
        size = task["image_size"]
        self.image_shape = (3, size, size)
        # A task without cameras publishes no frames; a block cannot be empty, so it gets one byte.
        _quiet_resource_tracker()
        self.memory = shared_memory.SharedMemory(create=True, size=max(1, 3 * size * size * len(task["cameras"])))
        self.connection, child = Pipe()
        environment = {**os.environ, **extra_env}
        # The worker only renders and steps physics: one thread each for the maths libraries.
        environment.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "envs.worker", str(child.fileno()), self.memory.name, json.dumps(task), str(seed)],
            pass_fds=(child.fileno(),), env=environment, cwd=REPO_ROOT,
            # Its own session: a Ctrl-C in the terminal reaches the trainer, which stops at a
            # safe point and closes its workers, not the workers in the middle of a step.
            start_new_session=True,
        )
        child.close()
        self.description: dict[str, Any] | None = None

    def describe_failure(self, what: str) -> str:
        return f"environment worker {self.index} ({self.task_name}, construction seed {self.seed}, pid {self.process.pid}) {what}"

    def receive(self, timeout_s: float) -> Any:
        """The reply to the last request; EnvWorkerError if the worker died, hung or failed."""
        if not self.connection.poll(timeout_s):
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
                raise EnvWorkerError(self.describe_failure(f"gave no answer in {timeout_s:g} s and was killed"), self.index)
        try:
            status, payload = self.connection.recv()
        except (EOFError, ConnectionResetError):
            code = self.process.wait()
            cause = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise EnvWorkerError(self.describe_failure(cause), self.index) from None
        if status == "error":
            last_line = payload.strip().splitlines()[-1]
            raise EnvWorkerError(self.describe_failure(f"failed: {last_line}\n{payload}"), self.index)
        return payload

    def send(self, *request: Any) -> None:
        try:
            self.connection.send(request)
        except (BrokenPipeError, ConnectionResetError, OSError):
            code = self.process.wait()
            raise EnvWorkerError(self.describe_failure(f"is gone (exit code {code})"), self.index) from None

    def images(self, image_keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Copies of the frames the worker just published."""
        frames, offset = {}, 0
        for key in image_keys:
            view = np.ndarray(self.image_shape, np.uint8, buffer=self.memory.buf, offset=offset)
            frames[key] = view.copy()
            offset += view.nbytes
        return frames

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.connection.send(("close",))
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.connection.close()
        self.memory.close()
        self.memory.unlink()


class EnvWorkers:
    """`num_envs` environments of one task in worker processes (see the module docstring).

    Every worker is built with the same construction seed: robosuite draws some of the model
    at construction (Lift's cube size), and soft resets keep it. Scenes are then chosen by
    the seeds given to `reset`, so an episode depends on its scene seed and actions alone,
    never on which worker runs it. `role` "train" and "eval" are separate environments in each worker.
    """

    def __init__(self, task: Any, num_envs: int, seed: int = 0, timeout_s: float = DEFAULT_TIMEOUT_S,
                 egl_device: int | None = None) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        from calql_vision.hardware import check_worker_memory, usable_cores

        check_worker_memory(num_envs, cameras=len(task.cameras) > 0)
        cores = usable_cores()
        if num_envs > cores:
            warnings.warn(f"num_envs={num_envs} is more than the {cores} cores this process may use: "
                          "the workers will share cores and each step will be slower", stacklevel=2)
        self.timeout_s = float(timeout_s)
        extra_env = {} if egl_device is None else {"MUJOCO_EGL_DEVICE_ID": str(egl_device)}
        values = task_values(task)
        self._workers: list[_Worker] = []
        try:
            for index in range(num_envs):
                self._workers.append(_Worker(index, values, seed, extra_env))
            for worker in self._workers:
                worker.description = self._ready(worker)
        except BaseException:
            self.close()
            raise
        description = self._workers[0].description
        self.image_keys: tuple[str, ...] = tuple(description["image_keys"])
        self.image_size: int = description["image_size"]
        self.action_dim: int = description["action_dim"]
        self.proprio_dim: int = description["proprio_dim"]
        self.env_args: dict[str, Any] = description["env_args"]

    def _ready(self, worker: _Worker) -> dict[str, Any]:
        # Building robosuite's model can take long on a busy machine: the start has its own limit.
        if not worker.connection.poll(DEFAULT_TIMEOUT_S) and worker.process.poll() is None:
            worker.process.kill()
            raise EnvWorkerError(worker.describe_failure(f"was not ready in {DEFAULT_TIMEOUT_S:g} s"), worker.index)
        try:
            status, payload = worker.connection.recv()
        except EOFError:
            raise EnvWorkerError(worker.describe_failure(f"exited while starting (code {worker.process.wait()})"),
                                 worker.index) from None
        if status != "ready":
            raise EnvWorkerError(worker.describe_failure(f"could not build its environment:\n{payload}"), worker.index)
        return payload

    @property
    def render_quality(self) -> str:
        """How the workers render their frames: `full` or `fast` (envs/render_quality.py)."""
        return self.env_args["render_quality"]

    @property
    def num_envs(self) -> int:
        return len(self._workers)

    def __len__(self) -> int:
        return len(self._workers)

    # ------------------------------------------------------------------ lock-step calls
    def reset(self, seeds: Mapping[int, int], role: str = "train") -> dict[int, dict[str, np.ndarray]]:
        """Reset the given workers to the scenes of their seeds, all at once."""
        for index, seed in seeds.items():
            self._workers[index].send("reset", role, int(seed))
        observations = {}
        for index in seeds:
            proprio, _info = self._workers[index].receive(self.timeout_s)
            observations[index] = self._observation(index, proprio)
        return observations

    def step(self, actions: Mapping[int, np.ndarray], role: str = "train") -> dict[int, StepResult]:
        """Step the given workers with their actions, all at once; results by worker index."""
        for index, action in actions.items():
            self._workers[index].send("step", role, np.asarray(action, dtype=np.float64))
        results = {}
        for index in actions:
            proprio, reward, terminated, truncated, info = self._workers[index].receive(self.timeout_s)
            results[index] = StepResult(self._observation(index, proprio), reward, terminated, truncated, info)
        return results

    def _observation(self, index: int, proprio: np.ndarray) -> dict[str, np.ndarray]:
        return {**self._workers[index].images(self.image_keys), "proprio": proprio}

    def render(self, index: int, camera: str, size: int, role: str = "train") -> np.ndarray:
        worker = self._workers[index]
        worker.send("render", role, camera, int(size))
        return worker.receive(self.timeout_s)

    def renderer(self, index: int, role: str = "train") -> "WorkerRenderer":
        """An object with `render(camera, size)` for that worker's environment (for videos)."""
        return WorkerRenderer(self, index, role)

    # ------------------------------------------------------------------ whole episodes
    def scripted_episodes(self, seeds: list[int], noise: float, policy: str) -> Iterable[tuple[int, dict[str, Any]]]:
        """(position in `seeds`, demo arrays) of scripted episodes, in the order of `seeds`.
        Each worker takes the next seed as soon as it is free; the results are put back in
        order, so the output does not depend on the number of workers."""
        pending = list(enumerate(seeds))[::-1]
        running: dict[int, int] = {}  # worker index -> position
        finished: dict[int, dict[str, Any]] = {}
        next_position = 0

        def start(worker: _Worker) -> None:
            position, seed = pending.pop()
            worker.send("scripted_episode", int(seed), float(noise), policy)
            running[worker.index] = position

        for worker in self._workers:
            if pending:
                start(worker)
        while running:
            from multiprocessing.connection import wait

            ready = wait([self._workers[i].connection for i in running], timeout=self.timeout_s)
            if not ready:
                # Nobody answered in time: the first running worker is reported (and killed).
                self._workers[next(iter(running))].receive(0)
            for connection in ready:
                worker = next(w for w in self._workers if w.connection is connection)
                finished[running.pop(worker.index)] = worker.receive(self.timeout_s)
                if pending:
                    start(worker)
            while next_position in finished:
                yield next_position, finished.pop(next_position)
                next_position += 1

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        for worker in self._workers:
            try:
                worker.close()
            except OSError:
                pass

    def __enter__(self) -> "EnvWorkers":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WorkerRenderer:
    def __init__(self, workers: EnvWorkers, index: int, role: str) -> None:
        self.workers, self.index, self.role = workers, index, role

    def render(self, camera: str = "agentview", size: int = 256) -> np.ndarray:
        return self.workers.render(self.index, camera, size, self.role)
