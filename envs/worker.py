"""One environment process: the program behind `envs.vector.EnvWorkers`.

    python -m envs.worker <connection fd> <shared memory name> <task json> <construction seed>

It is started by EnvWorkers, never by hand. It imports robosuite and numpy only (no torch),
so each worker stays small and Mesa's LLVM is never loaded beside triton's.

The protocol, one request and one reply at a time over the connection (pickled tuples):

    ("reset", role, seed)          -> ("ok", (proprio, info))
    ("step", role, action)         -> ("ok", (proprio, reward, terminated, truncated, info))
    ("render", role, camera, size) -> ("ok", upright HWC uint8 frame)
    ("scripted_episode", seed, noise, policy) -> ("ok", robomimic demo arrays)
    ("close",)                     -> the process exits

A reset or step writes the observation's images into the shared memory block, in the order
of `image_keys`, and sends only the small values; the parent reads the frames from there.
Any exception is sent back as ("error", traceback text) and the worker keeps serving.
`role` is "train" or "eval": each role has its own environment (the evaluation one is built
at its first use), so an evaluation never disturbs a training episode in progress.
The first message is ("ready", description) once the training environment is built.
"""
from __future__ import annotations

import json
import signal
import sys
import traceback
from multiprocessing import resource_tracker, shared_memory
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import Any

import numpy as np

import envs  # noqa: F401  (selects headless EGL before robosuite is imported)
from envs.robosuite_env import RobosuiteVisualEnv, make_env


def describe(env: RobosuiteVisualEnv) -> dict[str, Any]:
    obs, _ = env.reset(seed=0)
    return {
        "image_keys": env.image_keys,
        "image_size": env.image_size,
        "action_dim": env.action_dim,
        "proprio_dim": int(obs["proprio"].shape[0]),
        "env_args": env.env_args,
    }


# What the pipe raises once the parent process is gone.
PARENT_GONE = (EOFError, ConnectionResetError, BrokenPipeError)


class Worker:
    def __init__(self, connection: Connection, memory_name: str, task: SimpleNamespace, seed: int) -> None:
        self.connection = connection
        self.task, self.seed = task, seed
        # Each env makes its own GL context current before it renders (robosuite_env.py).
        self.envs = {"train": make_env(task, seed=seed)}
        self.memory = shared_memory.SharedMemory(name=memory_name)
        # The parent owns the block and unlinks it; without this, Python's resource tracker
        # would unlink it when this process exits, and warn about a "leak".
        resource_tracker.unregister(self.memory._name, "shared_memory")  # noqa: SLF001

    def env(self, role: str) -> RobosuiteVisualEnv:
        if role not in self.envs:
            self.envs[role] = make_env(self.task, seed=self.seed)
        return self.envs[role]

    def publish(self, env: RobosuiteVisualEnv, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Images into shared memory; returns the proprioception."""
        offset = 0
        for key in env.image_keys:
            image = obs[key]
            view = np.ndarray(image.shape, np.uint8, buffer=self.memory.buf, offset=offset)
            view[...] = image
            offset += image.nbytes
        return obs["proprio"]

    def handle(self, request: tuple) -> Any:
        kind = request[0]
        if kind == "reset":
            env = self.env(request[1])
            obs, info = env.reset(seed=request[2])
            return self.publish(env, obs), info
        if kind == "step":
            env = self.env(request[1])
            obs, reward, terminated, truncated, info = env.step(request[2])
            return self.publish(env, obs), reward, terminated, truncated, info
        if kind == "render":
            return self.env(request[1]).render(request[2], request[3])
        if kind == "scripted_episode":
            from envs.scripted import make_scripted_policy, record_scripted_episode

            _, seed, noise, policy = request
            return record_scripted_episode(self.env("train"), make_scripted_policy(policy), seed, noise)
        raise ValueError(f"unknown request {kind!r}")

    def serve(self) -> None:
        try:
            self.connection.send(("ready", describe(self.envs["train"])))
            while True:
                request = self.connection.recv()
                if request[0] == "close":
                    return
                try:
                    reply = ("ok", self.handle(request))
                except Exception:  # noqa: BLE001  (reported to the parent, which decides)
                    reply = ("error", traceback.format_exc())
                self.connection.send(reply)
        except PARENT_GONE:  # the parent died (kill -9 included): end without a word
            return

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.memory.close()


def main(argv: list[str]) -> int:
    # Stops are the parent's business: a worker ends when told to or when the parent is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd, memory_name, task_json, seed = argv
    connection = Connection(int(fd))
    try:
        worker = Worker(connection, memory_name, SimpleNamespace(**json.loads(task_json)), int(seed))
    except Exception:  # noqa: BLE001
        try:
            connection.send(("error", traceback.format_exc()))
        except PARENT_GONE:  # the parent died while this worker started (its memory block went with it)
            pass
        return 1
    try:
        worker.serve()
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
