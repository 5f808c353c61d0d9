"""Property-based parity: Hypothesis draws float32 tensors and arguments, wage_jax must match torch bit for bit.

Besides the fixed corpus (``test_quantizer_parity``), arbitrary float32 inputs: any finite value,
subnormals, ±0, ±max, values near the fixed-point grid, and arguments drawn from their whole valid
range (bit widths, formats, layer scales, learning rates). Tensors have one fixed shape (eager jax
compiles each operation once per shape) and every example runs eagerly and under ``jax.jit``.
Stochastic rounding uses torch's reproduced draws (``torch_draws``). ``WAGE_PARITY_EXAMPLES=N`` in the
environment runs N times as many examples.
"""

from __future__ import annotations

import os
from functools import partial

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from qtorch.quant import fixed_point_quantize as qtorch_fixed_point_quantize
from qtorch.quant.quant_function import quant_cpu

import wage_jax as wj
import wage_torch as wt
from wage_parity.bits import assert_bits_equal, torch_draws
from wage_parity.corpus import F32, MAX, SUB, TINY
from wage_parity.testing import f32_tensor

pytestmark = pytest.mark.usefixtures("torch_single_thread")

SHAPE = (24,)
# Every example compiles its jitted call anew (its static arguments differ): the counts are modest.
# WAGE_PARITY_EXAMPLES=N multiplies them by N for a deeper search.
_SCALE = max(1, int(os.environ.get("WAGE_PARITY_EXAMPLES", "1")))
PROPERTY = settings(max_examples=25 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(PROPERTY, max_examples=12 * _SCALE)

_SPECIALS = [0.0, -0.0, SUB, -SUB, TINY, -TINY, TINY - SUB, MAX, -MAX, 1.0, -1.0, 0.5, -0.5, 3e38, -3e38]


@st.composite
def _near_grid(draw, fl: int = 7) -> np.float32:
    """A tie or grid point of ``2^-fl`` steps, or one of its float32 neighbours (up to 2 steps away)."""
    k = draw(st.integers(-(2**16), 2**16))
    v = F32((k + draw(st.sampled_from([0.0, 0.5]))) * 2.0 ** -draw(st.integers(fl - 3, fl + 3)))
    for _ in range(draw(st.integers(0, 2))):
        v = np.nextafter(v, F32(draw(st.sampled_from([np.inf, -np.inf]))))
    return v


_ELEMENTS = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True),
    st.floats(-4.0, 4.0, width=32),
    st.sampled_from(_SPECIALS).map(F32),
    _near_grid(),
)
_TENSORS = hnp.arrays(np.float32, SHAPE, elements=_ELEMENTS)
_BITS = st.integers(2, 16)
_BITS_OR_FULL = st.sampled_from([-1, *range(2, 17)])
_MODES = st.sampled_from(["nearest", "stochastic"])


def _both(fn, *args) -> list[np.ndarray]:
    """``fn(*args)`` eagerly and under ``jax.jit`` (``fn`` takes arrays only), as lists of NumPy arrays."""
    out = []
    for f in (fn, jax.jit(fn)):
        res = f(*args)
        out.append([np.asarray(r) for r in (res if isinstance(res, tuple) else (res,))])
    return out


@PROPERTY
@given(
    x=_TENSORS,
    wl=_BITS,
    fl_offset=st.integers(-6, 6),
    clamp=st.booleans(),
    symmetric=st.booleans(),
    rounding=_MODES,
    seed=st.integers(0, 2**31 - 1),
)
def test_fixed_point_quantize_and_mask(x, wl, fl_offset, clamp, symmetric, rounding, seed):
    fl = wl - 1 + fl_offset
    noise = torch_draws(seed, f32_tensor(x))[0] if rounding == "stochastic" else None
    torch.manual_seed(seed)
    ref = qtorch_fixed_point_quantize(f32_tensor(x), wl, fl, clamp=clamp, symmetric=symmetric, rounding=rounding)
    torch.manual_seed(seed)
    ref_out, ref_mask = getattr(quant_cpu, f"fixed_point_quantize_{rounding}_mask")(f32_tensor(x), wl, fl, symmetric)

    def fn(x, noise):
        q = wj.fixed_point_quantize(x, wl, fl, clamp=clamp, symmetric=symmetric, rounding=rounding, noise=noise)
        out, mask = wj.fixed_point_quantize_with_mask(x, wl, fl, symmetric=symmetric, rounding=rounding, noise=noise)
        return q, out, mask

    for mode, (q, out, mask) in zip(("eager", "jit"), _both(fn, x, noise), strict=True):
        assert_bits_equal(q, ref, f"fixed_point_quantize {mode}")
        assert_bits_equal(out, ref_out, f"fixed_point_quantize_with_mask {mode}")
        assert_bits_equal(mask, ref_mask.numpy().astype(bool), f"mask {mode}")


