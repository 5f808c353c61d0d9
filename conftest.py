"""Test-session set-up shared by tests/ and parity_tests/: one JAX compilation cache for the whole run.

Much of the suite's time is XLA compilation of the same programs: the digits MLP's training step is compiled
by dozens of ``wage-train`` runs, in this process and in the subprocesses that the CLI tests start. JAX's
persistent compilation cache (keyed on the program's HLO, the backend and the flags) lets every process of
the session compile each program once. It lives in a temporary folder made for this session and removed at
its end, so no run ever reads another session's entries; a user's own ``JAX_COMPILATION_CACHE_DIR`` is kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_OWNED = "WAGE_TEST_OWNS_JAX_CACHE"


def pytest_configure(config: pytest.Config) -> None:
    # The controller (or a plain run) makes the folder; pytest-xdist workers and the tests' subprocesses inherit
    # the variables. Set before any test module imports jax, which reads them at import.
    if hasattr(config, "workerinput") or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="wage-tests-jax-cache-")
    os.environ[_OWNED] = os.environ["JAX_COMPILATION_CACHE_DIR"]
    # Cache every program: the small ones are the many.
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    folder = os.environ.pop(_OWNED, None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
