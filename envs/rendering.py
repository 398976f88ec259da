"""Headless rendering: choose EGL before MuJoCo is imported, and fail clearly without GL."""
from __future__ import annotations

import ctypes.util
import os

GL_DEBIAN_PACKAGES = "libegl1 libegl-mesa0 libgl1 libgles2"


class MissingGLError(RuntimeError):
    """The GL libraries that headless MuJoCo rendering needs are not installed."""


def configure_headless_rendering() -> None:
    """Select EGL (works with and without a GPU) unless the user picked a backend.

    Must run before the first `import mujoco`/`import robosuite` in the process; the envs
    package calls it at import time for that reason.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
        if ctypes.util.find_library("EGL") is None:
            raise MissingGLError(
                "Headless rendering needs EGL, and libEGL was not found. Install the GL "
                f"libraries: sudo apt-get install -y {GL_DEBIAN_PACKAGES} "
                "(./run.sh installs them automatically when run as root)."
            )
