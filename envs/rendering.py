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
        if os.environ.get("CUDA_VISIBLE_DEVICES") == "" and "MUJOCO_EGL_DEVICE_ID" not in os.environ:
            # A job given no GPU (Slurm, submitit) has CUDA_VISIBLE_DEVICES set but empty, which
            # robosuite's EGL set-up parses as a device list and fails on; EGL's first device
            # is what it picks when the variable is unset.
            os.environ["MUJOCO_EGL_DEVICE_ID"] = "0"
        if ctypes.util.find_library("EGL") is None:
            raise MissingGLError(
                "Headless rendering needs EGL, and libEGL was not found. Install the GL "
                f"libraries: sudo apt-get install -y {GL_DEBIAN_PACKAGES} "
                "(./run.sh installs them automatically when run as root)."
            )
