"""Files that appear whole or not at all."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

# Temporary files are ".<name>.<random>.tmp" beside their target, so a cleaner can find them.
TEMPORARY_SUFFIX = ".tmp"


def _default_mode() -> int:
    """What open() would give a new file: 0o666 less the process's umask (read without change)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file handle on a temporary file beside `path`.

    When the block ends normally the file is flushed, fsynced and renamed onto `path`; when
    it raises (or the process is told to stop) the temporary file is deleted, so a kill never
    leaves a half-written checkpoint, replay or summary under `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, delete=False)
    try:
        with handle:
            yield handle
            handle.flush()
            # The temporary file is private (0600); the result is an ordinary file like any other.
            os.fchmod(handle.fileno(), _default_mode())
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except OSError as error:
        if error.filename is not None:
            raise
        # A write through the handle (a full disk) names no file: name the one being written.
        raise OSError(error.errno, error.strerror, str(path)) from error
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
