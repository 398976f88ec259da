"""scripts/setup.sh's check for the GL libraries, run by bash against a stand-in ldconfig."""
from __future__ import annotations

import subprocess

from conftest import ROOT

LIBRARIES = ("libEGL.so.1", "libEGL_mesa.so.0", "libGL.so.1", "libglib-2.0.so.0")


def _gl_check(listed: tuple[str, ...]) -> str:
    """What the script's gl_missing() says when ldconfig's cache lists `listed` first and then
    about 300 kB of other libraries (far more than a pipe holds, as on a full machine)."""
    entries = " ".join(listed)
    program = f"""
set -euo pipefail
ldconfig() {{
  for lib in {entries}; do echo "	$lib (libc6,x86-64) => /lib/x86_64-linux-gnu/$lib"; done
  for i in $(seq 1 5000); do echo "	libother$i.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libother$i.so.1"; done
}}
source <(sed -n '/^gl_missing()/,/^}}/p' scripts/setup.sh)
if gl_missing; then echo missing; else echo present; fi
"""
    done = subprocess.run(["bash", "-c", program], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_gl_libraries_listed_early_in_a_long_cache_count_as_present():
    # Piped into `grep -q`, ldconfig was cut off by SIGPIPE once grep had its match, and with
    # pipefail the library counted as missing: setup then ran apt-get on a ready machine.
    assert _gl_check(LIBRARIES) == "present"


def test_a_missing_gl_library_is_reported():
    assert _gl_check(LIBRARIES[:2] + LIBRARIES[3:]) == "missing"
