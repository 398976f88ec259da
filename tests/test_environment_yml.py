"""environment.yml (conda) and the pip requirement files must pin the same packages."""
from __future__ import annotations

import yaml

from conftest import ROOT


def _requirement_lines(name: str) -> set[str]:
    lines = (ROOT / name).read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.strip().startswith("#")}


def test_environment_yml_matches_pip_requirements():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1
    conda_pins = set(pip_sections[0])
    pip_pins = _requirement_lines("requirements.txt") | _requirement_lines("requirements-test.txt")
    assert conda_pins == pip_pins, f"only in environment.yml: {conda_pins - pip_pins}; only in requirements: {pip_pins - conda_pins}"
    assert all("==" in pin for pin in pip_pins), "every dependency is pinned"

