"""wage_jax against the torch reference (wage_torch on qtorch's CPU kernel), bit for bit, on the corpus.

Every function of wage_jax's quantizer API, eagerly and under ``jax.jit``, on the fixed corpus of
``wage_parity.corpus`` (every tie of every format from 2 to 16 bits with both neighbouring floats,
±0, subnormals, values far beyond the range, all-zero tensors, random tensors of many scales):

* ``fixed_point_quantize`` against ``qtorch.quant.fixed_point_quantize`` and
  ``fixed_point_quantize_with_mask`` against qtorch's ``fixed_point_quantize_{nearest,stochastic}_mask``:
  every clamp/symmetric combination, ``fl = wl - 1`` for ``wl`` 2..16 and four other formats up to 24 bits;
* ``shift``, ``C`` (bits 1..20, 24, 31), ``QW`` (layer scales 1 and 3 for every width; 1, 2, 4, 8, 3 and
  more for widths 2, 4, 8, 16), ``QG`` (lr 8 and 0.1 for every width; 8, 1, 1/8, 0.1 for widths 2, 8, 16;
  lr as a float32 array, traced under jit);
* ``wage_quantize``'s output and input gradient (``jax.vjp``) against ``WAGEQuantizer``'s forward and
  backward with the same upstream gradient: every width with itself and with -1, unequal pairs, mixed modes.

Stochastic rounding uses torch's own draws (see ``wage_parity.cases``). The comparisons live in
``wage_parity.cases``, shared with ``python -m wage_parity.report``.
"""

from __future__ import annotations

import pytest

from wage_parity.cases import FUNCTIONS, MODES, Case, cases
from wage_parity.torch_backend import torch_backend_device_parity

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _params(function: str) -> list:
    # Both modes of a case run one after the other (the torch reference is computed once per case).
    return [
        pytest.param(case, mode, id=f"{case.label}-{mode}".replace(" ", "_"))
        for case in cases(function)
        for mode in MODES
    ]


def _check(case: Case, mode: str) -> None:
    diffs = case.compare(mode)
    assert sum(d.compared for _, d in diffs) > 0 or all(c.name.startswith("empty") for c in case.calls)
    failures = [d.describe(f"{case.id} {mode}: {name}") for name, d in diffs if d]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(("case", "mode"), _params("fixed_point_quantize"))
def test_fixed_point_quantize(case: Case, mode: str) -> None:
    _check(case, mode)


@pytest.mark.parametrize(("case", "mode"), _params("fixed_point_quantize_with_mask"))
def test_fixed_point_quantize_with_mask(case: Case, mode: str) -> None:
    _check(case, mode)


@pytest.mark.parametrize(("case", "mode"), _params("shift"))
def test_shift(case: Case, mode: str) -> None:
    _check(case, mode)


@pytest.mark.parametrize(("case", "mode"), _params("C"))
def test_clip(case: Case, mode: str) -> None:
    _check(case, mode)


@pytest.mark.parametrize(("case", "mode"), _params("QW"))
def test_qw(case: Case, mode: str) -> None:
    _check(case, mode)


@pytest.mark.parametrize(("case", "mode"), _params("QG"))
def test_qg(case: Case, mode: str) -> None:
    _check(case, mode)


@pytest.mark.parametrize(("case", "mode"), _params("wage_quantize"))
def test_wage_quantize(case: Case, mode: str) -> None:
    _check(case, mode)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_torch_backend_matches_qtorch_on_the_corpus(function: str) -> None:
    """wage_torch's torch backend (``wage_torch.torch_kernels``) against qtorch's CPU kernel: the torch
    reference of every case of ``function`` re-run on the torch backend, 0 differing elements (the third
    leg of the triangle: wage_jax = qtorch is checked above)."""
    counts = torch_backend_device_parity("cpu", functions=[function])
    assert counts == {function: 0}
