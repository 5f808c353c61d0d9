"""Fixed-point quantization with qtorch's CPU-kernel semantics, bit for bit (docs/contract.md §1).

qtorch (``quant_cpu/sim_helper.cpp``) rounds one float32 ``a`` to ``fl`` fractional bits as
``a = ldexp(a, fl); a = nearbyint(a + r - 0.5); a = ldexp(a, -fl)``: the sum ``a + r`` is float32,
the ``- 0.5`` and ``nearbyint`` (round half to even) happen in double. Here the same result is computed
with float32 operations only, so it runs on any XLA backend without float64:

with ``s = float32(y + r)``, ``nearbyint(double(s) - 0.5)`` is

* ``floor(s)`` when ``s`` is not an integer;
* ``s`` when ``s`` is an even integer and ``s - 1`` when it is odd (the tie ``s - 1/2`` goes to even);
* ``-0.0`` for ``s`` in ``[-2^-54, 1/2)``: there ``double(s) - 0.5`` lies in ``[-1/2, 0)`` (for
  ``s >= -2^-54`` the double subtraction itself rounds to ``-1/2``), and ``nearbyint`` keeps the sign.

None of these steps rounds, so XLA's simplifier has nothing to reorder, and flushing subnormals to
zero (XLA's CPU backend does) changes no result: a subnormal ``y`` lands in the same case as zero.
"""

from __future__ import annotations

import numbers
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wage_jax._src.arrays import as_float32, check_key
from wage_jax._src.threefry import uniform
from wage_spec import MAX_BITS, check_mode, check_randomness

__all__ = ["fixed_point_quantize", "fixed_point_quantize_with_mask", "fixed_point_range"]

# Below -2^-54 in magnitude, double(s) - 0.5 rounds to exactly -0.5 (ties to even).
_NEG_TINY = np.float32(-(2.0**-54))


def _check_word(wl: object, fl: object) -> tuple[int, int]:
    for value, name in ((wl, "wl"), (fl, "fl")):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    wl, fl = int(wl), int(fl)
    if not 2 <= wl <= MAX_BITS:
        raise ValueError(f"wl must be an int in [2, {MAX_BITS}], got {wl}")
    if not -64 <= fl <= 64:
        raise ValueError(f"fl must be an int in [-64, 64], got {fl}")
    return wl, fl


def fixed_point_range(wl: int, fl: int, symmetric: bool) -> tuple[np.float32, np.float32]:
    """``(t_min, t_max)`` as qtorch's ``fixed_min_max`` computes them (double, stored as float32).

    Args:
        wl: word length; fl: fractional bits (not validated here).
        symmetric: raise ``t_min`` by ``2^-fl``.

    Returns:
        ``(-2^(wl-fl-1) [+ 2^-fl], 2^(wl-fl-1) - 2^-fl)`` as float32 scalars.

    References:
        docs/contract.md §1; qtorch ``quant_cpu/sim_helper.cpp``.

    Examples:
        >>> fixed_point_range(8, 7, True)
        (np.float32(-0.9921875), np.float32(0.9921875))
    """
    t_min = np.float32(-(2.0 ** (wl - fl - 1)))
    t_max = np.float32(-float(t_min) - 2.0**-fl)
    if symmetric:
        t_min = np.float32(float(t_min) + 2.0**-fl)
    return t_min, t_max


def _round_to_integer(s: jax.Array) -> jax.Array:
    """``float32(nearbyint(double(s) - 0.5))`` for float32 ``s``, in float32 arithmetic (see module doc).

    Every expression below is written on ``f = floor(s)`` rather than on ``s``: XLA's algebraic
    simplifier folds ``(y + 0.5) - 1`` into ``y - 0.5``, which is not the same float32 value.
    """
    f = jnp.floor(s)
    even = jnp.floor(f * np.float32(0.5)) * np.float32(2.0) == f
    q = jnp.where((s == f) & ~even, f - np.float32(1.0), f)
    return jnp.where((s >= _NEG_TINY) & (s < np.float32(0.5)), np.float32(-0.0), q)


def _as_noise(noise: object, shape: tuple[int, ...], name: str = "noise") -> jax.Array:
    """Explicit uniform draws as float32 of ``shape``, else an error naming ``name``."""
    noise, _ = as_float32(noise, name)
    if noise.shape != shape:
        raise ValueError(f"{name} must have x's shape {shape}, got {noise.shape}")
    return noise


def _noise(x: jax.Array, rounding: str, key: jax.Array | None, noise: jax.Array | None) -> jax.Array:
    """The ``r`` of the rounding: an opaque ``1/2`` for ``"nearest"``, else uniform draws of ``x``'s shape."""
    if rounding == "nearest":
        if key is not None or noise is not None:
            raise ValueError("key and noise are only used with rounding='stochastic'")
        # An opaque 0.5: as a literal, XLA would fold it into constants around the rounding.
        return lax.optimization_barrier(jnp.float32(0.5))
    check_randomness(True, key is not None, noise is not None, mode_name="rounding", noise_name="noise")
    if noise is not None:
        return _as_noise(noise, x.shape)
    return uniform(check_key(key), x.shape)


