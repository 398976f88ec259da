"""The programs' start-up: a stop while they load is one line, and named pauses for tests.

`python -m calql_vision.<program>` spends a second or more importing torch, robosuite and the
project before its main() can install its own signal handling. calql_vision/__init__.py calls
guard_startup() for such a start (and only then: importing the package never touches a
library user's signals), so Ctrl-C or SIGTERM in that window prints one line and exits with
128 + the signal number instead of a traceback. main() calls ready() first, handing the
signals back to Python's defaults until the program installs its own.

pause_point(stage): with CALQL_VISION_PAUSE_AT=<stage> in the environment, the program says
"paused at <stage>" on stderr and waits there for a signal: tests stop a program at a named
moment of its start-up, whatever the machine's load.
"""
from __future__ import annotations

import os
import signal

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
    """main() has begun: Ctrl-C raises KeyboardInterrupt again and SIGTERM ends the process, as
    in any Python program, until the program installs handlers of its own."""
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for signum, default in defaults.items():
        if signal.getsignal(signum) is _stop_during_startup:  # anything else was set on purpose
            signal.signal(signum, default)


def pause_point(stage: str) -> None:
    if os.environ.get(PAUSE_VARIABLE) != stage:
        return
    os.write(2, f"paused at {stage}\n".encode())
    while True:  # the signal's handler ends the wait: it raises or exits
        signal.pause()
