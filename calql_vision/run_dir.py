"""A training run's directory: the one place its layout is spelt out, its creation, its lock,
and the choice of the checkpoint a resume starts from.

    <runs_root>/<task>/<algo>/<timestamp>/
        config.yaml                 the settings (rewritten only by a resume that validated)
        metrics.csv, tensorboard/   one row per log point
        checkpoints/step_<n>.pt     every checkpoint; latest.pt is a copy of the newest
        online_replay_<n>_<e>.npz   the online replay at update n after e episodes (older ones removed)
        videos/step_<n>.mp4         the first episode of each training-time evaluation
        calibration/step_<n>.npz    Q against reward-to-go (offline end, online end)
        eval/<checkpoint>-seed<s>/  written by `python -m calql_vision.evaluate`
        .lock                       held by the process training in it
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from calql_vision.atomic_file import TEMPORARY_SUFFIX
from calql_vision.file_lock import LockHeld, is_locked, lock_exclusively, record_holder


class RunDirBusy(RuntimeError):
    """Another process holds the run directory's lock."""


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ------------------------------------------------------------------ the layout
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    METRICS_FILE = "metrics.csv"  # what marks a folder as a run to the plot program

    @property
    def metrics(self) -> Path:
        return self.root / self.METRICS_FILE

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def latest(self) -> Path:
        return self.checkpoints / "latest.pt"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step_{step}.pt"

    def replay(self, step: int, episodes: int) -> Path:
        return self.root / f"online_replay_{step}_{episodes}.npz"

    def replays(self) -> list[Path]:
        return sorted(self.root.glob("online_replay_*.npz"))

    def video(self, step: int) -> Path:
        return self.root / "videos" / f"step_{step}.mp4"

    @property
    def calibration_dir(self) -> Path:
        return self.root / "calibration"

    def calibration(self, step: int) -> Path:
        return self.calibration_dir / f"step_{step}.npz"

    def calibrations(self) -> list[Path]:
        return sorted(self.calibration_dir.glob("step_*.npz"))

    def evaluation(self, checkpoint_name: str, seed: int) -> Path:
        return self.root / "eval" / f"{checkpoint_name}-seed{seed}"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        """(n, checkpoints/step_<n>.pt), newest (highest n) first."""
        found = []
        for path in self.checkpoints.glob("step_*.pt"):
            step = path.stem.removeprefix("step_")
            if step.isdigit():
                found.append((int(step), path))
        return sorted(found, reverse=True)

    def has_any_checkpoint(self) -> bool:
        """Whether any checkpoint file exists, readable or not."""
        return self.checkpoints.is_dir() and any(self.checkpoints.glob("*.pt"))

    def clear_training_outputs(self) -> None:
        """What a run wrote before its first checkpoint (rows, events, videos, snapshots,
        replays): a run that starts over in its directory begins from nothing."""
        import shutil

        self.metrics.unlink(missing_ok=True)
        for folder in (self.tensorboard, self.root / "videos", self.calibration_dir):
            shutil.rmtree(folder, ignore_errors=True)
        for replay in self.replays():
            replay.unlink(missing_ok=True)

    def trainer_temporaries(self) -> list[Path]:
        """Temporary files a killed trainer can leave (see atomic_file) in the folders only the
        trainer writes; eval/ is left alone, an evaluation may be running there."""
        folders = [self.root, self.checkpoints, self.calibration_dir, self.root / "videos"]
        # Video writers put the suffix before ".mp4", so match it anywhere in the name.
        return [p for folder in folders if folder.is_dir() for p in folder.glob(f".*{TEMPORARY_SUFFIX}*")]

    # ------------------------------------------------------------------ creation and lock
    @classmethod
    def create(cls, runs_root: str | os.PathLike, task: str, algo: str) -> "RunDir":
        """A new, empty <runs_root>/<task>/<algo>/<timestamp>[-k]; safe against another
        process creating one in the same second (mkdir either creates or fails)."""
        parent = Path(runs_root) / task / algo
        parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in range(1, 10_000):
            root = parent / (stamp if suffix == 1 else f"{stamp}-{suffix}")
            try:
                root.mkdir()
            except FileExistsError:
                continue
            return cls(root)
        raise RuntimeError(f"{parent}: no free run directory name for {stamp}")

    def lock(self, announce: bool = True) -> "RunLock":
        return RunLock(self.lock_file, announce)

    def busy(self) -> bool:
        """A live trainer holds this run (its lock is released when it exits, however it dies)."""
        return is_locked(self.lock_file)


class RunLock:
    """The trainer's exclusive lock on <run>/.lock, held while the process lives (see file_lock)."""

    def __init__(self, path: Path, announce: bool = True) -> None:
        """announce=False: the file keeps its last holder's pid until announce() (a resume that
        may still be refused leaves .lock as it found it)."""
        self.path = path
        try:
            self._fd: int | None = lock_exclusively(path, write_pid=announce)
        except LockHeld as held:
            raise RunDirBusy(f"{path.parent} is in use by another process ({held.holder}); "
                             "wait for it to finish or stop it first") from None

    def announce(self) -> None:
        if self._fd is not None:
            record_holder(self._fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ---------------------------------------------------------------------- resuming
@dataclass
class ResumePoint:
    path: Path
    checkpoint: dict[str, Any]
    skipped: list[str]  # "<file>: <why>" for every candidate passed over


def find_resume_point(run: RunDir, load: Callable[[Path], dict[str, Any]]) -> ResumePoint | None:
    """The newest usable checkpoint: one that loads and whose online replay (if it names one)
    exists. latest.pt is normally it. A kill between writing step_<n>.pt and its copy leaves a
    step file newer than latest.pt, and a damaged or missing latest.pt leaves the step files;
    either way the newest usable step file is taken. `load` raises ValueError for a file it
    cannot read."""
    skipped: list[str] = []

    def usable(path: Path) -> dict[str, Any] | None:
        try:
            checkpoint = load(path)
        except ValueError as error:
            skipped.append(f"{path.name}: unreadable ({str(error).split(': ')[-1][:120]})")
            return None
        replay = checkpoint.get("online_replay")
        if replay and not (run.root / replay).is_file():
            skipped.append(f"{path.name}: its online replay {replay} is gone")
            return None
        return checkpoint

    latest = usable(run.latest) if run.latest.is_file() else None
    if not run.latest.is_file():
        skipped.append(f"{run.latest.name}: missing")
    newest_known = latest["counters"]["step"] if latest is not None else -1
    for step, path in run.step_checkpoints():
        if step <= newest_known:
            break  # step files are newest first: nothing newer than latest.pt is left
        checkpoint = usable(path)
        if checkpoint is not None:
            if latest is not None:
                skipped.append(f"{run.latest.name}: older than {path.name}")
            return ResumePoint(path, checkpoint, skipped)
    return ResumePoint(run.latest, latest, skipped) if latest is not None else None
