"""An independent NumPy model of the WAGE quantizers, written from ``docs/contract.md`` §1-§2 only.

Nothing here imports or copies ``wage_torch`` / ``wage_jax``: every rule is the contract's text turned
into NumPy, with Python's exact float64 arithmetic where the contract asks for exactness. The tests hold
``wage_torch`` (and may hold ``wage_jax``) to this model bit for bit, the sign of zero included.

Arrays are float32 on the way in and out (other inputs are converted with ``np.float32`` first).
Stochastic rounding takes its uniform draws ``r`` (float32, in ``[0, 1)``) as an argument: the
tests obtain them from torch's generator, exactly as qtorch's kernel draws them (docs/contract.md §1).

Paper: Wu, Li, Chen and Shi, "Training and Inference with Integers in Deep Neural Networks",
ICLR 2018 — Eq. 4 (``Clip``), Eq. 5 (``Q``), Eq. 7 (``QW``), Eq. 9 (``Shift``, ``QE``), Eq. 11-12 (``QG``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "C",
    "QG",
    "QW",
    "assert_same_bits",
    "fixed_point",
    "fixed_point_range",
    "shift",
    "wage_backward",
    "wage_forward",
]

_F32 = np.float32


def fixed_point_range(wl: int, fl: int, symmetric: bool) -> tuple[np.float32, np.float32]:
    """contract §1: ``t_min = -2^(wl-fl-1)``, ``t_max = 2^(wl-fl-1) - 2^-fl``; symmetric raises ``t_min`` by ``2^-fl``.

    Returns the two bounds as float32 scalars (computed exactly in float64, then rounded once).
    """
    t_min = -(2.0 ** (wl - fl - 1))
    t_max = 2.0 ** (wl - fl - 1) - 2.0**-fl
    if symmetric:
        t_min += 2.0**-fl
    return _F32(t_min), _F32(t_max)


def fixed_point(
    x: np.ndarray,
    wl: int,
    fl: int,
    clamp: bool,
    symmetric: bool,
    r: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``FP(x; wl, fl, clamp, symmetric, rounding)`` of contract §1 (the paper's ``Q(x, k)``, Eq. 5).

    Per element: ``y = x * 2^fl`` (float32, exact but for overflow), ``s = float32(y + r)``,
    ``q = nearbyint(double(s) - 0.5)`` (``np.rint`` is round-half-to-even in double, as C's
    ``nearbyint`` in the default rounding mode), result ``float32(q * 2^-fl)``; then, when
    ``clamp``, clamp into ``[t_min, t_max]``.

    Args:
        x: any shape, converted to float32.
        r: ``None`` for ``"nearest"`` (``r = 0.5``), else float32 draws of ``x``'s shape for ``"stochastic"``.

    Returns:
        ``(out, mask)``: the float32 result of ``x``'s shape, and a bool array that is True where the
        rounded value lay outside ``[t_min, t_max]`` (what the WAGE quantizer's backward zeroes).
        With ``clamp=False`` the mask is still reported but nothing is clamped.
    """
    x = np.asarray(x, dtype=_F32)
    rr = _F32(0.5) if r is None else np.asarray(r, dtype=_F32)
    if r is not None and rr.shape != x.shape:
        raise ValueError(f"r must have x's shape {x.shape}, got {rr.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        y = (x * _F32(2.0**fl)).astype(_F32)  # a power-of-two scaling: exact in float32 unless it overflows
        s = (y + rr).astype(_F32)  # the float32 addition comes first (docs/contract.md §1)
        q = np.rint(s.astype(np.float64) - 0.5)  # double, round half to even
        out = (q * 2.0**-fl).astype(_F32)
    t_min, t_max = fixed_point_range(wl, fl, symmetric)
    mask = (out > t_max) | (out < t_min)  # NaN compares False: never masked, passes through
    if clamp:
        out = np.where(out > t_max, t_max, np.where(out < t_min, t_min, out)).astype(_F32)
    return out, mask


def _ceil_log2(m: float) -> int:
    """``ceil(log2 m)`` exactly for a finite ``m > 0``: ``m = f * 2^e``, ``f`` in ``[0.5, 1)``."""
    f, e = math.frexp(m)
    return e - 1 if f == 0.5 else e


def shift(x: np.ndarray) -> np.ndarray:
    """contract §2 ``shift``: ``x / 2^k``, ``k = ceil(log2(max|x|))`` exactly (Eq. 9's ``Shift``).

    The quotient is formed exactly in float64 (float64 holds every float32 and every ``2^k`` here)
    and rounded once to float32, which is the correctly rounded float32 quotient, subnormal results
    included. An all-zero or empty ``x`` is returned unchanged.

    Raises:
        ValueError: ``x`` holds NaN or Inf.
    """
    x = np.asarray(x, dtype=_F32)
    if x.size == 0:
        return x.copy()
    if not np.all(np.isfinite(x)):
        raise ValueError("shift needs finite values")
    m = float(np.max(np.abs(x)))
    if m == 0.0:
        return x.copy()
    k = _ceil_log2(m)
    return (x.astype(np.float64) / 2.0**k).astype(_F32)


def C(x: np.ndarray, bits: int) -> np.ndarray:
    """contract §2 ``C`` (Eq. 4): clamp to ``[-1 + d, 1 - d]``, ``d = 2^-(bits-1)``; ``d = 0`` if ``bits > 15``
    or ``bits == 1``.

    Shape/dtype: any shape, float32 in and out.
    """
    x = np.asarray(x, dtype=_F32)
    d = 0.0 if bits > 15 or bits == 1 else 2.0 ** -(bits - 1)
    lo, hi = _F32(-1.0 + d), _F32(1.0 - d)
    return np.where(x > hi, hi, np.where(x < lo, lo, x)).astype(_F32)


def QW(x: np.ndarray, bits: int, scale: float = 1.0, r: np.ndarray | None = None) -> np.ndarray:
    """contract §2 ``QW``: ``FP(x; bits, bits-1, clamp=True, symmetric=True)``, divided by ``scale`` if ``scale > 1.8``.

    The division is float32 by ``float32(scale)`` (exact for the initializer's powers of two).
    """
    out, _ = fixed_point(x, bits, bits - 1, clamp=True, symmetric=True, r=r)
    if scale > 1.8:
        with np.errstate(over="ignore", under="ignore"):
            out = (out / _F32(scale)).astype(_F32)
    return out


def QG(x: np.ndarray, bits_G: int, lr: float, r: np.ndarray | None = None) -> np.ndarray:
    """contract §2 ``QG``: ``FP((lr / 2^(bits_G-1)) * shift(x); bits_G, bits_G-1, clamp=False, symmetric=True)``.

    The factor is formed in double, rounded to float32, and the product is float32 (Eq. 11-12).
    """
    norm = _F32(float(lr) / 2.0 ** (bits_G - 1))
    with np.errstate(over="ignore", invalid="ignore"):
        y = (norm * shift(x)).astype(_F32)
    out, _ = fixed_point(y, bits_G, bits_G - 1, clamp=False, symmetric=True, r=r)
    return out


def wage_forward(x: np.ndarray, bits_A: int, r: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``WAGEQuantizer`` forward (contract §2): ``(output, clamp mask)``; ``bits_A == -1``: identity, no mask."""
    x = np.asarray(x, dtype=_F32)
    if bits_A == -1:
        return x.copy(), np.zeros(x.shape, dtype=bool)
    return fixed_point(x, bits_A, bits_A - 1, clamp=True, symmetric=True, r=r)


def wage_backward(g: np.ndarray, mask: np.ndarray, bits_E: int, r: np.ndarray | None = None) -> np.ndarray:
    """contract §2 ``WAGEQuantizer`` backward of the incoming gradient ``g`` (Eq. 9-10's ``QE``).

    ``bits_E == -1``: ``g`` unchanged, the mask not applied. Else ``FP(shift(g); bits_E, bits_E-1,
    clamp=True, symmetric=True)``, then ``+0.0`` where ``mask`` is set.
    """
    g = np.asarray(g, dtype=_F32)
    if bits_E == -1:
        return g.copy()
    out, _ = fixed_point(shift(g), bits_E, bits_E - 1, clamp=True, symmetric=True, r=r)
    return np.where(mask, _F32(0.0), out).astype(_F32)


def assert_same_bits(actual: object, expected: np.ndarray) -> None:
    """Assert two float32 arrays are equal bit for bit (``-0.0 != +0.0``); NaNs match any NaN.

    ``actual`` may be a torch tensor (any float dtype is compared after conversion to float32 by the
    caller) or an array; only ``.numpy()`` / ``np.asarray`` is used on it, so this module stays free
    of any framework import.
    """
    a = np.asarray(actual.numpy() if hasattr(actual, "numpy") else actual)
    e = np.asarray(expected)
    assert a.dtype == np.float32, f"expected a float32 result, got {a.dtype}"
    assert a.shape == e.shape, f"shape {a.shape} != {e.shape}"
    ai, ei = a.view(np.int32), e.astype(np.float32).view(np.int32)
    bad = (ai != ei) & ~(np.isnan(a) & np.isnan(e))
    if bad.any():
        idx = np.argwhere(bad)[:5]
        rows = [
            f"at {tuple(i)}: got {a[tuple(i)]!r} ({ai[tuple(i)]:#x}), want {e[tuple(i)]!r} ({ei[tuple(i)]:#x})"
            for i in idx
        ]
        raise AssertionError(f"{int(bad.sum())} of {a.size} elements differ:\n" + "\n".join(rows))
