#!/usr/bin/env bash
# Runs any command inside calql_vision's environment, installing it first if needed:
#   ./run.sh python -m calql_vision.train task=pick_place_visual
#   ./run.sh python -m pytest tests
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$root/scripts/setup.sh"
# Headless rendering: EGL must be chosen before mujoco is imported.
export MUJOCO_GL="${MUJOCO_GL:-egl}" PYOPENGL_PLATFORM="${PYOPENGL_PLATFORM:-egl}"
# glibc would hand large tensors back to the kernel after every update and fault them in
# again; keeping them mapped halved the pixel update time (see the README's performance notes).
export MALLOC_MMAP_MAX_="${MALLOC_MMAP_MAX_:-0}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-68719476736}"
cd "$root"
# shellcheck disable=SC1091
source .venv/bin/activate
exec "$@"
