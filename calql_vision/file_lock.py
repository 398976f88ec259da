"""An exclusive lock on a file beside the thing it guards (a run directory, a dataset being
written), with the holder's pid inside for the refused process's message.

flock, not a lock file's mere existence: the kernel releases it when the holder dies, even by
kill -9, so a stale lock never blocks anyone.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path


class LockHeld(Exception):
    """Another process holds the lock; `holder` reads "pid <n>" (or "another process")."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def lock_exclusively(path: Path, write_pid: bool = True) -> int:
    """The descriptor of `path` (created if needed), exclusively locked, with this process's pid
    written in. Raises LockHeld when another process holds it, OSError when it cannot be made.

    A holder may remove the file as it finishes (collect does); a process that opened it just
    before then finds it no longer at `path` and opens the new one, instead of locking a file
    nobody else can see."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise LockHeld(f"pid {holder}" if holder.isdigit() else "another process") from None
        except OSError:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        os.close(fd)
    if write_pid:
        record_holder(fd)
    return fd


def record_holder(fd: int) -> None:
    """This process's pid into a held lock file, for a refused process's message."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the pid only improves another process's message (a full disk can refuse it)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def is_locked(path: Path) -> bool:
    """Whether a live process holds the lock on `path` (a missing file: no). Tested with a
    shared lock taken and dropped at once, so it never creates the file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock too
    return False
