"""WAGE's functional API in JAX: ``shift``, ``C``, ``QW``, ``QG`` (docs/contract.md §2).

Pure functions over jax arrays with the torch API's names, parameter order and defaults. They work
eagerly and under ``jit``, ``vmap`` and ``grad``; bit arguments and modes are static Python values,
validated when the function is called (or traced). Every function computes in float32 and returns
the input's dtype.

Stochastic rounding takes an explicit PRNG ``key`` (keyword-only), as ``jax.random`` does.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from wage_jax._src.arrays import as_float32, is_concrete, require_finite
from wage_jax._src.exact_shift import scale_by_pow2, shift_f32, shift_f32_ftz
from wage_jax._src.fixed_point import _wage_fixed_point
from wage_spec import (
    MAX_LR,
    check_bits,
    check_clip_bits,
    check_learning_rate,
    check_mode,
    check_scale,
    clip_delta,
    qg_norm,
    qw_divides_by_scale,
)

__all__ = ["C", "QG", "QW", "shift", "straight_through"]


@jax.custom_jvp
def straight_through(x: jax.Array, y: jax.Array) -> jax.Array:
    """Return ``y`` with the derivative of the identity in ``x`` (the straight-through estimator).

    Args:
        x: the array the gradient flows to.
        y: the value to return, ``x``'s shape (e.g. a quantization of ``x``).

    Returns:
        ``y``; its derivative with respect to ``x`` is the identity, with respect to ``y`` zero.

    References:
        Bengio et al., "Estimating or Propagating Gradients Through Stochastic Neurons", 2013.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> jax.grad(lambda x: straight_through(x, jnp.round(x)))(0.3)
        Array(1., dtype=float32, weak_type=True)
    """
    return y


@straight_through.defjvp
def _straight_through_jvp(primals, tangents):
    return primals[1], tangents[0]


def shift(x: jax.typing.ArrayLike) -> jax.Array:
    """``x / 2^k``, ``k = ceil(log2(max|x|))`` computed exactly, so that ``max|shift(x)| <= 1``.

    An all-zero or empty ``x`` is returned unchanged.

    Args:
        x: a floating-point array of any shape, finite.

    Returns:
        an array of ``x``'s shape and dtype.

    Raises:
        TypeError: ``x`` is not a floating-point array.
        ValueError: eagerly, when ``x`` holds NaN or Inf. Under ``jit`` nothing can raise: the result is
            all-NaN; use ``wage_jax.checked`` to have it reported.

    References:
        Wu et al., "Training and Inference with Integers in Deep Neural Networks", ICLR 2018, Eq. 9.

    Examples:
        >>> import jax.numpy as jnp
        >>> shift(jnp.array([3.0, -1.0, 0.5]))
        Array([ 0.75 , -0.25 ,  0.125], dtype=float32)
    """
    x32, dtype = as_float32(x)
    require_finite(x32, "x")
    return shift_f32(x32).astype(dtype)


def C(x: jax.typing.ArrayLike, bits: int) -> jax.Array:
    """Clip ``x`` to ``[-1 + d, 1 - d]``, ``d = 2^-(bits-1)`` (``d = 0`` if ``bits > 15`` or ``bits == 1``).

    Subnormals and NaN pass through unchanged (the clamp is done on the bit patterns).

    Args:
        x: a floating-point array of any shape.
        bits: an int ``>= 1``.

    Returns:
        the clipped array, ``x``'s shape and dtype.

    Raises:
        TypeError: ``x`` is not a floating-point array or ``bits`` is not an int.
        ValueError: ``bits < 1``.

    References:
        Wu et al., ICLR 2018, Eq. 4 (``Clip``); ``wage_spec.clip_delta``.

    Examples:
        >>> import jax.numpy as jnp
        >>> C(jnp.array([0.9, -0.3, -2.0]), 2)
        Array([ 0.5, -0.3, -0.5], dtype=float32)
    """
    bits = check_clip_bits(bits, "bits")
    x32, dtype = as_float32(x)
    return _clamp_symmetric(x32, np.float32(1.0 - clip_delta(bits))).astype(dtype)


@partial(jax.jit, static_argnums=1)  # one program when called eagerly (see exact_shift.shift_f32)
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
    x: jax.typing.ArrayLike,
    bits: int,
    scale: float = 1.0,
    mode: str = "nearest",
    *,
    key: jax.Array | None = None,
    noise: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Quantize weights to ``bits``-bit fixed point, gradients passed straight through.

    ``FP(x; wl=bits, fl=bits-1, clamp=True, symmetric=True, rounding=mode)``, then divided by the
    layer's ``scale`` when ``scale > 1.8`` (``wage_spec.qw_divides_by_scale``). The derivative is the
    identity, so the gradient with respect to the accumulator equals the gradient with respect to the
    quantized weights.

    Args:
        x: a floating-point array of any shape (the weight accumulator).
        bits: an int in [2, 24].
        scale: a positive finite number (the initializer's power of two).
        mode: ``"nearest"`` or ``"stochastic"``.
        key: a JAX PRNG key for ``"stochastic"`` (or ``noise``).
        noise: explicit uniform draws in ``[0, 1)`` of ``x``'s shape for ``"stochastic"``, instead of
            ``key`` (reproduces qtorch exactly given ``torch.rand_like``'s draws).

    Returns:
        the quantized weights, ``x``'s shape and dtype.

    Raises:
        TypeError: ``x`` is not a floating-point array, ``key`` is not a PRNG key, or an argument has
            the wrong type.
        ValueError: ``bits``, ``scale`` or ``mode`` out of range; randomness missing for
            ``"stochastic"``, or given for ``"nearest"``, or key and noise both given.

    References:
        Wu et al., ICLR 2018, Eq. 5-7.

    Examples:
        >>> import jax.numpy as jnp
        >>> QW(jnp.array([0.3, -0.9, 0.05]), 3)
        Array([ 0.25, -0.75,  0.  ], dtype=float32)
        >>> QW(jnp.array([0.3, -0.9, 0.05]), 3, scale=4.0)
        Array([ 0.0625, -0.1875,  0.    ], dtype=float32)
    """
    bits = check_bits(bits, "bits")
    scale = check_scale(scale, "scale")
    mode = check_mode(mode, "mode")
    x32, dtype = as_float32(x)
    y, _ = _wage_fixed_point(jax.lax.stop_gradient(x32), bits, clamp=True, rounding=mode, key=key, noise=noise)
    if qw_divides_by_scale(scale):
        y = _divide_by_scale(y, scale)
    return straight_through(x32, y).astype(dtype)


