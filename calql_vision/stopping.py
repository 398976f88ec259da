"""Stopping a training run on purpose: SIGINT (Ctrl-C) and SIGTERM (kill, a scheduler's stop)
end the run at a point where its state is whole, so a final checkpoint can be written.

Before training begins there is nothing to save, and a signal stops the program at once.
While training, the first signal is only recorded; the trainer calls `check()` at its safe
points (after an update, between environment steps, between evaluation steps), never inside
an update or a checkpoint write. A second signal stops at once, without a checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(Exception):
    """A stop signal arrived. `at_safe_point`: raised by `check()`, where the trainer's state
    is whole and may be saved; otherwise raised wherever the signal interrupted the program."""

    def __init__(self, signum: int, at_safe_point: bool) -> None:
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
        self.at_safe_point = at_safe_point
        super().__init__(f"stopped by {self.signal_name}")


class StopSignals:
    def __init__(self) -> None:
        self.pending: int | None = None
        self._deferring = False

    def install(self) -> "StopSignals":
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self._deferring and self.pending is None:
            self.pending = signum
            # os.write, not print: the signal may have interrupted a write to sys.stderr (the
            # progress bar), and a buffered stream refuses a reentrant call.
            os.write(2, (f"\n{signal.Signals(signum).name}: stopping at the next safe point with a checkpoint "
                         "(send it again to stop at once, without one)\n").encode())
            return
        raise StopRequested(signum, at_safe_point=False)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Inside: signals wait for `check()` (nests: the outermost block decides when it ends)."""
        outer, self._deferring = self._deferring, True
        try:
            yield
        finally:
            self._deferring = outer

    def check(self) -> None:
        if self.pending is not None:
            raise StopRequested(self.pending, at_safe_point=True)
