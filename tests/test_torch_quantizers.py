"""``wage_torch``'s ``shift``, ``C``, ``QW`` and ``QG`` against the independent NumPy model of contract §1-§2.

Every comparison is bit for bit on the float32 pattern (``.view(np.int32)``), so the sign of zero
counts. Hand-derived literals pin the model itself to the contract's text where the rule is subtle.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import wage_torch as wt
from wage_parity import spec_model as spec
from wage_parity.spec_model import assert_same_bits
from wage_parity.testing import f32_tensor

F32 = np.float32
UP, DOWN = F32(np.inf), F32(-np.inf)


def tie_inputs(bits: int, span: float = 3.0, max_count: int | None = None, seed: int = 0) -> np.ndarray:
    """Every grid point and rounding tie of ``fl = bits - 1`` in ``[-span, span]``, and one ulp either side.

    For wide words (``max_count`` set), a random subset of the ties plus those next to 0 and ±1.
    """
    fl = bits - 1
    n = int(span * 2**fl)
    k = np.arange(-n, n + 1, dtype=np.float64)
    if max_count is not None and k.size > max_count:
        rng = np.random.default_rng(seed)
        edges = np.concatenate([np.arange(-40, 41), 2**fl + np.arange(-40, 41), -(2**fl) + np.arange(-40, 41)])
        k = np.unique(np.concatenate([rng.choice(k, max_count, replace=False), edges.astype(np.float64)]))
    exact = (k + 0.5) * 2.0**-fl
    ties = exact.astype(F32)
    ties = ties[ties.astype(np.float64) == exact]  # a 24-bit word's ties beyond ±1 need a 25th bit: dropped
    grid = (k * 2.0**-fl).astype(F32)
    return np.concatenate([ties, np.nextafter(ties, UP), np.nextafter(ties, DOWN), grid, -grid])


SPECIALS = np.array(
    [
        0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 1e30, -1e30,
        np.finfo(F32).max, -np.finfo(F32).max, np.finfo(F32).tiny, -np.finfo(F32).tiny,
        np.finfo(F32).smallest_subnormal, -np.finfo(F32).smallest_subnormal, 3e-39, -3e-39,
        2.0**-30, -(2.0**-30), np.inf, -np.inf,
    ],
    dtype=F32,
)  # fmt: skip


# --------------------------------------------------------------------------- hand-derived literals
@pytest.mark.parametrize(
    ("x", "bits", "want"),
    [
        (0.3, 2, 0.5),  # y = 0.6, s = 1.1, nearbyint(0.6) = 1
        (0.25, 2, 0.0),  # y = 0.5: a tie, to even 0
        (-0.25, 2, -0.0),  # y = -0.5: nearbyint(-0.5) = -0.0
        (0.75, 2, 0.5),  # y = 1.5 -> 2 (even) -> 1.0, clamped to t_max = 0.5
        (-0.75, 2, -0.5),  # symmetric: t_min = -0.5
        (0.375, 3, 0.5),  # fl = 2: y = 1.5 -> 2
        (0.625, 3, 0.5),  # y = 2.5 -> 2
        (-(2.0**-9), 8, -0.0),  # y = -0.25, s = 0.25, nearbyint(-0.25) = -0.0
        (-(2.0**-30), 8, -0.0),  # y = -2^-23: s = 0.5 - 2^-23 (exact), nearbyint(-2^-23) = -0.0
        (-(2.0**-40), 8, 0.0),  # y = -2^-33: s = float32(0.5 - 2^-33) = 0.5, nearbyint(0.0) = +0.0
        (5.0, 8, 1 - 2.0**-7),
        (-5.0, 8, -1 + 2.0**-7),
    ],
)
def test_qw_hand_derived(x: float, bits: int, want: float) -> None:
    """Literal results derived by hand from contract §1, for the model and for wage_torch."""
    expected = np.array([want], dtype=F32)
    assert_same_bits(spec.QW(np.array([x], F32), bits), expected)
    assert_same_bits(wt.QW(f32_tensor(np.array([x])), bits), expected)


def test_float32_addition_comes_first() -> None:
    """Where ``float32(y + 0.5)`` rounds (``y`` odd above 2^23), the kernel differs from ``round(y)``.

    ``QG`` with ``lr = 2^24`` and ``max|x| = 1`` makes ``y = 2^24 * x`` an integer in ``[2^23, 2^24)``.
    For odd ``y``, ``y + 0.5`` is a float32 tie that goes to the even ``y + 1``: the result is ``y + 1``.
    """
    y = np.arange(2**23, 2**23 + 64, dtype=np.float64)
    x = np.concatenate([[1.0], y / 2**24]).astype(F32)
    out = wt.QG(f32_tensor(x), 8, lr=2.0**24).numpy()
    want_y = np.where(y % 2 == 1, y + 1, y)
    # shift(x) = x; the factor is 2^24 / 2^7 and FP scales by 2^7 again: y = 2^24 x; the output is q / 2^7
    want = (np.concatenate([[2.0**24], want_y]) / 2**7).astype(F32)
    assert_same_bits(out, want)
    assert_same_bits(spec.QG(x, 8, 2.0**24), want)
    naive = (np.rint(np.concatenate([[2.0**24], y])) / 2**7).astype(F32)
    assert np.any(naive != want)  # the inputs do exercise the rule


def test_shift_subnormal_rounding_literal() -> None:
    """``shift`` rounds a subnormal quotient once, to nearest even: ``{3,5,7} * 2^-149 / 2``."""
    d = 2.0**-149
    x = np.array([2.0, 3 * d, 5 * d, 7 * d, -3 * d, d], dtype=F32)
    want = np.array([1.0, 2 * d, 2 * d, 4 * d, -2 * d, 0.0], dtype=F32)
    assert_same_bits(spec.shift(x), want)
    assert_same_bits(wt.shift(f32_tensor(x)), want)


# --------------------------------------------------------------------------- QW = FP(clamp, symmetric)
@pytest.mark.parametrize("bits", range(2, 17))
def test_qw_ties_every_width(bits: int) -> None:
    x = tie_inputs(bits)
    assert_same_bits(wt.QW(f32_tensor(x), bits), spec.QW(x, bits))


@pytest.mark.parametrize("bits", range(17, 25))
def test_qw_ties_wide_words(bits: int) -> None:
    x = tie_inputs(bits, span=1.5, max_count=20000, seed=bits)
    assert_same_bits(wt.QW(f32_tensor(x), bits), spec.QW(x, bits))


@pytest.mark.parametrize("bits", [2, 3, 8, 12, 16, 24])
def test_qw_special_values(bits: int) -> None:
    """±0, beyond the range, subnormal, near float32 max, ±inf (clamped to the bounds)."""
    out = wt.QW(f32_tensor(SPECIALS), bits)
    assert_same_bits(out, spec.QW(SPECIALS, bits))
    lim = F32(1 - 2.0 ** -(bits - 1))
    assert out[-2] == lim and out[-1] == -lim
    assert np.all(np.abs(out.numpy()) <= lim)


def test_qw_nan_passes_through() -> None:
    x = np.array([np.nan, 0.3], dtype=F32)
    out = wt.QW(f32_tensor(x), 8).numpy()
    assert np.isnan(out[0]) and out[1] == spec.QW(x, 8)[1]


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.8, float(np.nextafter(1.8, 2.0)), 2.0, 4.0, 3.0, 1.9, 3.3, 2.0**20])
def test_qw_scale(scale: float) -> None:
    """Divided by ``scale`` only when ``scale > 1.8``."""
    x = tie_inputs(4, span=1.5)
    out = wt.QW(f32_tensor(x), 4, scale=scale)
    assert_same_bits(out, spec.QW(x, 4, scale))
    plain = spec.QW(x, 4)
    if scale <= 1.8:
        assert_same_bits(out, plain)
    elif math.frexp(scale)[0] == 0.5:  # a power of two: the division is exact
        assert np.array_equal(out.numpy().astype(np.float64) * scale, plain.astype(np.float64))


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.tensor(0.3),
        lambda: torch.tensor(-7.5),
        lambda: torch.linspace(-2, 2, 257),
        lambda: torch.linspace(-2, 2, 24 * 7).reshape(24, 7),
        lambda: torch.linspace(-2, 2, 2 * 3 * 5 * 4).reshape(2, 3, 5, 4),
        lambda: torch.linspace(-2, 2, 24 * 7).reshape(24, 7).t(),
        lambda: torch.linspace(-2, 2, 24 * 7).reshape(24, 7)[::3, 1::2],
        lambda: torch.linspace(-2, 2, 2 * 3 * 5 * 4).reshape(2, 3, 5, 4).permute(3, 1, 0, 2),
        lambda: torch.empty(0),
        lambda: torch.empty(3, 0),
    ],
)
def test_shapes_and_views(make) -> None:  # noqa: ANN001
    x = make()
    xn = x.numpy()
    for bits in (2, 5, 8):
        out = wt.QW(x, bits)
        assert out.shape == x.shape
        assert_same_bits(out, spec.QW(xn, bits))
        assert_same_bits(wt.C(x, bits), spec.C(xn, bits))
        assert_same_bits(wt.QG(x, bits, 8.0), spec.QG(xn, bits, 8.0))
    assert_same_bits(wt.shift(x), spec.shift(xn))


# --------------------------------------------------------------------------- C
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8, 15, 16, 17, 24, 30, 100])
def test_clip(bits: int) -> None:
    d = 0.0 if bits > 15 or bits == 1 else 2.0 ** -(bits - 1)
    edges = np.array([1 - d, -1 + d, 1.0, -1.0], dtype=F32)
    x = np.concatenate([SPECIALS, edges, np.nextafter(edges, UP), np.nextafter(edges, DOWN), [np.nan]]).astype(F32)
    out = wt.C(f32_tensor(x), bits)
    assert_same_bits(out, spec.C(x, bits))
    finite = out.numpy()[~np.isnan(x)]
    assert finite.max() == F32(1 - d) and finite.min() == F32(-1 + d)


# --------------------------------------------------------------------------- shift
def test_shift_around_every_power_of_two() -> None:
    """``max|x|`` at, just below and just above ``2^k`` for every float32 power of two."""
    for k in range(-149, 128):
        p = F32(2.0**k)
        for m in (p, np.nextafter(p, UP), np.nextafter(p, F32(0))):
            if m == 0 or not np.isfinite(m):
                continue
            for sign in (1, -1):
                x = np.array([sign * m, m / 3, -m / 7, m * 0.75, np.finfo(F32).smallest_subnormal], F32)
                out = wt.shift(f32_tensor(x))
                assert_same_bits(out, spec.shift(x))
                top = np.abs(out.numpy()).max()
                assert 0.5 < top <= 1.0, (k, m, top)  # contract: max|shift(x)| <= 1, and the smallest such 2^k
                assert (top == 1.0) == (math.frexp(float(m))[0] == 0.5)  # 1 exactly iff max|x| is 2^k


def test_shift_keeps_tiny_and_huge() -> None:
    for x in (
        np.array([np.finfo(F32).max, -1.0, 1e-45], F32),
        np.array([1e-45, -3e-45], F32),
        np.array([2.0**-126, 2.0**-140], F32),
        np.array([1.0000001, 0.5], F32),
        np.array([-0.0, 2.0**100, 1e-30], F32),
    ):
        assert_same_bits(wt.shift(f32_tensor(x)), spec.shift(x))


@pytest.mark.parametrize("x", [np.zeros(5, F32), np.array([-0.0, 0.0, -0.0], F32), np.zeros((2, 3, 0), F32)])
def test_shift_all_zero_and_empty(x: np.ndarray) -> None:
    out = wt.shift(f32_tensor(x))
    assert_same_bits(out, x)  # unchanged, the sign of zero included; no NaN
    assert_same_bits(wt.QG(f32_tensor(x), 8, 8.0), spec.QG(x, 8, 8.0))
    assert not torch.isnan(wt.QG(f32_tensor(x), 8, 8.0)).any()


# --------------------------------------------------------------------------- QG = FP(unclamped) of the scaled shift
@pytest.mark.parametrize("bits", range(2, 17))
@pytest.mark.parametrize("lr", [8.0, 1.0, 0.125, 1e-3, -2.0, 0.0, 1000.0])
def test_qg_matches_model(bits: int, lr: float) -> None:
    rng = np.random.default_rng(bits)
    x = np.concatenate([tie_inputs(min(bits, 8), span=1.0), rng.standard_normal(200) * 10.0 ** rng.uniform(-40, 30)])
    x = x.astype(F32)
    assert_same_bits(wt.QG(f32_tensor(x), bits, lr), spec.QG(x, bits, lr))


def test_qg_gradients_of_extreme_magnitude() -> None:
    for scale in (1e-44, 1e-38, 1e-20, 1.0, 1e20, 3e38):
        x = (np.linspace(-1, 1, 101) * scale).astype(F32)
        for bits in (2, 8, 16, 24):
            assert_same_bits(wt.QG(f32_tensor(x), bits, 8.0), spec.QG(x, bits, 8.0))


@pytest.mark.parametrize("lr", [8.1, 0.7, 3.3])
@pytest.mark.parametrize("bits", [2, 8])
def test_qg_factor_is_rounded_to_float32_before_the_product(lr: float, bits: int) -> None:
    """contract §2: ``lr / 2^(bits_G-1)`` in double, then a float32 product (torch multiplies by ``float32(norm)``).

    Inputs near the rounding ties where a double product rounded once would round the other way.
    """
    norm = lr / 2.0 ** (bits - 1)
    found = []
    for k in range(-12, 12):
        c = F32((k + 0.5) / lr)
        cand = (c + np.arange(-3000, 3000) * np.spacing(c)).astype(F32)
        cand = cand[np.abs(cand) < 1]
        in_f32 = (F32(norm) * cand).astype(F32)
        in_f64 = (norm * cand.astype(np.float64)).astype(F32)
        a, _ = spec.fixed_point(in_f32, bits, bits - 1, clamp=False, symmetric=True)
        b, _ = spec.fixed_point(in_f64, bits, bits - 1, clamp=False, symmetric=True)
        found.append(cand[a != b])
    x = np.concatenate([[1.0], *found]).astype(F32)  # max|x| = 1: shift(x) = x
    assert x.size > 1
    want = spec.QG(x, bits, lr)
    assert_same_bits(wt.QG(f32_tensor(x), bits, lr), want)
    assert np.any(
        want[1:] != spec.fixed_point((norm * x.astype(np.float64)).astype(F32), bits, bits - 1, False, True)[0][1:]
    )


# --------------------------------------------------------------------------- stochastic rounding
@pytest.mark.parametrize("bits", [2, 4, 8, 16])
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_stochastic_exact_given_the_draws(bits: int, seed: int) -> None:
    """qtorch draws ``r = torch.rand_like(x)`` after the seed: the same draws reproduce it exactly."""
    base = np.concatenate([tie_inputs(min(bits, 6), span=1.5), SPECIALS[np.isfinite(SPECIALS)]]).astype(F32)
    x = torch.from_numpy(base).reshape(-1)
    for shape in ((base.size,), (1, base.size)):
        xs = x.reshape(shape)
        torch.manual_seed(seed)
        out = wt.QW(xs, bits, mode="stochastic")
        torch.manual_seed(seed)
        r = torch.rand(shape).numpy()
        assert_same_bits(out, spec.QW(xs.numpy(), bits, r=r))

        torch.manual_seed(seed)
        out = wt.QG(xs, bits, 8.0, mode="stochastic")
        torch.manual_seed(seed)
        r = torch.rand(shape).numpy()
        assert_same_bits(out, spec.QG(xs.numpy(), bits, 8.0, r=r))


def test_stochastic_non_contiguous_input() -> None:
    x = torch.linspace(-1.3, 1.3, 11 * 13).reshape(11, 13).t()
    torch.manual_seed(7)
    out = wt.QW(x, 3, scale=4.0, mode="stochastic")
    torch.manual_seed(7)
    r = torch.rand_like(x.contiguous()).numpy()
    assert_same_bits(out, spec.QW(x.numpy(), 3, 4.0, r=r))


@pytest.mark.parametrize("bits", [2, 3, 8])
def test_stochastic_is_unbiased_and_brackets(bits: int) -> None:
    """Inside the range ``E[FP(x)] = x``; each draw is one of the two neighbouring grid points."""
    fl = bits - 1
    delta = 2.0**-fl
    lim = 1 - delta
    rng = np.random.default_rng(bits)
    vals = np.concatenate([rng.uniform(-lim, lim, 60), [0.0, delta / 3, -delta / 3, lim - delta / 5]]).astype(F32)
    n = 4000
    x = torch.from_numpy(np.broadcast_to(vals, (n, vals.size)).copy())
    torch.manual_seed(bits)
    out = wt.QW(x, bits, mode="stochastic").numpy().astype(np.float64)
    v = vals.astype(np.float64)
    lo = np.floor(v / delta) * delta
    assert np.all((out == lo) | (out == lo + delta))
    p = (v - lo) / delta
    se = delta * np.sqrt(p * (1 - p) / n)
    err = np.abs(out.mean(axis=0) - v)
    assert np.all(err <= 6 * se + 1e-6 * delta), (err / np.maximum(se, 1e-30)).max()
    # and it is not nearest rounding in disguise: some element took both neighbours
    assert np.any(out.min(axis=0) != out.max(axis=0))


def test_qg_stochastic_is_unbiased() -> None:
    """``E[QG(x)] = (lr / 2^(bits-1)) * shift(x)`` (no clamp)."""
    bits, lr, n = 4, 8.0, 4000
    g = np.array([3.0, -1.7, 0.4, 0.01, -2.2, 1.1], F32)
    x = torch.from_numpy(np.broadcast_to(g, (n, g.size)).copy())
    torch.manual_seed(3)
    out = wt.QG(x, bits, lr, mode="stochastic").numpy().astype(np.float64)
    target = lr / 2 ** (bits - 1) * g.astype(np.float64) / 4.0  # max|g| = 3 -> 2^2
    delta = 2.0 ** -(bits - 1)
    p = target / delta - np.floor(target / delta)
    se = delta * np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(out.mean(axis=0) - target) <= 6 * se + 1e-6)


# --------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtype_round_trip(dtype: torch.dtype) -> None:
    """Inputs of other float dtypes are computed in float32 and returned in their own dtype."""
    x = torch.linspace(-1.7, 1.7, 301, dtype=torch.float64).to(dtype)
    x32 = x.to(torch.float32).numpy()

    def check(out: torch.Tensor, want: np.ndarray) -> None:
        assert out.dtype == dtype and out.shape == x.shape
        assert_same_bits(out.to(torch.float32), torch.from_numpy(want).to(dtype).to(torch.float32).numpy())

    for bits in (2, 4, 8):
        check(wt.QW(x, bits), spec.QW(x32, bits))
        check(wt.QW(x, bits, scale=4.0), spec.QW(x32, bits, 4.0))
        check(wt.QG(x, bits, 8.0), spec.QG(x32, bits, 8.0))
        check(wt.C(x, bits), spec.C(x32, bits))
        # a word of <= 8 bits is exact in every float dtype: no second rounding on the way back
        assert_same_bits(wt.QW(x, bits).to(torch.float32), spec.QW(x32, bits))
    check(wt.shift(x), spec.shift(x32))
    torch.manual_seed(5)
    out = wt.QW(x, 3, mode="stochastic")
    torch.manual_seed(5)
    check(out, spec.QW(x32, 3, r=torch.rand(x.shape).numpy()))


def test_float64_input_is_rounded_to_float32_first() -> None:
    """A float64 just above a float32 tie rounds to the tie in float32 and then to even."""
    tie = 0.25  # bits=2: y = 0.5 -> 0
    x = torch.tensor([tie + 2.0**-40, -tie - 2.0**-40], dtype=torch.float64)
    out = wt.QW(x, 2)
    assert out.dtype == torch.float64
    assert np.array_equal(np.signbit(out.numpy()), [False, True]) and np.all(out.numpy() == 0.0)


# --------------------------------------------------------------------------- property tests
float32_arrays = hnp.arrays(
    F32,
    hnp.array_shapes(min_dims=0, max_dims=3, max_side=9),
    elements=st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True),
)
finite_arrays = hnp.arrays(
    F32,
    hnp.array_shapes(min_dims=0, max_dims=3, max_side=9),
    elements=st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True),
)


@settings(max_examples=150, deadline=None)
@given(x=float32_arrays, bits=st.integers(2, 24), clip_bits=st.integers(1, 40))
def test_property_qw_and_c(x: np.ndarray, bits: int, clip_bits: int) -> None:
    assert_same_bits(wt.QW(f32_tensor(x), bits), spec.QW(x, bits))
    assert_same_bits(wt.C(f32_tensor(x), clip_bits), spec.C(x, clip_bits))


@settings(max_examples=150, deadline=None)
@given(
    x=finite_arrays,
    bits=st.integers(2, 24),
    lr=st.floats(-1e4, 1e4, allow_nan=False) | st.sampled_from([8.0, 1.0, 0.125]),
)
def test_property_shift_and_qg(x: np.ndarray, bits: int, lr: float) -> None:
    s = wt.shift(f32_tensor(x))
    assert_same_bits(s, spec.shift(x))
    if x.size and np.any(x != 0):
        assert 0.5 < np.abs(s.numpy()).max() <= 1.0
    assert_same_bits(wt.QG(f32_tensor(x), bits, lr), spec.QG(x, bits, lr))


@settings(max_examples=60, deadline=None)
@given(x=finite_arrays, bits=st.integers(2, 24), seed=st.integers(0, 2**31 - 1))
def test_property_stochastic(x: np.ndarray, bits: int, seed: int) -> None:
    torch.manual_seed(seed)
    out = wt.QW(f32_tensor(x), bits, mode="stochastic")
    torch.manual_seed(seed)
    r = torch.rand(x.shape).numpy()
    assert_same_bits(out, spec.QW(x, bits, r=r))


@pytest.mark.parametrize("backend", ["torch", "qtorch"])
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_qw_backward_is_the_identity_on_both_backends_as_in_jax(backend, scale):
    """Issue 29 / docs/contract.md §2: QW's backward is straight-through, on qtorch's kernel (no autograd of its
    own) and on the pure-torch one (whose rounding alone would give a zero gradient), as ``wage_jax.QW``'s."""
    import jax
    import jax.numpy as jnp

    import wage_jax
    from wage_torch.backend import get_backend, set_backend

    previous = get_backend()
    try:
        if set_backend(backend) != backend:
            pytest.skip(f"{backend} backend unavailable")
        values = [0.3, -0.8, 0.1, 0.7]
        cotangent = [1.0, -2.0, 0.5, 3.0]
        w = torch.tensor(values, requires_grad=True)
        y = wt.QW(w, 2, scale)
        (y * torch.tensor(cotangent)).sum().backward()
        jax_grad = jax.grad(lambda v: (wage_jax.QW(v, 2, scale) * jnp.asarray(cotangent)).sum())(jnp.asarray(values))
        np.testing.assert_array_equal(w.grad.numpy(), np.asarray(jax_grad))
        np.testing.assert_array_equal(w.grad.numpy(), np.float32(cotangent))
        np.testing.assert_array_equal(y.detach().numpy(), wt.QW(w.detach(), 2, scale).numpy())  # same values
        with torch.no_grad():
            assert not wt.QW(w, 2, scale).requires_grad  # no graph where none is asked for
    finally:
        set_backend(previous)
