"""WAGE's ``shift``: scale by the power of two that brings ``max|x|`` into ``(1/2, 1]`` (docs/contract.md §2).

Computed on the float32 bit patterns with integer operations only. Two reasons:

* the exponent ``k = ceil(log2(max|x|))`` must be exact (a float32 ``log2`` rounds down just above
  a power of two, and differs between torch and XLA there);
* XLA's CPU backend flushes subnormal inputs and outputs to zero, while the reference (torch on the
  CPU) keeps them: ``x / 2^k`` of a subnormal, or a result that falls below ``2^-126``, must still be
  the correctly rounded (half to even) float32. Integer arithmetic is immune to the float mode.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["max_abs_exponent", "scale_by_pow2", "scale_by_pow2_ftz", "shift_f32", "shift_f32_ftz"]

_SIGN = np.int32(-(2**31))  # 0x80000000
_ABS = np.int32(0x7FFFFFFF)
_MANT = np.int32(0x7FFFFF)
_HIDDEN = np.int32(0x800000)
_MIN_NORMAL = np.int32(0x800000)  # the bit pattern of 2^-126
_INF = np.int32(0x7F800000)


def _bits(x: jax.Array) -> jax.Array:
    return lax.bitcast_convert_type(x, jnp.int32)


_NAN = np.int32(0x7FC00000)  # a NaN's bit pattern: its k (129) is that of every NaN pattern
# The flag values of ``max_abs_exponent``'s second reduction: above every subnormal mantissa (< 2^23).
_FLAG_INF = np.float32(2.0**24)
_FLAG_NAN = np.float32(2.0**25)


def max_abs_exponent(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """For float32 ``x``: ``(k, all_zero, finite)`` with ``k = ceil(log2(max|x|))`` exactly (int32).

    Two single-operand float max-reductions, which ``jit``'s sharding turns into scalar all-reduces
    (``wage_jax.parallel``), and no branch: XLA:GPU runs a ``conditional`` by reading its predicate back to
    the host, a wait inside the step.

    * ``max|x|`` as a float reduction: the max is one of the elements, so its bit pattern is exact whenever
      it is a normal number (XLA's CPU backend compares subnormals as zero and skips NaN in its vectorized
      reductions).
    * ``max(f)`` over one float per element: a subnormal's mantissa as an integer-valued float (``< 2^23``,
      exact), ``2^24`` for an Inf, ``2^25`` for a NaN, ``0`` for a normal or zero. Every ``f`` is zero or a
      normal number, so this max is exact on every backend. It gives ``finite`` (``max(f) < 2^24``), and, when
      ``max|x|`` is not a normal number (all of ``x`` zero or subnormal, or a backend that returned a
      subnormal), the bit pattern of the largest subnormal (its mantissa), exact in every case.

    The result is that of an integer max over all of ``|x|``'s bit patterns (a NaN pattern only decides
    ``k = 129``), without one: XLA's CPU backend sends an int32 max to a slow, unvectorized path (measured
    1.8 ms on 784x1024 against 0.5 ms for two float reductions), and a variadic one-pass reduction is not
    partitioned by GSPMD (it all-gathers the sharded error tensor). The second reduction replaces the
    ``sum(x - x)`` NaN/Inf check of earlier versions at about the same cost.
    """
    m = _bits(jnp.max(jnp.abs(x), initial=np.float32(0.0)))
    mag = _bits(x) & _ABS
    e = mag >> 23
    sub = lax.convert_element_type(jnp.where(e == 0, mag, 0), jnp.float32)
    flag = jnp.where(e == 255, jnp.where(mag > _INF, _FLAG_NAN, _FLAG_INF), sub)
    f = jnp.max(flag, initial=np.float32(0.0))
    finite = f < _FLAG_INF
    # Not a normal max: the largest subnormal's pattern is its mantissa; NaN/Inf patterns as the integer max.
    fallback = jnp.where(f >= _FLAG_NAN, _NAN, jnp.where(f >= _FLAG_INF, _INF, lax.convert_element_type(f, jnp.int32)))
    m = jnp.where(m >= _MIN_NORMAL, m, fallback)
    exp, mant = m >> 23, m & _MANT
    # normal: (1 + mant/2^23) * 2^(exp-127); its ceil(log2) is exp - 127, plus 1 unless a power of two.
    k_normal = exp - 127 + (mant != 0).astype(jnp.int32)
    # subnormal: mant * 2^-149, ceil(log2 mant) = bit length of (mant - 1).
    k_sub = (32 - lax.clz(jnp.maximum(mant - 1, 0))) - 149
    k = jnp.where(exp > 0, k_normal, k_sub)
    return k, m == 0, finite


def scale_by_pow2(x: jax.Array, k: jax.Array) -> jax.Array:
    """``x * 2^-k`` for finite float32 ``x`` and int32 ``k``, correctly rounded (half to even) also
    when the result is subnormal; a result beyond float32's range becomes Inf."""
    b = _bits(x)
    sign, mag = b & _SIGN, b & _ABS
    exp, mant = mag >> 23, mag & _MANT
    # Normalize subnormal inputs: bring the leading 1 to bit 23 and lower the exponent to match.
    lz = lax.clz(mant) - 8
    sig = jnp.where(exp > 0, mant | _HIDDEN, mant << jnp.clip(lz, 0, 23))
    e = jnp.where(exp > 0, exp, 1 - lz) - k
    normal = sign | (e << 23) | (sig & _MANT)
    # Subnormal result: sig * 2^(e-1) in units of 2^-149, i.e. sig >> n with n = 1 - e, rounded half to even.
    n = jnp.clip(1 - e, 1, 25)
    q = sig >> n
    rem = sig & ((np.int32(1) << n) - 1)
    half = np.int32(1) << (n - 1)
    q = q + ((rem > half) | ((rem == half) & ((q & 1) == 1))).astype(jnp.int32)
    out = jnp.where(e >= 1, normal, sign | q)
    out = jnp.where(e >= 255, sign | np.int32(0x7F800000), out)  # overflow (only for tangents) -> Inf
    # Zeros keep their bits (and sign).
    out = jnp.where(mag == 0, b, out)
    return lax.bitcast_convert_type(out, jnp.float32)


