"""The README's Python examples run as written, in order, in a fresh interpreter."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wage_parity.testing import python_env, run_python

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_python_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 3, "the README shows the JAX, functional and torch APIs"
    env = python_env(pythonpath=[ROOT], JAX_PLATFORMS="cpu")
    for i, block in enumerate(blocks):
        done = run_python(["-c", block], cwd=ROOT, env=env, timeout=None)
        assert done.returncode == 0, f"README python block {i} failed:\n{block}\n{done.stderr[-3000:]}"
