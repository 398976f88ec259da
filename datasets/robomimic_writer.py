"""Write demonstrations in the robomimic HDF5 layout, atomically.

The file is written under a temporary name beside the target (`.<name>.<pid>.tmp`) and moved
into place only by `finish()`, so an interrupted or failed run never leaves a half-written
dataset, and never touches an existing file at the target.

HDF5 does not survive a failed write: after one (a full disk, seen with h5py 3.16 / HDF5 2.0)
the next flush or close of the file can crash the process. So HDF5 writes through
`_GuardedFile`, which never reports a write error to the library: it keeps the first one and
the writer raises it as an `OutputError` naming the target.
"""
from __future__ import annotations

import errno
import io
import json
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np


class OutputError(OSError):
    """The output file could not be written or moved into place; the message names it."""


class _GuardedFile:
    """The temporary file as h5py's `fileobj` driver sees it.

    After the first failed write or truncate, nothing more goes to disk: writes are kept in
    memory, where later reads find them, so HDF5 sees a consistent file until it is closed and
    the file is thrown away. The memory is bounded by what HDF5 still writes after the failure
    (its caches and the rest of one demo), because the writer stops at the failure."""

    def __init__(self, path: Path) -> None:
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        self._pos = 0
        self._size = 0
        self._held: list[tuple[int, bytes]] = []  # (offset, data) written after the failure
        self.error: OSError | None = None

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        start = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = start + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int) -> bytes:
        buffer = bytearray(size)
        self.readinto(buffer)
        return bytes(buffer)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = b""
        if self._fd is not None:
            try:
                data = os.pread(self._fd, len(view), self._pos)
            except OSError as error:
                self.error = self.error or error
        # The driver ignores short reads; past the end of the file HDF5 expects zeros.
        view[: len(data)] = data
        view[len(data):] = bytes(len(view) - len(data))
        for offset, held in self._held:
            start, end = max(offset, self._pos), min(offset + len(held), self._pos + len(view))
            if start < end:
                view[start - self._pos : end - self._pos] = held[start - offset : end - offset]
        self._pos += len(view)
        return len(view)

    def write(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self.error is None and self._fd is not None:
            try:
                done = 0
                while done < len(view):  # pwrite may write less than asked
                    done += os.pwrite(self._fd, view[done:], self._pos + done)
            except OSError as error:
                self.error = error
        if self.error is not None or self._fd is None:
            self._held.append((self._pos, bytes(view)))
        self._pos += len(view)
        self._size = max(self._size, self._pos)
        return len(view)

    def truncate(self, size: int) -> int:
        if self.error is None and self._fd is not None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as error:
                self.error = error
        self._size = size
        return size

    def flush(self) -> None:
        """Nothing is buffered here (pwrite); durability comes from `close(sync=True)`."""

    def close(self, sync: bool = False) -> None:
        if self._fd is None:
            return
        try:
            if sync and self.error is None:
                os.fsync(self._fd)  # delayed write errors (quota, network file systems) show here
        except OSError as error:
            self.error = error
        finally:
            os.close(self._fd)
            self._fd = None


@contextmanager
def _signals_held() -> Iterator[None]:
    """Run the block with Ctrl-C and SIGTERM deferred to its end.

    HDF5 calls back into `_GuardedFile`; an exception raised there by a signal handler (a
    KeyboardInterrupt) is a failed write to HDF5, which can crash the process. Python runs
    signal handlers only in the main thread, so elsewhere there is nothing to hold."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if callable(signal.getsignal(signum)):
            previous[signum] = signal.signal(signum, lambda received, frame: pending.append(received))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in pending:
            signal.raise_signal(signum)


class RobomimicWriter:
    """Usage:

        with RobomimicWriter("demos.hdf5", env.env_args) as writer:
            writer.add_demo(actions=..., states=..., rewards=..., dones=..., obs=..., next_obs=..., model_file=...)
            writer.finish(valid_fraction=0.1, seed=0)

    Leaving the block without `finish()` (an exception, Ctrl-C) deletes the temporary file.
    `finish()` replaces an existing file at the target only with overwrite=True; without it, a
    file that appeared there meanwhile is kept and `finish()` raises `OutputError`. A failed
    write raises `OutputError` from `add_demo()` or `finish()`.
    """

    def __init__(self, path: str | os.PathLike, env_args: dict[str, Any], overwrite: bool = False) -> None:
        self.path = Path(path)
        self._overwrite = overwrite
        self._tmp_path = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._env_args = env_args
        self._names: list[str] = []
        self._total = 0
        self._finished = False
        self._file: h5py.File | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._sink = _GuardedFile(self._tmp_path)
        except OSError as error:
            raise OutputError(f"cannot write {self.path}: {error.strerror or error}") from error
        try:
            with _signals_held():
                self._file = h5py.File(self._sink, "w")
                self._data = self._file.create_group("data")
            self._raise_if_failed()
        except BaseException:
            self._discard()
            raise

    def __enter__(self) -> "RobomimicWriter":
        return self

    def __exit__(self, *exc) -> None:
        if not self._finished:
            self._discard()

    @property
    def num_demos(self) -> int:
        return len(self._names)

    def add_demo(
        self,
        actions: np.ndarray,
        states: np.ndarray,
        rewards: np.ndarray,
        dones: np.ndarray,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        model_file: str,
    ) -> str:
        """Append one demo; image observations are HWC uint8, upright."""
        n = len(actions)
        for name, array in [("states", states), ("rewards", rewards), ("dones", dones)] + [
            (f"obs/{k}", v) for k, v in obs.items()
        ] + [(f"next_obs/{k}", v) for k, v in next_obs.items()]:
            if len(array) != n:
                raise ValueError(f"demo {len(self._names)}: {name} has {len(array)} entries, actions has {n}")
        name = f"demo_{len(self._names)}"
        with _signals_held():
            self._write_demo(name, n, actions, states, rewards, dones, obs, next_obs, model_file)
            self._file.flush()  # so a full disk shows at the demo that filled it, not at finish()
        self._raise_if_failed()
        self._names.append(name)
        self._total += n
        return name

    def _write_demo(self, name, n, actions, states, rewards, dones, obs, next_obs, model_file) -> None:
        # A function of its own so the h5py objects it opens are closed before it returns.
        group = self._data.create_group(name)
        group.attrs["num_samples"] = n
        group.attrs["model_file"] = model_file
        group.create_dataset("actions", data=np.asarray(actions, dtype=np.float64))
        group.create_dataset("states", data=np.asarray(states, dtype=np.float64))
        group.create_dataset("rewards", data=np.asarray(rewards, dtype=np.float64))
        group.create_dataset("dones", data=np.asarray(dones, dtype=np.int64))
        for section, values in (("obs", obs), ("next_obs", next_obs)):
            for key, array in values.items():
                array = np.asarray(array)
                # Images dominate the file; gzip is readable by every HDF5 build (robomimic's too).
                compression = "gzip" if array.dtype == np.uint8 else None
                group.create_dataset(f"{section}/{key}", data=array, compression=compression)

    def finish(self, valid_fraction: float = 0.1, seed: int = 0) -> Path:
        """Write `total`, `env_args` and the train/valid masks, then move the file into place."""
        if not self._names:
            raise ValueError(f"{self.path}: no demos to write")
        order = np.random.default_rng(seed).permutation(len(self._names))
        num_valid = int(round(valid_fraction * len(self._names)))
        if valid_fraction > 0 and len(self._names) > 1:
            num_valid = min(max(num_valid, 1), len(self._names) - 1)
        valid = sorted(order[:num_valid].tolist())
        train = sorted(order[num_valid:].tolist())
        with _signals_held():
            self._data.attrs["total"] = self._total
            self._data.attrs["env_args"] = json.dumps(self._env_args)
            self._write_masks(train, valid)
            self._file.close()
        self._sink.close(sync=True)
        self._raise_if_failed()
        self._move_into_place()
        self._finished = True
        return self.path

    def _write_masks(self, train: list[int], valid: list[int]) -> None:
        mask = self._file.create_group("mask")
        mask.create_dataset("train", data=np.array([self._names[i] for i in train], dtype="S"))
        mask.create_dataset("valid", data=np.array([self._names[i] for i in valid], dtype="S"))

    def _raise_if_failed(self) -> None:
        error = self._sink.error
        if error is not None:
            kept = "; the existing file is unchanged" if self.path.exists() else ""
            raise OutputError(f"writing {self.path} failed: {error.strerror or error}{kept}") from error

    def _move_into_place(self) -> None:
        try:
            if self._overwrite:
                os.replace(self._tmp_path, self.path)
            else:
                self._link_into_place()
        except FileExistsError as error:
            raise OutputError(
                f"{self.path} appeared while it was being written; kept it and discarded the new demos "
                "(overwrite replaces it)"
            ) from error
        except OSError as error:
            raise OutputError(f"cannot move the finished file to {self.path}: {error.strerror or error}") from error

    def _link_into_place(self) -> None:
        # Unlike a rename, a hard link fails when the target exists, so a file that appeared
        # since the collection started (another writer) is never replaced, whatever the timing.
        try:
            os.link(self._tmp_path, self.path)
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS):
                raise
            # A file system without hard links: check, then rename (a narrow window remains).
            if self.path.exists():
                raise FileExistsError(errno.EEXIST, "File exists", str(self.path)) from error
            os.replace(self._tmp_path, self.path)
            return
        self._tmp_path.unlink(missing_ok=True)

    def _discard(self) -> None:
        """Close and delete the temporary file; any existing file at the target is not touched."""
        if self._file is not None:
            with _signals_held():
                try:
                    self._file.close()  # after a failure writes go to memory, so this cannot crash
                except Exception:  # noqa: BLE001 - the file is thrown away; the first error is what counts
                    pass
        self._sink.close()
        self._tmp_path.unlink(missing_ok=True)
