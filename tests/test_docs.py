"""The README and docs/: short enough to read, every link resolves, every program's --help
names its page."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from calql_vision.config import DOCS_PAGES
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # no headings in code blocks
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#+ (.*)$", text, re.M)}


def links_of(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return LINK.findall(text)


def test_the_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    linked = {target.split("#")[0] for target in links_of(ROOT / "README.md")}
    assert {f"docs/{page.name}" for page in PAGES[1:]} <= linked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves_to_a_file_and_heading_that_exist(page):
    assert links_of(page), f"{page} links nowhere"
    for target in links_of(page):
        if re.match(r"^[a-z]+:", target):  # web addresses are not walked (no network in CI)
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors_of(linked), f"{page.name}: {target} names no heading of {linked.name}"


def test_the_walker_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[gone](missing.md) [here](#title) [nowhere](#no-such-heading)\n")
    assert links_of(page) == ["missing.md", "#title", "#no-such-heading"]
    assert "title" in anchors_of(page) and "no-such-heading" not in anchors_of(page)
    assert not (tmp_path / "missing.md").exists()


@pytest.mark.slow
@pytest.mark.parametrize("program", sorted(DOCS_PAGES))
def test_every_program_s_help_names_its_docs_page(program):
    result = subprocess.run([sys.executable, "-m", program, "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    page = DOCS_PAGES[program]
    assert f"More: {page}" in result.stdout and (ROOT / page).is_file()