def _divide_by_scale(y: jax.Array, scale: float) -> jax.Array:
    """``y / float32(scale)``, correctly rounded as torch's CPU divides, with no division for a power of two.

    XLA:GPU compiles float32 division to PTX ``div.full`` (within 2 ulp, not correctly rounded), and XLA
    rewrites ``y / broadcast(s)`` into ``y * (1 / s)``, which rounds differently unless ``s`` is a power of
    two. The initializer's scales are powers of two ``2^e``. ``y`` is ``QW``'s quantized value, a multiple
    of ``2^-23`` or more of magnitude below 1 (or NaN): for ``e <= 100`` every nonzero ``y * 2^-e`` is a
    normal float32, so one multiplication by the constant ``2^-e`` is exact on every backend (and XLA's
    flushing of subnormals never applies); larger powers of two are applied exactly on the bits
    (subnormal results included). A scale beyond float32's range rounds to Inf: ``y * 0`` is ``y / Inf``.
    Only a scale that is not a power of two divides, by an opaque full-shape array: exact on the CPU,
    ``div.full`` on XLA:GPU (docs/contract.md §2; the accelerator command reports these cases apart).
    """
    with np.errstate(over="ignore"):
        s32 = np.float32(scale)
    if not np.isfinite(s32):
        return y * np.float32(0.0)
    mantissa, exponent = np.frexp(s32)
    if mantissa == 0.5:
        e = int(exponent) - 1
        if e <= 100:
            return y * np.float32(2.0**-e)
        # scale_by_pow2 takes finite input: NaN (passed through by the quantizer) stays as it is.
        return jnp.where(jnp.isnan(y), y, scale_by_pow2(y, jnp.int32(e)))
    divisor = jax.lax.optimization_barrier(jnp.full(y.shape, s32, jnp.float32))
    return y / divisor


