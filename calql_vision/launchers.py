"""Where `compare` runs its trainers: here, as processes (`launcher=local`), as tasks of a Ray
cluster (`launcher=ray`), or as Slurm jobs through submitit (`launcher=slurm`). Either way a
trainer is the same `python -m calql_vision.train ...` command writing into the study
directory, so skipping, resuming and retrying runs, the failure report and summary.md are the
same; a grid beyond this machine assumes the study directory is on a filesystem every node
shares (as cluster home and scratch directories are).

A launcher's `start` returns a handle with the part of subprocess.Popen's interface compare
uses: poll(), returncode, send_signal(), wait().
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

from calql_vision.config import ConfigError

PR_SET_PDEATHSIG = 1


def _trainer_start_hook():
    """The preexec_fn of each local trainer.

    * Ctrl-C's default handling back: a compare started with SIGINT ignored (`compare ... &` in
      a script) would hand that on, and a trainer still loading when compare passed its stop
      would never see it and train to the end. Trainers run in sessions of their own, so the
      only SIGINT one gets is compare's.
    * SIGTERM when compare dies, however it dies (kill -9 included), so no trainer runs on
      unattended; it stops at a safe point with a checkpoint and the next compare resumes it.
      Linux's PR_SET_PDEATHSIG; elsewhere not set. prctl is looked up here, in compare: the
      forked child only calls it."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        prctl = None
    compare_pid = os.getpid()

    def hook() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != compare_pid:  # compare died before the line above took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


class LocalLauncher:
    """Trainers as child processes, each in a session of its own (a terminal's Ctrl-C reaches
    compare alone, which passes one stop to each)."""

    name = "local"
    stops_runs_on_interrupt = True

    def __init__(self) -> None:
        self._hook = _trainer_start_hook()

    def start(self, command: list[str], log: Path, job_name: str, runs_folder: Path) -> subprocess.Popen:
        with open(log, "a") as handle:
            return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=self._hook)


# ---------------------------------------------------------------------- Slurm (submitit)
class TrainerCommand:
    """What a Slurm job runs: one trainer command, its output appended to the job's log.

    Preempted or out of time, Slurm signals the job (submitit's USR2): `checkpoint` stops the
    trainer with SIGTERM, which saves a checkpoint at a safe point, and resubmits the job as a
    resume of that run."""

    def __init__(self, command: list[str], log: str, runs_folder: str) -> None:
        self.command, self.log, self.runs_folder = list(command), str(log), str(runs_folder)
        self._child: Optional[subprocess.Popen] = None

    def __call__(self) -> int:
        with open(self.log, "a") as handle:
            self._child = subprocess.Popen(self.command, stdout=handle, stderr=subprocess.STDOUT)
        return self._child.wait()

    def checkpoint(self, *args: Any, **kwargs: Any):
        from submitit.helpers import DelayedSubmission

        if self._child is not None and self._child.returncode is None:
            self._child.send_signal(signal.SIGTERM)
            # waitpid itself, not Popen.wait: this runs in a signal handler that may have
            # interrupted __call__'s Popen.wait, which holds a lock a second wait would block on.
            try:
                os.waitpid(self._child.pid, 0)
            except ChildProcessError:  # already reaped: it had ended
                pass
        resume = self._resume_command()
        return DelayedSubmission(TrainerCommand(resume or self.command, self.log, self.runs_folder))

    def _resume_command(self) -> Optional[list[str]]:
        """`train resume=<the newest run with a checkpoint>` of this job's runs folder."""
        folder = Path(self.runs_folder)
        runs = sorted(p for p in folder.iterdir() if any((p / "checkpoints").glob("*.pt"))) if folder.is_dir() else []
        if not runs:
            return None  # stopped before its first checkpoint: start the same command again
        threads = [arg for arg in self.command if arg.startswith("threads=")]
        return [sys.executable, "-m", "calql_vision.train", f"resume={runs[-1]}", *threads]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_child"] = None  # a process handle is not part of what is resubmitted
        return state


class SubmititHandle:
    """A submitted job seen as a process: poll() is None while it is queued or running."""

    def __init__(self, job) -> None:
        self.job = job
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None and self.job.done():
            try:
                self.returncode = int(self.job.result())
            except Exception:  # the job itself failed (node failure, out of time for good, cancelled)
                self.returncode = 1
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.job.cancel(check=False)

    def wait(self) -> Optional[int]:
        return self.poll()


