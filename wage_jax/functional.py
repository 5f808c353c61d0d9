"""WAGE's functional API in JAX: ``shift``, ``C``, ``QW``, ``QG`` (docs/contract.md §2).

Pure functions over jax arrays with the torch API's names, parameter order and defaults. They work
eagerly and under ``jit``, ``vmap`` and ``grad``; bit arguments and modes are static Python values,
validated when the function is called (or traced). Every function computes in float32 and returns
the input's dtype.

Stochastic rounding takes an explicit PRNG ``key`` (keyword-only), as ``jax.random`` does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from wage_jax._arrays import as_float32, is_concrete, require_finite
from wage_jax.exact_shift import scale_by_pow2, shift_f32, shift_f32_ftz
from wage_jax.fixed_point import wage_fixed_point
from wage_spec import check_bits, check_clip_bits, check_lr, check_mode, check_scale

__all__ = ["C", "QG", "QW", "shift", "straight_through"]


@jax.custom_jvp
def straight_through(x: jax.Array, y: jax.Array) -> jax.Array:
    """Return ``y`` with the derivative of the identity in ``x`` (the straight-through estimator)."""
    return y


@straight_through.defjvp
def _straight_through_jvp(primals, tangents):
    return primals[1], tangents[0]


def shift(x: jax.Array) -> jax.Array:
    """``x / 2^k``, ``k = ceil(log2(max|x|))`` computed exactly, so that ``max|shift(x)| <= 1``.

    WAGE Eq. 9's ``Shift``. An all-zero or empty ``x`` is returned unchanged.

    Args:
        x: a floating-point array of any shape, finite.

    Returns:
        an array of ``x``'s shape and dtype.

    Raises:
        ValueError: eagerly, when ``x`` holds NaN or Inf. Under ``jit`` nothing can raise: the result is
            all-NaN; use ``wage_jax.checked`` to have it reported.
    """
    x32, dtype = as_float32(x)
    require_finite(x32, "x")
    return shift_f32(x32).astype(dtype)


def C(x: jax.Array, bits: int) -> jax.Array:
    """Clip ``x`` to ``[-1 + d, 1 - d]``, ``d = 2^-(bits-1)`` (``d = 0`` if ``bits > 15`` or ``bits == 1``).

    WAGE Eq. 4's ``Clip``. Args: ``x`` a floating-point array of any shape; ``bits`` an int ``>= 1``.
    """
    bits = check_clip_bits(bits, "bits")
    x32, dtype = as_float32(x)
    delta = 0.0 if bits > 15 or bits == 1 else 1.0 / 2.0 ** (bits - 1)
    return _clamp_symmetric(x32, np.float32(1.0 - delta)).astype(dtype)


def _clamp_symmetric(x: jax.Array, bound: np.float32) -> jax.Array:
    """``clamp(x, -bound, bound)`` for float32 ``x`` and ``0 < bound``, NaN passed through, on the bits.

    A float clamp under ``jit`` compiles to min/max instructions that flush subnormals to zero on
    XLA's CPU backend; torch keeps them. Comparing and selecting the int32 patterns keeps every input
    bit: for ``x >= 0`` the pattern orders like the value, for ``x < 0`` its magnitude bits do.
    """
    b = jax.lax.bitcast_convert_type(x, jnp.int32)
    mag = b & np.int32(0x7FFFFFFF)
    bound_bits = np.float32(bound).view(np.int32)
    beyond = (mag > bound_bits) & (mag <= np.int32(0x7F800000))  # NaN patterns lie above Inf's
    clamped = jnp.where(b < 0, np.float32(-bound).view(np.int32), bound_bits)
    return jax.lax.bitcast_convert_type(jnp.where(beyond, clamped, b), jnp.float32)


def QW(
    x: jax.Array,
    bits: int,
    scale: float = 1.0,
    mode: str = "nearest",
    *,
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> jax.Array:
    """Quantize weights to ``bits``-bit fixed point (WAGE Eq. 5-7), gradients passed straight through.

    ``FP(x; wl=bits, fl=bits-1, clamp=True, symmetric=True, rounding=mode)``, then divided by the
    layer's ``scale`` when ``scale > 1.8``. The derivative is the identity, so the gradient with
    respect to the accumulator equals the gradient with respect to the quantized weights.

    Args:
        x: a floating-point array of any shape (the weight accumulator).
        bits: an int in [2, 24].
        scale: a positive finite number (the initializer's power of two).
        mode: ``"nearest"`` or ``"stochastic"``.
        key: a PRNG key for ``"stochastic"`` (or ``noise``).
        noise: explicit uniform draws in ``[0, 1)`` of ``x``'s shape for ``"stochastic"``, instead of
            ``key`` (reproduces qtorch exactly given ``torch.rand_like``'s draws).
    """
    bits = check_bits(bits, "bits")
    scale = check_scale(scale, "scale")
    mode = check_mode(mode, "mode")
    x32, dtype = as_float32(x)
    y, _ = wage_fixed_point(jax.lax.stop_gradient(x32), bits, clamp=True, rounding=mode, key=key, noise=noise)
    if scale > 1.8:
        y = _divide_by_scale(y, scale)
    return straight_through(x32, y).astype(dtype)


def _divide_by_scale(y: jax.Array, scale: float) -> jax.Array:
    """``y / float32(scale)``, correctly rounded as torch divides.

    XLA rewrites ``y / broadcast(s)`` into ``y * (1 / s)``, which rounds differently unless ``s`` is a
    power of two. The initializer's scales are powers of two ``2^e``. ``y`` is ``QW``'s quantized value,
    a multiple of ``2^-23`` or more of magnitude at most 1 (or NaN): for ``e <= 100`` every nonzero
    ``y * 2^-e`` is a normal float32, so one multiplication by the constant ``2^-e`` is exact (and XLA's
    flushing of subnormals never applies); larger powers of two are applied exactly on the bits
    (subnormal results included); any other scale divides by an opaque full-shape array.
    """
    mantissa, exponent = np.frexp(np.float32(scale))
    if mantissa == 0.5:
        e = int(exponent) - 1
        if e <= 100:
            return y * np.float32(2.0**-e)
        # scale_by_pow2 takes finite input: NaN (passed through by the quantizer) stays as it is.
        return jnp.where(jnp.isnan(y), y, scale_by_pow2(y, jnp.int32(e)))
    divisor = jax.lax.optimization_barrier(jnp.full(y.shape, scale, jnp.float32))
    return y / divisor


def _qg_norm(lr, bits_G: int) -> jax.Array:
    """``lr / 2^(bits_G-1)`` as the float32 factor of QG: formed in double, rounded once to float32."""
    if not isinstance(lr, (jax.Array, np.ndarray)):
        return np.float32(check_lr(lr, "lr") / 2.0 ** (bits_G - 1))
    lr = jnp.asarray(lr)
    if lr.shape != () or not jnp.issubdtype(lr.dtype, jnp.floating):
        raise TypeError(f"lr must be a finite number or a floating-point scalar array, got {lr.dtype}{lr.shape}")
    if is_concrete(lr):
        check_lr(float(lr), "lr")
    # Dividing by a power of two commutes with rounding, so a float32 lr gives the same factor.
    return (lr / (2.0 ** (bits_G - 1))).astype(jnp.float32)


def QG(
    x: jax.Array,
    bits_G: int,
    lr,
    mode: str = "nearest",
    *,
    key: jax.Array | None = None,
    noise: jax.Array | None = None,
) -> jax.Array:
    """Quantize a gradient into a ``bits_G``-bit weight update (WAGE Eq. 11-12).

    ``FP((lr / 2^(bits_G-1)) * shift(x); wl=bits_G, fl=bits_G-1, clamp=False, symmetric=True)``.

    Args:
        x: a floating-point array of any shape (a gradient), finite.
        bits_G: an int in [2, 24].
        lr: a finite number, or a float scalar array (may be traced, e.g. an optax schedule's value).
        mode: ``"nearest"`` or ``"stochastic"``.
        key: a PRNG key for ``"stochastic"`` (or ``noise``).
        noise: explicit uniform draws in ``[0, 1)`` of ``x``'s shape for ``"stochastic"``, instead of
            ``key`` (reproduces qtorch exactly given ``torch.rand_like``'s draws).

    Returns:
        the update to subtract from the accumulator, in ``x``'s shape and dtype; zeros for an all-zero
        gradient. NaN/Inf: ``ValueError`` eagerly, all-NaN under ``jit`` (see ``wage_jax.checked``).
    """
    bits_G = check_bits(bits_G, "bits_G")
    mode = check_mode(mode, "mode")
    x32, dtype = as_float32(x)
    require_finite(x32, "x")
    norm = _qg_norm(lr, bits_G)
    y, _ = wage_fixed_point(norm * shift_f32_ftz(x32), bits_G, clamp=False, rounding=mode, key=key, noise=noise)
    return y.astype(dtype)
