"""The WAGE quantizer as a function with a ``jax.custom_vjp`` (docs/contract.md §2; WAGE Eq. 8-10).

forward: activations ``FP(x; bits_A, bits_A-1, clamp, symmetric, A_mode)`` (identity for
``bits_A == -1``), remembering the clamp mask.
backward: errors ``FP(shift(g); bits_E, bits_E-1, clamp, symmetric, E_mode)``, zeroed where the
forward clamped; ``bits_E == -1`` passes ``g`` unchanged (no mask), as qtorch's ``quantizer`` does.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from wage_jax._arrays import as_float32
from wage_jax.exact_shift import shift_f32_ftz
from wage_jax.fixed_point import as_noise, uniform, wage_fixed_point
from wage_spec import FULL_PRECISION, check_bits, check_mode, draws_randomness

__all__ = ["wage_quantize"]


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _wage_q(x, noise_A, noise_E, bits_A, bits_E, A_mode, E_mode):
    return _wage_fwd(x, noise_A, noise_E, bits_A, bits_E, A_mode, E_mode)[0]


def _wage_fwd(x, noise_A, noise_E, bits_A, bits_E, A_mode, E_mode):
    if bits_A == FULL_PRECISION:
        out, mask = x, None
    else:
        out, mask = wage_fixed_point(x, bits_A, clamp=True, rounding=A_mode, noise=noise_A)
    return out, (mask, noise_A, noise_E)


def _wage_bwd(bits_A, bits_E, A_mode, E_mode, res, g):
    mask, noise_A, noise_E = res
    zeros = jax.tree_util.tree_map(jnp.zeros_like, (noise_A, noise_E))
    if bits_E == FULL_PRECISION:
        return (g, *zeros)
    e, _ = wage_fixed_point(shift_f32_ftz(g), bits_E, clamp=True, rounding=E_mode, noise=noise_E)
    if mask is not None:
        e = jnp.where(mask, np.float32(0.0), e)
    return (e, *zeros)


_wage_q.defvjp(_wage_fwd, _wage_bwd)


def wage_quantize(
    x: jax.Array,
    bits_A: int,
    bits_E: int,
    A_mode: str = "nearest",
    E_mode: str = "nearest",
    *,
    key: jax.Array | None = None,
    noise_A: jax.Array | None = None,
    noise_E: jax.Array | None = None,
) -> jax.Array:
    """Quantize activations forward and errors backward: ``WAGEQuantizer`` as a function.

    Args:
        x: a floating-point array of any shape; computed in float32, returned in ``x``'s dtype.
        bits_A: activation bits, an int in [2, 24] or -1 (full precision: identity, no mask).
        bits_E: error bits, an int in [2, 24] or -1 (full precision: the gradient passes unchanged).
        A_mode, E_mode: ``"nearest"`` or ``"stochastic"``.
        key: a PRNG key for the stochastic modes; the forward and backward draws are independent
            (``jax.random.split(key)``).
        noise_A, noise_E: explicit uniform draws in ``[0, 1)`` of ``x``'s shape instead of ``key``
            (for exact parity with qtorch given ``torch.rand_like``'s draws).

    Returns:
        the quantized activations, ``x``'s shape and dtype.
    """
    bits_A = check_bits(bits_A, "bits_A", allow_full_precision=True)
    bits_E = check_bits(bits_E, "bits_E", allow_full_precision=True)
    A_mode = check_mode(A_mode, "A_mode")
    E_mode = check_mode(E_mode, "E_mode")
    x32, dtype = as_float32(x)
    needs_A = draws_randomness(A_mode, bits_A)
    needs_E = draws_randomness(E_mode, bits_E)
    if key is not None and (noise_A is not None or noise_E is not None):
        raise ValueError("pass either key or noise_A/noise_E, not both")
    if key is not None and (needs_A or needs_E):
        key_A, key_E = jax.random.split(key)
        noise_A = uniform(key_A, x32.shape) if needs_A else None
        noise_E = uniform(key_E, x32.shape) if needs_E else None
    for needed, noise, name, mode_name in (
        (needs_A, noise_A, "noise_A", "A_mode"),
        (needs_E, noise_E, "noise_E", "E_mode"),
    ):
        if needed and noise is None:
            raise ValueError(f"{mode_name}='stochastic' needs randomness: pass key (a jax.random key) or {name}")
        if not needed and noise is not None:
            raise ValueError(f"{name} is only used when {mode_name}='stochastic' and its bits are not -1")
    noise_A = None if noise_A is None else as_noise(noise_A, x32.shape, "noise_A")
    noise_E = None if noise_E is None else as_noise(noise_E, x32.shape, "noise_E")
    return _wage_q(x32, noise_A, noise_E, bits_A, bits_E, A_mode, E_mode).astype(dtype)