class SlurmLauncher:
    """Each trainer as one Slurm job (submitit). `slurm_cluster=local` runs the same jobs through
    submitit's local executor on this machine: what the tests use, and a way to try a grid."""

    name = "slurm"
    stops_runs_on_interrupt = False  # jobs belong to the scheduler: a rerun of compare waits for them

    def __init__(self, folder: Path, cfg: Any) -> None:
        import submitit

        if cfg.slurm_cluster != "local" and shutil.which("sbatch") is None:  # before submitit makes its folder
            raise RuntimeError("no Slurm here (no sbatch on the PATH)")
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster="local" if cfg.slurm_cluster == "local"
                                              else "slurm")
        parameters: dict[str, Any] = {"timeout_min": int(cfg.slurm_time_min), "cpus_per_task": int(cfg.threads)}
        if self.executor.cluster == "slurm":
            parameters.update(slurm_partition=cfg.slurm_partition, gpus_per_node=int(cfg.slurm_gpus),
                              slurm_signal_delay_s=120)
        self.executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})

    def start(self, command: list[str], log: Path, job_name: str, runs_folder: Path) -> SubmititHandle:
        self.executor.update_parameters(name=job_name)
        return SubmititHandle(self.executor.submit(TrainerCommand(command, str(log), str(runs_folder))))


# ---------------------------------------------------------------------- Ray
def run_trainer(command: list[str], log: str, cwd: str) -> int:
    """A Ray task's body: the trainer as a child process in compare's working directory (the
    study's relative paths hold there), its output appended to the log. A cancelled task
    (compare's Ctrl-C) passes the stop on and waits for its checkpoint."""
    with open(log, "a") as handle:
        child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        return child.wait()
    except KeyboardInterrupt:  # how Ray cancels a running task
        child.send_signal(signal.SIGINT)
        return child.wait()


class RayHandle:
    """A submitted Ray task seen as a process."""

    def __init__(self, ray, ref) -> None:
        self.ray, self.ref = ray, ref
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            ready, _ = self.ray.wait([self.ref], timeout=0)
            if ready:
                try:
                    self.returncode = int(self.ray.get(self.ref))
                except Exception:  # the task or its node failed, or it was cancelled before it ran
                    self.returncode = 1
        return self.returncode

    def send_signal(self, signum: int) -> None:
        self.ray.cancel(self.ref)

    def wait(self) -> Optional[int]:
        while self.poll() is None:
            self.ray.wait([self.ref], timeout=1.0)
        return self.returncode


class RayLauncher:
    """Each trainer as one task on an existing Ray cluster, declaring `threads` CPUs and
    `ray_gpus` GPUs, so the cluster places as many at once as its nodes hold."""

    name = "ray"
    stops_runs_on_interrupt = True

    def __init__(self, cfg: Any) -> None:
        import ray

        self.ray = ray
        if cfg.ray_address != "auto":  # Ray itself retries an address for minutes before it gives up
            host, _, port = cfg.ray_address.rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=10).close()
            except (OSError, ValueError) as error:
                raise ConnectionError(f"no Ray cluster answers there ({error})") from None
        # The workers import this module to run run_trainer: the project root goes on their path.
        root = str(Path(__file__).resolve().parents[1])
        ray.init(address=cfg.ray_address, logging_level="ERROR", log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": root}})
        self.remote = ray.remote(run_trainer).options(num_cpus=int(cfg.threads), num_gpus=float(cfg.ray_gpus),
                                                      max_retries=0)

    def start(self, command: list[str], log: Path, job_name: str, runs_folder: Path) -> RayHandle:
        return RayHandle(self.ray, self.remote.remote(command, str(log.resolve()), os.getcwd()))


def make_launcher(cfg: Any, slurm_folder: Path):
    """The launcher compare's settings ask for; ConfigError (one line) when it cannot be had."""
    if cfg.launcher == "local":
        return LocalLauncher()
    if cfg.launcher == "ray":
        if importlib.util.find_spec("ray") is None:
            raise ConfigError("launcher=ray needs the ray package, which is not installed: "
                              "pip install ray (requirements-test.txt pins the version the tests use)")
        try:
            return RayLauncher(cfg)
        except (ConnectionError, RuntimeError) as error:  # no cluster at ray_address
            raise ConfigError(f"launcher=ray ray_address={cfg.ray_address}: "
                              f"{' '.join(str(error).split())[:200]}") from None
    if importlib.util.find_spec("submitit") is None:
        raise ConfigError("launcher=slurm needs the submitit package, which is not installed: "
                          "pip install submitit (requirements-test.txt pins the version the tests use)")
    try:
        return SlurmLauncher(slurm_folder, cfg)
    except RuntimeError as error:  # submitit found no cluster to submit to
        raise ConfigError(f"launcher=slurm slurm_cluster={cfg.slurm_cluster}: {' '.join(str(error).split())[:200]} "
                          "(slurm_cluster=local runs the jobs on this machine)") from None