def _qg_norm(lr: float | jax.typing.ArrayLike, bits_G: int) -> jax.Array | np.float32:
    """``lr / 2^(bits_G-1)`` as the float32 factor of QG: formed in double, rounded once to float32.

    ``lr`` is checked (finite, ``> 0``, at most ``wage_spec.MAX_LR``) whenever its value is known: a
    Python/NumPy number, or a concrete scalar array. A traced ``lr`` (an optax schedule's value under
    ``jit``) cannot be checked; a non-finite one gives a non-finite update.
    """
    if not isinstance(lr, (jax.Array, np.ndarray)):
        return np.float32(qg_norm(check_learning_rate(lr, "lr"), bits_G))
    lr = jnp.asarray(lr)
    if lr.shape != () or not jnp.issubdtype(lr.dtype, jnp.floating):
        raise TypeError(f"lr must be a finite number or a floating-point scalar array, got {lr.dtype}{lr.shape}")
    if is_concrete(lr):
        check_learning_rate(float(lr), "lr")
        return qg_norm(lr, bits_G).astype(jnp.float32)
    # Traced (an optax schedule under jit): a value outside (0, MAX_LR] cannot raise, so it makes the factor,
    # and with it the whole update, NaN: ascent (lr < 0), no update (0) or saturation (1e30) never pass as
    # plausible weights (docs/contract.md: under jit bad values give NaN).
    ok = (lr > 0) & (lr <= MAX_LR)  # False for NaN too
    # Dividing by a power of two commutes with rounding, so a float32 lr gives the same factor.
    return jnp.where(ok, qg_norm(lr, bits_G), jnp.nan).astype(jnp.float32)


def QG(
    x: jax.typing.ArrayLike,
    bits_G: int,
    lr: float | jax.typing.ArrayLike,
    mode: str = "nearest",
    *,
    key: jax.Array | None = None,
    noise: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Quantize a gradient into a ``bits_G``-bit weight update.

    ``FP((lr / 2^(bits_G-1)) * shift(x); wl=bits_G, fl=bits_G-1, clamp=False, symmetric=True)``
    (``wage_spec.qg_norm``); ``shift`` takes its max and finds NaN/Inf in one reduction.

    Args:
        x: a floating-point array of any shape (a gradient), finite.
        bits_G: an int in [2, 24].
        lr: a finite number in ``(0, 2^24]``, or a float scalar array (may be traced, e.g. an optax
            schedule's value; checked when concrete).
        mode: ``"nearest"`` or ``"stochastic"``.
        key: a JAX PRNG key for ``"stochastic"`` (or ``noise``).
        noise: explicit uniform draws in ``[0, 1)`` of ``x``'s shape for ``"stochastic"``, instead of
            ``key`` (reproduces qtorch exactly given ``torch.rand_like``'s draws).

    Returns:
        the update to subtract from the accumulator, in ``x``'s shape and dtype; zeros for an all-zero
        gradient.

    Raises:
        TypeError: ``x`` is not a floating-point array, ``lr`` is not a real number or float scalar,
            ``key`` is not a PRNG key, or ``bits_G``/``mode`` have the wrong type.
        ValueError: eagerly, ``x`` holds NaN or Inf (under ``jit``: an all-NaN result, reported by
            ``wage_jax.checked``); ``lr`` not finite, ``<= 0`` or above ``2^24``; ``bits_G`` or ``mode``
            out of range; randomness missing, misplaced or doubled.

    References:
        Wu et al., ICLR 2018, Eq. 11-12.

    Examples:
        >>> import jax.numpy as jnp
        >>> QG(jnp.array([0.5, -0.25, 0.01]), 4, 1.0)
        Array([ 0.125, -0.   ,  0.   ], dtype=float32)
    """
    bits_G = check_bits(bits_G, "bits_G")
    mode = check_mode(mode, "mode")
    x32, dtype = as_float32(x)
    require_finite(x32, "x")
    norm = _qg_norm(lr, bits_G)
    y, _ = _wage_fixed_point(norm * shift_f32_ftz(x32), bits_G, clamp=False, rounding=mode, key=key, noise=noise)
    return y.astype(dtype)
