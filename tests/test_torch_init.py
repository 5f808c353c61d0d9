"""``wage_torch.wage_init_`` against contract §3, with the formula written out here independently.

``float_limit = sqrt(3 * factor / fan_in)``, ``Wm = 1.5 / 2^(bits_W - 1)``,
``scale = max(2^round(log2(Wm / float_limit)), 1)`` (NumPy's round), ``L = max(Wm, float_limit)``
(WAGE, ICLR 2018, Eq. 6-7).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wage_torch import wage_init_

SHAPES = [(10, 1024), (1024, 512), (128, 3, 3, 3), (256, 128, 3, 3), (64, 32, 1, 1)]


def spec_init(shape: tuple[int, ...], bits_W: int, factor: float) -> tuple[float, float]:
    """(L, scale) straight from contract §3; fan_in of a torch (out, in, *kernel) weight is in * prod(kernel)."""
    fan_in = shape[1]
    for k in shape[2:]:
        fan_in *= k
    float_limit = math.sqrt(3.0 * factor / fan_in)
    wm = 1.5 / 2 ** (bits_W - 1)
    scale = max(2.0 ** float(np.round(np.log2(wm / float_limit))), 1.0)
    return max(wm, float_limit), scale


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bits_W", range(2, 9))
@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_scale_and_limit(shape: tuple[int, ...], bits_W: int, factor: float) -> None:
    torch.manual_seed(bits_W)
    w = torch.empty(shape)
    scale = wage_init_(w, bits_W, factor=factor)
    L, want_scale = spec_init(shape, bits_W, factor)
    assert scale == want_scale
    assert w.weight_scale == want_scale
    # a power of two >= 1
    assert scale >= 1.0 and math.frexp(scale)[0] == 0.5
    a = w.abs()
    assert float(a.max()) <= float(np.float32(L))  # the float32 nearest L is the representable limit
    n = w.numel()
    assert float(a.max()) >= L * (1 - 20.0 / n)  # P(fail) = (1 - 20/n)^n < e^-20
    if n >= 10_000:  # fills it uniformly: mean 0, std L / sqrt(3)
        assert abs(float(w.double().mean())) < 6 * L / math.sqrt(3 * n)
        assert abs(float(w.double().std()) / (L / math.sqrt(3)) - 1) < 0.03


def test_default_factor_is_two() -> None:
    w = torch.empty(64, 100)
    assert wage_init_(w, 2) == spec_init((64, 100), 2, 2.0)[1]


def test_both_scale_regimes_are_covered() -> None:
    """The parameter grid above reaches both ``scale == 1`` and ``scale > 1``."""
    scales = {spec_init(s, b, f)[1] for s in SHAPES for b in range(2, 9) for f in (1.0, 2.0)}
    assert 1.0 in scales and any(s > 1 for s in scales) and len(scales) >= 3


def test_float64_stays_within_L_and_modules() -> None:
    torch.manual_seed(0)
    w = torch.empty(300, 400, dtype=torch.float64)
    L, scale = spec_init((300, 400), 3, 1.0)
    assert wage_init_(w, 3, factor=1.0) == scale
    assert w.dtype == torch.float64 and float(w.abs().max()) <= L
    conv = torch.nn.Conv2d(16, 32, 3, bias=False)
    s = wage_init_(conv.weight, 2, factor=1.0)
    L, want = spec_init((32, 16, 3, 3), 2, 1.0)
    assert s == want == conv.weight.weight_scale
    assert conv.weight.requires_grad and float(conv.weight.detach().abs().max()) <= float(np.float32(L))


def test_reproducible_from_torch_seed() -> None:
    a, b = torch.empty(50, 60), torch.empty(50, 60)
    torch.manual_seed(42)
    wage_init_(a, 4)
    torch.manual_seed(42)
    wage_init_(b, 4)
    assert torch.equal(a, b)
