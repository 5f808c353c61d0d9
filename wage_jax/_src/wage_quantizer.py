"""The WAGE quantizer as a function with a ``jax.custom_vjp`` (docs/contract.md §2; WAGE Eq. 8-10).

forward: activations ``FP(x; bits_A, bits_A-1, clamp, symmetric, A_mode)`` (identity for
``bits_A == -1``), remembering the clamp mask (``bool``, one byte per element).
backward: errors ``FP(shift(g); bits_E, bits_E-1, clamp, symmetric, E_mode)``, zeroed where the
forward clamped; ``bits_E == -1`` passes ``g`` unchanged (no mask), as qtorch's ``quantizer`` does.

With a ``key``, the backward's stochastic draws are made *in the backward* from ``E``'s half of the
split key, which is all the forward keeps for them: no float32 noise array of the activation's size
lives from the forward to the backward. The draws are the same bits as drawing them in the forward.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from wage_jax._src.arrays import all_finite_now, as_float32, check_key
from wage_jax._src.exact_shift import shift_f32_ftz
from wage_jax._src.fixed_point import _as_noise, _wage_fixed_point
from wage_jax._src.threefry import uniform
from wage_spec import FULL_PRECISION, check_bits, check_mode, check_randomness, draws_randomness

__all__ = ["wage_quantize"]


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _wage_q(x, noise_A, noise_E, key_E, bits_A, bits_E, A_mode, E_mode):
    return _wage_fwd(x, noise_A, noise_E, key_E, bits_A, bits_E, A_mode, E_mode)[0]


def _wage_fwd(x, noise_A, noise_E, key_E, bits_A, bits_E, A_mode, E_mode):
    if bits_A == FULL_PRECISION:
        out, mask = x, None
    else:
        out, mask = _wage_fixed_point(x, bits_A, clamp=True, rounding=A_mode, noise=noise_A)
    # The residuals: the clamp mask (bool) and E's randomness, as a key when one was given.
    return out, (mask, noise_E, key_E)


def _wage_bwd(bits_A, bits_E, A_mode, E_mode, res, g):
    mask, noise_E, key_E = res
    if bits_E == FULL_PRECISION:
        e = g
    else:
        if not all_finite_now(g):
            # As wage_torch does; under jit the error is all-NaN (wage_jax.checked reports it).
            raise ValueError(
                "wage_quantize's backward: the incoming gradient contains NaN or Inf (WAGE's error shift needs"
                " finite values)"
            )
        if key_E is not None:
            noise_E = uniform(key_E, g.shape)
        elif noise_E is None and E_mode == "stochastic":
            # The forward ran without randomness for E (evaluation needs none); a gradient does.
            raise ValueError("wage_quantize: E_mode='stochastic' draws in the backward pass: give a key (a 'wage' "
                             "rng stream for the Flax layers) or noise_E to take a gradient")
        e, _ = _wage_fixed_point(shift_f32_ftz(g), bits_E, clamp=True, rounding=E_mode, noise=noise_E)
        if mask is not None:
            e = jnp.where(mask, np.float32(0.0), e)
    # No cotangent for the draws or the key (None: zero).
    return (e, None, None, None)


_wage_q.defvjp(_wage_fwd, _wage_bwd)


def wage_quantize(
    x: jax.typing.ArrayLike,
    bits_A: int,
    bits_E: int,
    A_mode: str = "nearest",
    E_mode: str = "nearest",
    *,
    key: jax.Array | None = None,
    noise_A: jax.typing.ArrayLike | None = None,
    noise_E: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Quantize activations forward and errors backward: ``WAGEQuantizer`` as a function (WAGE Eq. 8-10).

    Args:
        x: a floating-point array of any shape; computed in float32, returned in ``x``'s dtype.
        bits_A: activation bits, an int in [2, 24] or -1 (full precision: identity, no mask).
        bits_E: error bits, an int in [2, 24] or -1 (full precision: the gradient passes unchanged).
        A_mode: ``"nearest"`` or ``"stochastic"`` rounding of the activations.
        E_mode: ``"nearest"`` or ``"stochastic"`` rounding of the errors.
        key: a JAX PRNG key for the stochastic modes; the forward and backward draws are independent
            (``key_A, key_E = jax.random.split(key)``; the backward draws from ``key_E`` when it runs).
        noise_A: explicit uniform draws in ``[0, 1)`` of ``x``'s shape for ``A_mode``, instead of ``key``
            (for exact parity with qtorch given ``torch.rand_like``'s draws).
        noise_E: the same for ``E_mode``.

    Returns:
        the quantized activations, ``x``'s shape and dtype.

    Raises:
        TypeError: ``x`` is not a floating-point array, ``key`` is not a PRNG key, or a bits/mode
            argument has the wrong type.
        ValueError: a bits/mode value out of range; key and noise both passed, or randomness missing
            for a stochastic ``A_mode`` (a stochastic ``E_mode`` without randomness raises when a gradient
            is taken: the forward alone, e.g. evaluation, needs none); eagerly, in the backward, an
            incoming gradient holding NaN or Inf
            (under ``jit`` the error is all-NaN instead; ``wage_jax.checked.wage_quantize`` reports it).

    References:
        Wu et al., "Training and Inference with Integers in Deep Neural Networks", ICLR 2018, Eq. 8-10.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.array([0.3, -2.0, 0.01])
        >>> wage_quantize(x, 4, 4)
        Array([ 0.25 , -0.875,  0.   ], dtype=float32)
        >>> jax.grad(lambda x: wage_quantize(x, 4, 4).sum())(x)  # zero where the forward clamped
        Array([0.875, 0.   , 0.875], dtype=float32)
    """
    bits_A = check_bits(bits_A, "bits_A", allow_full_precision=True)
    bits_E = check_bits(bits_E, "bits_E", allow_full_precision=True)
    A_mode = check_mode(A_mode, "A_mode")
    E_mode = check_mode(E_mode, "E_mode")
    x32, dtype = as_float32(x)
    needs_A = draws_randomness(A_mode, bits_A)
    needs_E = draws_randomness(E_mode, bits_E)
    has_key = key is not None
    check_randomness(needs_A, has_key, noise_A is not None, mode_name="A_mode", noise_name="noise_A")
    # E draws in the backward: without key or noise_E the forward runs, and a gradient raises there.
    check_randomness(needs_E and (has_key or noise_E is not None), has_key, noise_E is not None, mode_name="E_mode",
                     noise_name="noise_E")
    key_E = None
    if has_key and (needs_A or needs_E):
        key_A, key_E = jax.random.split(check_key(key))
        noise_A = uniform(key_A, x32.shape) if needs_A else None
        key_E = key_E if needs_E else None
    noise_A = None if noise_A is None else _as_noise(noise_A, x32.shape, "noise_A")
    noise_E = None if noise_E is None else _as_noise(noise_E, x32.shape, "noise_E")
    return _wage_q(x32, noise_A, noise_E, key_E, bits_A, bits_E, A_mode, E_mode).astype(dtype)
