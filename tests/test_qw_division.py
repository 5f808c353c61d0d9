"""``QW``'s layer scale: a power of two never divides, and every scale gives the contract's bits.

The contract (docs/contract.md §2) divides ``QW``'s quantized weights by ``float32(scale)`` when ``scale > 1.8``,
correctly rounded. XLA:GPU compiles float32 division to PTX ``div.full`` (approximate, within 2 ulp), and
torch's CUDA kernels replace division by a Python number with multiplication by its rounded reciprocal; a
multiplication by the exact reciprocal of a power of two is correctly rounded everywhere. So both packages
multiply for powers of two (checked on the compiled HLO and on the torch operations called) and keep a true
division, correctly rounded on the CPU, only for other scales. Values are checked over the parity corpus's
``QW`` inputs (``wage_parity.corpus.fixed_point_inputs``: every tie and grid point of each width, the special
values, random tensors) against the NumPy contract model and against wage_torch on qtorch.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

import wage_jax as wj
import wage_torch as wt
from wage_parity import spec_model
from wage_parity.cases import QW_OTHER_SCALES, QW_SCALES
from wage_parity.corpus import fixed_point_inputs
from wage_parity.testing import assert_bits_equal

# The corpus's scales, and powers of two around float32's limits: 2^126 (the reciprocal the smallest normal),
# 2^127 and 2^149 (subnormal reciprocals), 2^150 and 2^200 (no float32 reciprocal: every result is +-0).
SCALES = tuple(dict.fromkeys((*QW_SCALES, *QW_OTHER_SCALES, 2.0**126, 2.0**127, 2.0**149, 2.0**150, 2.0**200)))
WIDTHS = (2, 3, 4, 8, 12, 16, 24)


def _is_pow2(scale: float) -> bool:
    return np.frexp(scale)[0] == 0.5


def _qw_all_scales(x: jax.Array, bits: int) -> list[jax.Array]:
    return [wj.QW(x, bits, s) for s in SCALES]


@pytest.mark.parametrize("bits", WIDTHS)
def test_qw_matches_the_contract_model_and_qtorch_over_the_corpus(bits: int) -> None:
    x = fixed_point_inputs(bits, bits - 1, seed=bits)
    jitted = jax.jit(_qw_all_scales, static_argnums=1)(x, bits)
    for scale, out in zip(SCALES, jitted, strict=True):
        expected = spec_model.QW(x, bits, scale)
        assert_bits_equal(out, expected, f"wage_jax QW bits={bits} scale={scale:g}", nan_equal=True)
        assert_bits_equal(wt.QW(torch.from_numpy(x), bits, scale), expected,
                          f"wage_torch QW bits={bits} scale={scale:g}", nan_equal=True)


def _hlo_divides(scale: float) -> int:
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    text = jax.jit(lambda a: wj.QW(a, 8, scale)).lower(x).compile().as_text()
    return text.count(" divide(")


@pytest.mark.parametrize("scale", [s for s in SCALES if s > 1.8])
def test_the_compiled_qw_divides_only_by_a_scale_that_is_not_a_power_of_two(scale: float) -> None:
    assert _hlo_divides(scale) == (0 if _is_pow2(scale) else 1)


class _Divisions(torch.overrides.TorchFunctionMode):
    """Records every torch division whose divisor is a number or a one-element tensor (its value)."""

    def __init__(self) -> None:
        super().__init__()
        self.divisors: list[float] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("div", "div_", "true_divide", "__truediv__", "__itruediv__", "divide") and len(args) > 1:
            d = args[1]
            if (isinstance(d, torch.Tensor) and d.numel() == 1) or isinstance(d, (int, float)):
                self.divisors.append(float(d))
        return func(*args, **kwargs)


@pytest.mark.parametrize("scale", [s for s in SCALES if s > 1.8])
def test_wage_torch_qw_divides_only_by_a_scale_that_is_not_a_power_of_two(scale: float) -> None:
    x = torch.linspace(-1, 1, 64)
    with _Divisions() as seen:
        wt.QW(x, 8, scale)
    by_scale = [d for d in seen.divisors if d == float(np.float32(scale))]
    assert len(by_scale) == (0 if _is_pow2(scale) else 1), seen.divisors
