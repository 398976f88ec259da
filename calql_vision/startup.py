"""The programs' start-up: a stop while they load is one line, and named pauses for tests.

`python -m calql_vision.<program>` spends a second or more importing torch, robosuite and the
project before its main() can install its own signal handling. calql_vision/__init__.py calls
guard_startup() for such a start (and only then: importing the package never touches a
library user's signals), so Ctrl-C or SIGTERM in that window prints one line and exits with
128 + the signal number instead of a traceback. Each program's `__main__` block runs its main()
through run_program(), which calls ready() first: from there Ctrl-C raises KeyboardInterrupt
and SIGTERM raises SystemExit, so `finally` blocks and context managers clean up, and a stop
the program does not report itself (before it installs handlers of its own, or in a program
with nothing to save) still ends as one line and exit 130 or 143.

pause_point(stage): with CALQL_VISION_PAUSE_AT=<stage> in the environment, the program says
"paused at <stage>" on stderr and waits there for a signal: tests stop a program at a named
moment of its start-up, whatever the machine's load.
"""
from __future__ import annotations

import os
import signal
from typing import Callable

PAUSE_VARIABLE = "CALQL_VISION_PAUSE_AT"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def guard_startup() -> None:
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored (`cmd &` in a script) stays ignored
            signal.signal(signum, _stop_during_startup)
    pause_point("import")


def _stop_during_startup(signum: int, frame) -> None:
    # Nothing exists yet that needs cleaning up; os.write and os._exit are safe in any state
    # an import can be interrupted in.
    os.write(2, f"stopped by {signal.Signals(signum).name} during start-up\n".encode())
    os._exit(128 + signum)


def ready() -> None:
    """main() is about to begin: Ctrl-C raises KeyboardInterrupt again, as in any Python
    program, and SIGTERM raises SystemExit(143), until the program installs handlers of its own.
    A signal ignored or handled on purpose before the guard ran is left as it is."""
    own = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _exit_on_sigterm}
    for signum, handler in own.items():
        if signal.getsignal(signum) is _stop_during_startup:
            signal.signal(signum, handler)


def _exit_on_sigterm(signum: int, frame) -> None:
    os.write(2, b"stopped by SIGTERM\n")
    raise SystemExit(128 + signum)


def run_program(main: Callable[[], int]) -> int:
    """A program's main(), started after ready(); a Ctrl-C that main() does not report itself is
    one line and exit 130, never a traceback."""
    try:
        ready()
        pause_point("main")
        return main()
    except KeyboardInterrupt:
        os.write(2, b"stopped by SIGINT\n")
        return 128 + signal.SIGINT


def pause_point(stage: str) -> None:
    if os.environ.get(PAUSE_VARIABLE) != stage:
        return
    os.write(2, f"paused at {stage}\n".encode())
    while True:  # the signal's handler ends the wait: it raises or exits
        signal.pause()
