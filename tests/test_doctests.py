"""The Examples sections of the public docstrings run as doctests (add your module to MODULES)."""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
from pathlib import Path

import pytest

MODULES = [
    "wage_spec.formulas",
    "wage_spec.init_math",
    "wage_spec.validation",
    "wage_spec.integer_program",
    "wage_jax._src.functional",
    "wage_jax._src.layers",
    "wage_jax._src.fixed_point",
    "wage_jax._src.wage_quantizer",
    "wage_jax._src.transforms",
    "wage_jax.linen",
    "wage_jax._src.train",
    "wage_jax.checked",
    "wage_jax._src.threefry",
    "wage_torch.wage_qtorch",
    "wage_torch.backend",
    "wage_torch.torch_kernels",
    "wage_torch.initializer",
    "wage_torch.models",
    "wage_torch.training",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


TORCH_MODULES = [m for m in MODULES if m.startswith("wage_torch.")]


@pytest.mark.parametrize("name", TORCH_MODULES)
def test_wage_torch_public_api_is_documented(name: str) -> None:
    """Every function and class a wage_torch module defines is private (``_name``) or in ``__all__``, and
    every public one has a docstring with Args/Returns/Raises/References sections as they apply, an example
    and full type hints."""
    module = importlib.import_module(name)
    defined = {n: obj for n, obj in vars(module).items()
               if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == name}
    assert not [n for n in defined if not n.startswith("_") and n not in module.__all__], "public but not in __all__"
    for n in module.__all__:
        obj = getattr(module, n)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue  # constants
        doc = inspect.getdoc(obj) or ""
        if inspect.isclass(obj) and issubclass(obj, Warning):
            assert doc, f"{name}.{n} has no docstring"
            continue
        sig = inspect.signature(obj)
        params = [p for p in sig.parameters.values() if p.name not in ("self", "cls")]
        missing = [s for s, needed in [("Args:", bool(params)), ("References:", True), ("Examples:", True),
                                       ("Returns:", inspect.isfunction(obj) and sig.return_annotation != "None")]
                   if needed and s not in doc]
        assert not missing, f"{name}.{n}'s docstring lacks {missing}"
        untyped = [p.name for p in params if p.annotation is inspect.Parameter.empty]
        assert not untyped, f"{name}.{n}: parameters without type hints: {untyped}"
        if inspect.isfunction(obj):
            assert sig.return_annotation is not inspect.Signature.empty, f"{name}.{n} has no return type"


def test_wage_torch_all_is_what_the_docs_name() -> None:
    """``wage_torch.__all__`` lists the documented API (README and docs/torch-backends.md), each name once."""
    import wage_torch

    root = Path(__file__).resolve().parents[1]
    docs = (root / "README.md").read_text() + (root / "docs" / "torch-backends.md").read_text()
    assert len(set(wage_torch.__all__)) == len(wage_torch.__all__)
    assert [n for n in wage_torch.__all__ if not re.search(rf"`(wage_torch\.)?{n}\b", docs)] == []
