"""calql_vision: offline-to-online Cal-QL for robots that see."""
import sys

# Started as a program (`python -m calql_vision.<program>`: argv[0] reads "-m" while the
# package loads): a stop before main() runs is one line, not a traceback (startup.py).
if sys.argv[:1] == ["-m"]:
    from calql_vision.startup import guard_startup

    guard_startup()

# torch loads triton lazily (at the first optimizer or compile). triton carries its own
# LLVM, and loading it after Mesa's software renderer (which links the system LLVM) has
# started rendering crashes the process with a segmentation fault. Loading it first is
# safe, so every program of the package does that here, before any environment exists.
try:
    import triton  # noqa: F401
except ImportError:  # CPU-only torch builds come without triton
    pass
