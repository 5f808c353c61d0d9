"""The Examples sections of the public docstrings run as doctests (add your module to MODULES)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "wage_spec.formulas",
    "wage_spec.init_math",
    "wage_spec.validation",
    "wage_jax.functional",
    "wage_jax.fixed_point",
    "wage_jax.wage_quantizer",
    "wage_jax.optax",
    "wage_jax.linen",
    "wage_jax.train",
    "wage_jax.checked",
    "wage_jax.threefry",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
