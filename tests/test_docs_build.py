"""``make docs``'s build: the guide and the API reference render with no warning, and the reference documents
every public name that ``tests/test_public_api.py`` pins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_public_api import PUBLIC
from wage_parity.testing import python_env, run_python

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_docs_build_without_warnings_and_document_every_public_name(tmp_path: Path) -> None:
    pytest.importorskip("sphinx", reason="sphinx is in the dev extra (pip install '.[dev]')")
    pytest.importorskip("myst_parser", reason="myst-parser is in the dev extra (pip install '.[dev]')")
    out = tmp_path / "html"
    # As `make docs` runs it: -W makes any warning an error.
    done = run_python(["-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", out], cwd=ROOT,
                      env=python_env(pythonpath=[ROOT], JAX_PLATFORMS="cpu"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    html = "".join(page.read_text() for page in (out / "api").glob("*.html"))
    missing = [f"{module}.{name}" for module, names in PUBLIC.items() for name in sorted(names)
               if f'id="{module}.{name}"' not in html and f'id="module-{module}.{name}"' not in html]
    assert not missing, f"not in the API reference: {missing}"
    assert (out / "index.html").exists() and (out / "your-model.html").exists()


def test_changelog_has_one_heading_of_each_kind_per_release() -> None:
    release = None
    seen: dict[str | None, list[str]] = {}
    for line in (ROOT / "CHANGELOG.md").read_text().splitlines():
        if line.startswith("## "):
            release = line[3:]
            seen[release] = []
        elif line.startswith("### "):
            seen[release].append(line[4:])
    assert "[Unreleased]" in seen, seen
    for name, kinds in seen.items():
        assert len(kinds) == len(set(kinds)), f"{name}: {kinds}"
        assert set(kinds) <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, f"{name}: {kinds}"


def test_readme_fits_in_8_kb_and_the_docs_cite_no_tracker_numbers() -> None:
    assert len((ROOT / "README.md").read_bytes()) <= 8192
    # The project has no issue tracker: a tracker number means nothing to a reader (an upstream link such as
    # jax-ml/jax#7637 is a reference, not one of ours).
    cite = re.compile(r"\bissues? \d+|(?<![\w/])#\d+")
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = [f"{page.name}:{n}: {line.strip()}" for page in pages
             for n, line in enumerate(page.read_text().splitlines(), 1) if cite.search(line)]
    assert not found, found