@partial(jax.jit, static_argnums=(1, 2, 3, 4))  # one program when called eagerly (see exact_shift.shift_f32)
def _quantize_f32(x: jax.Array, wl: int, fl: int, clamp: bool, symmetric: bool, r) -> tuple[jax.Array, jax.Array]:
    # Scaling by a power of two is exact (an FMA contraction with "+ r" changes nothing).
    s = x * np.float32(2.0**fl) + r
    out = _round_to_integer(s) * np.float32(2.0**-fl)
    if not clamp:
        return out, jnp.zeros(out.shape, jnp.bool_)
    t_min, t_max = fixed_point_range(wl, fl, symmetric)
    above, below = out > t_max, out < t_min
    # where/where rather than clip: NaN passes through unmasked, as in qtorch's clamp_mask_helper.
    out = jnp.where(above, t_max, jnp.where(below, t_min, out))
    return out, above | below


def fixed_point_quantize_with_mask(
    x: jax.Array,
    wl: int,
    fl: int,
    *,
    symmetric: bool = False,
    rounding: str = "nearest",
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Clamped fixed-point quantization and its clamp mask (qtorch's ``fixed_point_quantize_*_mask``).

    Args:
        x: a floating-point array of any shape; computed in float32.
        wl: word length, an int in [2, 24]. fl: fractional bits, an int in [-64, 64].
        symmetric: raise ``t_min`` by ``2^-fl`` so the range is symmetric.
        rounding: ``"nearest"`` or ``"stochastic"``.
        key: a PRNG key for stochastic rounding's uniform draws.
        noise: explicit uniform draws in ``[0, 1)`` of ``x``'s shape (float32), instead of ``key``.

    Returns:
        ``(out, mask)``: ``out`` in ``x``'s dtype; ``mask`` (bool, ``x``'s shape) is True where the
        rounded value lay outside ``[t_min, t_max]`` and was clamped.

    Raises:
        TypeError: ``x`` not floating point, ``wl``/``fl`` not ints, ``key`` not a PRNG key.
        ValueError: ``wl``, ``fl`` or ``rounding`` out of range; randomness missing, misplaced or doubled.

    References:
        docs/contract.md §1; qtorch's ``fixed_point_quantize`` with ``clamp_mask``.

    Examples:
        >>> import jax.numpy as jnp
        >>> fixed_point_quantize_with_mask(jnp.array([0.3, 2.0]), 4, 3, symmetric=True)
        (Array([0.25 , 0.875], dtype=float32), Array([False,  True], dtype=bool))
    """
    wl, fl = _check_word(wl, fl)
    rounding = check_mode(rounding, "rounding")
    x32, dtype = as_float32(x)
    r = _noise(x32, rounding, key, noise)
    out, mask = _quantize_f32(x32, wl, fl, True, bool(symmetric), r)
    return out.astype(dtype), mask


def fixed_point_quantize(
    x: jax.Array,
    wl: int,
    fl: int,
    *,
    clamp: bool = True,
    symmetric: bool = False,
    rounding: str = "nearest",
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> jax.Array:
    """Quantize ``x`` to a fixed-point number of ``wl`` bits with ``fl`` fractional bits (docs/contract.md §1).

    ``q = nearbyint(float32(x * 2^fl + r) - 0.5) * 2^-fl``, then clamped to
    ``[-2^(wl-fl-1) (+2^-fl if symmetric), 2^(wl-fl-1) - 2^-fl]`` when ``clamp``; ``r = 1/2`` for
    ``"nearest"`` and ``r ~ U[0, 1)`` for ``"stochastic"``. Bit for bit qtorch's CPU kernel, the sign of
    zero included, eagerly and under ``jit``.

    Args:
        x: a floating-point array of any shape; computed in float32, returned in ``x``'s dtype.
        wl: word length, an int in [2, 24]. fl: fractional bits, an int in [-64, 64].
        clamp: clamp to the representable range.
        symmetric: raise ``t_min`` by ``2^-fl``.
        rounding: ``"nearest"`` or ``"stochastic"``.
        key: a PRNG key for stochastic rounding's uniform draws.
        noise: explicit uniform draws in ``[0, 1)`` of ``x``'s shape (float32), instead of ``key``
            (reproduces qtorch exactly given ``torch.rand_like``'s draws).

    Returns:
        the quantized array, ``x``'s shape and dtype.

    Raises:
        TypeError: ``x`` not floating point, ``wl``/``fl`` not ints, ``key`` not a PRNG key.
        ValueError: ``wl``, ``fl`` or ``rounding`` out of range; randomness missing, misplaced or doubled.

    References:
        docs/contract.md §1; Gupta et al., "Deep Learning with Limited Numerical Precision", ICML 2015
        (stochastic rounding).

    Examples:
        >>> import jax.numpy as jnp
        >>> fixed_point_quantize(jnp.array([0.3, -0.06, 5.0]), 4, 3)
        Array([ 0.25 , -0.   ,  0.875], dtype=float32)
    """
    wl, fl = _check_word(wl, fl)
    rounding = check_mode(rounding, "rounding")
    x32, dtype = as_float32(x)
    r = _noise(x32, rounding, key, noise)
    out, _ = _quantize_f32(x32, wl, fl, bool(clamp), bool(symmetric), r)
    return out.astype(dtype)


def _wage_fixed_point(
    x32: jax.Array,
    bits: int,
    *,
    clamp: bool,
    rounding: str,
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """WAGE's format ``FP(x; bits, bits-1, clamp, symmetric=True)`` on float32 input (validated args)."""
    return _quantize_f32(x32, bits, bits - 1, clamp, True, _noise(x32, rounding, key, noise))

