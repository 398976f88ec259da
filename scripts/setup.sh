#!/usr/bin/env bash
# Makes a machine ready to run calql_vision; safe to call before every command.
#   1. Headless MuJoCo renders through EGL. When the GL libraries are missing and we are
#      root, install them from Debian; otherwise name the packages and go on (the
#      environment then raises an error naming them too).
#   2. A virtual environment in .venv with the pinned packages of requirements*.txt,
#      rebuilt only when those files change (a hash of them is kept in .venv), one build at a
#      time (.venv.lock).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

GL_PACKAGES="libegl1 libegl-mesa0 libgl1 libgles2 libglib2.0-0"
gl_missing() {
  # The cache is read whole first: piped into `grep -q`, ldconfig could be cut off by SIGPIPE
  # once grep had its match, and under pipefail a library found would count as missing.
  local cache
  cache="$(ldconfig -p 2>/dev/null || true)"
  for lib in libEGL.so.1 libEGL_mesa.so.0 libGL.so.1 libglib-2.0.so.0; do
    grep -qF "$lib" <<<"$cache" || return 0
  done
  return 1
}
if gl_missing; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # One install at a time: commands started together on a fresh machine would otherwise
    # fail on apt's lock; a caller that waited finds the libraries there.
    exec 8>/tmp/calql_vision_gl.lock
    flock 8
    if gl_missing; then
      echo "[setup] installing GL libraries for headless rendering: $GL_PACKAGES"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $GL_PACKAGES >/dev/null
    fi
    exec 8>&-
  else
    echo "[setup] warning: GL libraries missing; install them with: sudo apt-get install $GL_PACKAGES" >&2
  fi
fi

PYTHON="${PYTHON:-python3}"
stamp_value="$({ cat requirements.txt requirements-test.txt; "$PYTHON" --version; } | sha256sum | cut -d' ' -f1)"
stamp_file=.venv/.requirements.sha256
stale() { [ ! -f "$stamp_file" ] || [ "$(cat "$stamp_file")" != "$stamp_value" ]; }
if stale; then
  # One build at a time: a second caller (a parallel test worker, a study's next command)
  # waits for the first, then finds .venv built, instead of deleting it half-way through.
  exec 9>.venv.lock
  flock 9
  if stale; then
    echo "[setup] creating .venv with the pinned packages (first run: a few minutes, ~5 GB)"
    rm -rf .venv
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements.txt -r requirements-test.txt
    echo "$stamp_value" > "$stamp_file"  # last: an interrupted build stays stale
  fi
  exec 9>&-
fi
