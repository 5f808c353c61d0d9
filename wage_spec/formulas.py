"""WAGE's scalar formulas that both frameworks share, each defined once (docs/contract.md §2).

Wu et al., "Training and Inference with Integers in Deep Neural Networks", ICLR 2018. These are the
framework-free parts of ``C`` (Eq. 4), ``QW`` (Eq. 5-7) and ``QG`` (Eq. 11-12): Python numbers in,
Python numbers out; ``wage_jax`` and ``wage_torch`` apply them to arrays.
"""

from __future__ import annotations

__all__ = ["clip_delta", "qg_norm", "qw_divides_by_scale"]

# QW divides by the layer's scale only when it is at least 2 (the initializer's scales are powers of
# two); the reference writes the test as ``scale > 1.8``.
_SCALE_THRESHOLD = 1.8


def clip_delta(bits: int) -> float:
    """The margin ``d`` of ``C(x, bits) = clamp(x, -1 + d, 1 - d)`` (WAGE Eq. 4).

    Args:
        bits: an int ``>= 1`` (validated by the caller).

    Returns:
        ``2^-(bits-1)``, or ``0.0`` when ``bits > 15`` or ``bits == 1`` (the reference's rule).

    References:
        Wu et al., ICLR 2018, Eq. 4; QPyTorch's ``examples/WAGE/qtorch_wage.py`` (``C``).

    Examples:
        >>> clip_delta(2), clip_delta(8), clip_delta(16), clip_delta(1)
        (0.5, 0.0078125, 0.0, 0.0)
    """
    return 0.0 if bits > 15 or bits == 1 else 1.0 / 2.0 ** (bits - 1)


def qw_divides_by_scale(scale: float) -> bool:
    """Whether ``QW`` divides the quantized weights by the layer's ``scale`` (WAGE Eq. 7's ``alpha``).

    Args:
        scale: the initializer's per-layer power of two (a positive finite number).

    Returns:
        ``scale > 1.8``: True for the scales 2, 4, 8, ..., False for 1.

    References:
        Wu et al., ICLR 2018, Eq. 7; QPyTorch's WAGE example (``QW``).

    Examples:
        >>> qw_divides_by_scale(1.0), qw_divides_by_scale(2.0)
        (False, True)
    """
    return scale > _SCALE_THRESHOLD


def qg_norm(lr: float, bits_G: int) -> float:
    """QG's factor ``lr / 2^(bits_G-1)`` in double precision (the caller rounds it once to float32).

    Args:
        lr: the learning rate, a finite number > 0 (validated by the caller).
        bits_G: gradient bits, an int in [2, 24].

    Returns:
        ``lr / 2^(bits_G - 1)``; dividing by a power of two is exact.

    References:
        Wu et al., ICLR 2018, Eq. 11-12.

    Examples:
        >>> qg_norm(8.0, 8)
        0.0625
    """
    return lr / 2.0 ** (bits_G - 1)