def _pow2(e: jax.Array) -> jax.Array:
    """``2^e`` as float32 for an int32 ``e`` in ``[-126, 127]``, built from its bits (exact)."""
    return lax.bitcast_convert_type((e + 127) << 23, jnp.float32)


def scale_by_pow2_ftz(x: jax.Array, k: jax.Array) -> jax.Array:
    """``x * 2^-k`` for finite float32 ``x`` and an int32 scalar ``k`` in ``[-149, 128]``, with float multiplies.

    Exact (one rounding, half to even) wherever the backend keeps subnormals; where it flushes them
    (XLA's CPU backend flushes subnormal inputs and results of float operations to zero), results below
    ``2^-126`` in magnitude become zero of the same sign, and every normal result is still exact:

    * normal ``x``: ``(x * 2^-(k-k1)) * 2^-k1`` with ``k1 = clip(k, -125, 126)``; the first factor is 1
      unless ``k > 126``, and then it only scales ``x`` by ``1/2`` or ``1/4`` (exact while the final result
      can be nonzero);
    * subnormal ``x = m * 2^-149``: the integer ``m`` is converted exactly, then ``(m * 2^-126) * 2^(-k-23)``,
      a normal number times a normal power of two (``k > 103`` leaves nothing above ``2^-229``: zero).

    A few float multiplies and selects per element instead of ``scale_by_pow2``'s integer rounding: for
    the quantizers, whose next float operation flushes a subnormal operand on the CPU anyway.
    """
    b = _bits(x)
    mant = b & _MANT
    subnormal = ((b & _ABS) >> 23 == 0) & (mant != 0)
    k1 = jnp.clip(k, -125, 126)
    normal_path = (x * _pow2(k1 - k)) * _pow2(-k1)
    m = lax.convert_element_type(jnp.where(b < 0, -mant, mant), jnp.float32)
    # -k - 23 <= 126: k >= -149, reached when max|x| is the smallest subnormal 2^-149 (then the result is m).
    sub_path = (m * np.float32(2.0**-126)) * _pow2(jnp.clip(-k - 23, -126, 126))
    return jnp.where(subnormal, sub_path, normal_path)


def _make_shift(scale: Callable[[jax.Array, jax.Array], jax.Array], doc: str) -> Callable[[jax.Array], jax.Array]:
    """``x / 2^ceil(log2(max|x|))`` with the power-of-two scaling ``scale(x, k)``; its derivative is
    ``dx / 2^k`` (the exponent is piecewise constant), scaled exactly."""

    @jax.custom_jvp
    def shift(x: jax.Array) -> jax.Array:
        if x.size == 0:
            return x
        k, all_zero, finite = max_abs_exponent(x)
        y = jnp.where(all_zero, x, scale(x, k))
        return jnp.where(finite, y, np.float32(np.nan))

    @shift.defjvp
    def _jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        y = shift(x)
        if x.size == 0:
            return y, dx
        k, all_zero, _ = max_abs_exponent(x)
        return y, jnp.where(all_zero, dx, scale_by_pow2(dx, k))

    shift.__doc__ = doc
    return shift


# Jitted (with the other quantizer kernels): called eagerly, e.g. in a Flax ``model.init``, each is one
# compiled program instead of ~20 primitives compiled one by one; under an outer jit it is inlined.
shift_f32 = jax.jit(_make_shift(
    scale_by_pow2,
    """``x / 2^ceil(log2(max|x|))`` for float32 ``x``, exactly (docs/contract.md §2).

    An all-zero ``x`` is returned unchanged. NaN or Inf anywhere in ``x`` gives all-NaN (under ``jit``
    nothing can raise; the eager public ``shift`` raises instead, and ``wage_jax.checked`` reports it).
    """,
))

shift_f32_ftz = jax.jit(_make_shift(
    scale_by_pow2_ftz,
    """``shift`` for the quantizers (QG, the WAGE error): ``shift_f32`` with ``scale_by_pow2_ftz``.

    Bit for bit ``shift_f32`` wherever the result is normal (or the backend keeps subnormals); a subnormal
    result may come out as zero of the same sign. Its consumers multiply it by a float (``lr / 2^(b-1)``
    in QG, ``2^fl`` in the fixed-point rounding), and on a backend that flushes subnormals that
    multiplication sees zero for a subnormal operand either way, so their results are unchanged.
    """,
))