@PROPERTY
@given(x=_TENSORS, exponent=st.integers(-160, 160))
def test_shift(x, exponent):
    with np.errstate(over="ignore", under="ignore"):
        x = (x.astype(np.float64) * 2.0**exponent).astype(F32)
    x = np.where(np.isfinite(x), x, F32(1.0))
    ref = wt.shift(f32_tensor(x))
    for mode, (out,) in zip(("eager", "jit"), _both(wj.shift, x), strict=True):
        assert_bits_equal(out, ref, f"shift {mode}")


@PROPERTY
@given(x=_TENSORS, bits=st.integers(1, 40))
def test_clip(x, bits):
    ref = wt.C(f32_tensor(x), bits)
    for mode, (out,) in zip(("eager", "jit"), _both(partial(_clip, bits=bits), x), strict=True):
        assert_bits_equal(out, ref, f"C {mode}")


def _clip(x, *, bits):
    return wj.C(x, bits)


@PROPERTY
@given(
    x=_TENSORS,
    bits=_BITS,
    scale=st.one_of(st.sampled_from([1.0, 2.0, 4.0, 8.0, 3.0, 2.0**30]), st.floats(1e-3, 1e6)),
    mode=_MODES,
    seed=st.integers(0, 2**31 - 1),
)
def test_qw(x, bits, scale, mode, seed):
    noise = torch_draws(seed, f32_tensor(x))[0] if mode == "stochastic" else None
    torch.manual_seed(seed)
    ref = wt.QW(f32_tensor(x), bits, scale, mode)
    fn = lambda x, noise: wj.QW(x, bits, scale, mode, noise=noise)  # noqa: E731
    for m, (out,) in zip(("eager", "jit"), _both(fn, x, noise), strict=True):
        assert_bits_equal(out, ref, f"QW {m}")


@FEW
@given(
    x=_TENSORS,
    exponent=st.integers(-130, 100),
    bits=_BITS,
    lr=st.one_of(st.sampled_from([8.0, 1.0, 0.125, 0.1]), st.floats(2.0**-60, 64.0)),  # wage_jax: lr in (0, 2^24]
    mode=_MODES,
    seed=st.integers(0, 2**31 - 1),
)
def test_qg(x, exponent, bits, lr, mode, seed):
    with np.errstate(over="ignore", under="ignore"):
        x = (x.astype(np.float64) * 2.0**exponent).astype(F32)
    x = np.where(np.isfinite(x), x, F32(1.0))
    noise = torch_draws(seed, f32_tensor(x))[0] if mode == "stochastic" else None
    torch.manual_seed(seed)
    ref = wt.QG(f32_tensor(x), bits, lr, mode)
    static = lambda x, noise: wj.QG(x, bits, lr, mode, noise=noise)  # noqa: E731
    for m, (out,) in zip(("eager", "jit"), _both(static, x, noise), strict=True):
        assert_bits_equal(out, ref, f"QG {m}")
    # lr as a float32 array (traced under jit): the same update whenever float32(lr) / 2^(bits-1) is
    # float32(lr / 2^(bits-1)), i.e. unless that factor is subnormal.
    if abs(lr) / 2.0 ** (bits - 1) >= float(TINY) or lr == 0:
        traced = lambda x, noise, lr: wj.QG(x, bits, lr, mode, noise=noise)  # noqa: E731
        for m, (out,) in zip(("eager", "jit"), _both(traced, x, noise, jnp.float32(lr)), strict=True):
            assert_bits_equal(out, ref, f"QG with an lr array {m}")


@FEW
@given(
    x=_TENSORS,
    g=_TENSORS,
    g_exponent=st.integers(-120, 100),
    bits_A=_BITS_OR_FULL,
    bits_E=_BITS_OR_FULL,
    A_mode=_MODES,
    E_mode=_MODES,
    seed=st.integers(0, 2**31 - 1),
)
def test_wage_quantize(x, g, g_exponent, bits_A, bits_E, A_mode, E_mode, seed):
    with np.errstate(over="ignore", under="ignore"):
        g = (g.astype(np.float64) * 2.0**g_exponent).astype(F32)
    g = np.where(np.isfinite(g), g, F32(1.0))
    needs_A = A_mode == "stochastic" and bits_A != -1
    needs_E = E_mode == "stochastic" and bits_E != -1
    torch.manual_seed(seed)
    noise_A = torch.rand_like(f32_tensor(x)).numpy() if needs_A else None
    noise_E = torch.rand_like(f32_tensor(g)).numpy() if needs_E else None
    xt = f32_tensor(x).requires_grad_()
    torch.manual_seed(seed)
    y = wt.WAGEQuantizer(bits_A, bits_E, A_mode, E_mode)(xt)
    y.backward(f32_tensor(g))

    def fn(x, g, noise_A, noise_E):
        def quantize(v):
            return wj.wage_quantize(v, bits_A, bits_E, A_mode, E_mode, noise_A=noise_A, noise_E=noise_E)

        out, vjp = jax.vjp(quantize, x)
        return out, vjp(g)[0]

    for m, (out, grad) in zip(("eager", "jit"), _both(fn, x, g, noise_A, noise_E), strict=True):
        assert_bits_equal(out, y, f"wage_quantize output {m}")
        assert_bits_equal(grad, xt.grad, f"wage_quantize input gradient {m}")
