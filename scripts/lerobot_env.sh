#!/usr/bin/env bash
# Builds (once) the separate environment in which the tests run LeRobot's own LeRobotDataset
# class on our exports. LeRobot pins an older torch than calql_vision's and needs Python >= 3.12,
# so it cannot share .venv. Prints the environment's python on the last line.
#   CALQL_LEROBOT_ENV   where to build it (default ~/.cache/calql_vision/lerobot-<version>)
#   CALQL_PYTHON312     the Python 3.12+ to build it with (default: python3.12 on PATH, then pyenv's)
set -euo pipefail
version=0.6.1
target="${CALQL_LEROBOT_ENV:-$HOME/.cache/calql_vision/lerobot-$version}"
stamp="lerobot[dataset]==$version"
built() { [ -x "$target/bin/python" ] && [ "$(cat "$target/.built" 2>/dev/null)" = "$stamp" ]; }
if built; then
  echo "$target/bin/python"
  exit 0
fi
# One build at a time (the tests run in parallel workers): a second caller waits for the
# first, then finds the environment built.
mkdir -p "$(dirname "$target")"
exec 9>"$target.lock"
flock 9
if built; then
  echo "$target/bin/python"
  exit 0
fi
# The first that runs: a pyenv shim on PATH may exist yet refuse to run outside its version.
python312=""
for candidate in ${CALQL_PYTHON312:-} python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
  if "$candidate" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
    python312="$candidate"
    break
  fi
done
if [ -z "$python312" ]; then
  echo "no Python 3.12 found (set CALQL_PYTHON312); LeRobot $version needs Python >= 3.12" >&2
  exit 3
fi
echo "[lerobot] building $target with $("$python312" --version) (one time: ~5 GB, a few minutes)" >&2
rm -rf "$target.partial"
"$python312" -m venv "$target.partial"
"$target.partial/bin/python" -m pip install -q --upgrade pip >&2
"$target.partial/bin/python" -m pip install -q "$stamp" >&2
echo "$stamp" > "$target.partial/.built"
rm -rf "$target"
mv "$target.partial" "$target"
echo "$target/bin/python"
