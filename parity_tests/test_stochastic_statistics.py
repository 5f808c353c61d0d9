"""Stochastic rounding with jax's own draws (a PRNG ``key``) against torch's: statistically the same.

With different generators the two frameworks cannot agree element by element, so the comparison is
of distributions: inputs whose scaled value ``y = k + p`` lies a fraction ``p`` above a grid point
round up with probability ``p`` in both. For ``n`` elements the rounded-up frequency has standard
deviation ``sqrt(p (1 - p) / n)``; each framework must be within 5 of those of ``p`` (unbiased:
``E[FP(x)] = x``), and the two frequencies within 5 standard deviations of their difference
(``sqrt(2 p (1 - p) / n)``). Keys and seeds are fixed, so the outcome is deterministic.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from qtorch.quant import fixed_point_quantize as qtorch_fixed_point_quantize

import wage_jax as wj
import wage_torch as wt
from wage_parity.corpus import F32
from wage_parity.testing import f32_bits

pytestmark = pytest.mark.usefixtures("torch_single_thread")

N = 4000  # elements per fraction
FRACTIONS = (0.05, 0.3, 0.5, 0.7, 0.95)
K = 3  # the grid point below: y = K + p (and -(K + p))


def _values(fl: int, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """``±(k + p) * 2^-fl`` repeated ``N`` times per fraction; the group index of each element."""
    ys = [sign * (k + p) for p in FRACTIONS for sign in (1, -1)]
    x = np.repeat(np.array(ys, np.float64) * 2.0**-fl, N).astype(F32)
    return x, np.repeat(np.arange(len(ys)), N)


def _check_frequencies(y_torch: np.ndarray, y_jax: np.ndarray, x: np.ndarray, groups: np.ndarray, fl: int) -> None:
    """Each group's frequency of rounding up (to the grid point above x) in both, against p and each other."""
    step = 2.0**-fl
    for g in np.unique(groups):
        sel = groups == g
        lower = np.floor(x[sel].astype(np.float64) / step) * step
        p = float(np.mean(x[sel].astype(np.float64) / step - lower / step))
        sigma = np.sqrt(p * (1 - p) / sel.sum())
        freqs = []
        for name, y in (("torch", y_torch), ("jax", y_jax)):
            vals = y[sel].astype(np.float64)
            assert np.all((vals == lower) | (vals == lower + step)), f"{name}: rounded off the two neighbours"
            freq = float(np.mean(vals == lower + step))
            assert abs(freq - p) < 5 * sigma, f"{name}: rounds up {freq:.4f} of the time, expected {p:.4f}"
            freqs.append(freq)
        assert abs(freqs[0] - freqs[1]) < 5 * np.sqrt(2) * sigma, f"p={p:.3f}: torch {freqs[0]}, jax {freqs[1]}"


@pytest.mark.parametrize("wl", [4, 8, 12])
def test_fixed_point_quantize_key_draws(wl):
    fl = wl - 1
    x, groups = _values(fl)
    torch.manual_seed(wl)
    y_torch = qtorch_fixed_point_quantize(torch.from_numpy(x), wl, fl, True, True, "stochastic").numpy()
    key = jax.random.key(wl)
    quantize = jax.jit(lambda x, k: wj.fixed_point_quantize(x, wl, fl, symmetric=True, rounding="stochastic", key=k))
    y_jax = np.asarray(quantize(x, key))
    _check_frequencies(y_torch, y_jax, x, groups, fl)
    # Eager draws are the jitted ones.
    eager = wj.fixed_point_quantize(x, wl, fl, symmetric=True, rounding="stochastic", key=key)
    np.testing.assert_array_equal(f32_bits(eager), f32_bits(y_jax))


def test_qw_key_draws():
    x, groups = _values(7)
    torch.manual_seed(0)
    y_torch = wt.QW(torch.from_numpy(x), 8, 2.0, "stochastic").numpy() * 2
    y_jax = np.asarray(jax.jit(lambda x, k: wj.QW(x, 8, 2.0, "stochastic", key=k))(x, jax.random.key(1))) * 2
    _check_frequencies(y_torch, y_jax, x, groups, 7)


@pytest.mark.parametrize(("lr", "k"), [(8.0, K), (1.0, 0)])
def test_qg_key_draws(lr, k):
    bits = 8
    # With max|x| = 1, shift(x) = x and QG rounds lr * x to an integer (then scales by 2^-(bits-1)):
    # x = ±(k + p) / lr, led by x[0] = -1 as the maximum.
    y, groups = _values(0, k)
    x = np.concatenate([[-1.0], y.astype(np.float64) / lr]).astype(F32)
    torch.manual_seed(2)
    y_torch = wt.QG(torch.from_numpy(x), bits, lr, "stochastic").numpy()[1:] * 2 ** (bits - 1)
    y_jax = np.asarray(jax.jit(lambda x, key: wj.QG(x, bits, lr, "stochastic", key=key))(x, jax.random.key(3)))
    _check_frequencies(y_torch, y_jax[1:] * 2 ** (bits - 1), (x[1:] * F32(lr)).astype(F32), groups, 0)


def test_wage_quantize_key_draws_forward_and_backward():
    bits = 6
    x, groups = _values(bits - 1)
    # The backward rounds shift(g) = g (max|g| = 1) to bits_E = 6: the same fractions, on its grid.
    g = np.concatenate([[F32(1.0)], x[1:]]).astype(F32)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    torch.manual_seed(4)
    yt = wt.WAGEQuantizer(bits, bits, "stochastic", "stochastic")(xt)
    yt.backward(torch.from_numpy(g))

    def fwd_bwd(x, g, key):
        y, vjp = jax.vjp(lambda v: wj.wage_quantize(v, bits, bits, "stochastic", "stochastic", key=key), x)
        return y, vjp(g)[0]

    y_jax, g_jax = (np.asarray(a) for a in jax.jit(fwd_bwd)(x, g, jax.random.key(5)))
    _check_frequencies(yt.detach().numpy(), y_jax, x, groups, bits - 1)
    _check_frequencies(xt.grad.numpy()[1:], g_jax[1:], g[1:], groups[1:], bits - 1)
    # The forward and backward draws are independent: equal inputs do not round alike element by element.
    assert np.mean(y_jax[1:] == g_jax[1:]) < 0.9
