"""Argument validation shared by ``wage_torch`` and ``wage_jax`` (docs/contract.md §4).

Every check raises ``TypeError`` for a value of the wrong type and ``ValueError`` for a value out of
range, and the message names the argument and what it accepts, so a user sees the same error from
either package.
"""

from __future__ import annotations

import math
import numbers

MIN_BITS = 2
# float32 has a 24-bit significand: a fixed-point word longer than that cannot be represented.
MAX_BITS = 24
# "-1" means full precision, for WAGEQuantizer's bits_A / bits_E only.
FULL_PRECISION = -1
ROUNDING_MODES = ("nearest", "stochastic")


def _is_int(value: object) -> bool:
    # bool is an int subclass, and numpy integers are not ints: accept the latter, refuse the former.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_bits(value: object, name: str, *, allow_full_precision: bool = False) -> int:
    """Return ``value`` as an int in ``[2, 24]`` (or ``-1`` when allowed), else raise naming ``name``."""
    accepted = f"an int in [{MIN_BITS}, {MAX_BITS}]"
    if allow_full_precision:
        accepted += f" or {FULL_PRECISION} (full precision)"
    if not _is_int(value):
        raise TypeError(f"{name} must be {accepted}, got {value!r} of type {type(value).__name__}")
    value = int(value)
    if allow_full_precision and value == FULL_PRECISION:
        return value
    if not MIN_BITS <= value <= MAX_BITS:
        raise ValueError(f"{name} must be {accepted}, got {value}")
    return value


def check_clip_bits(value: object, name: str = "bits") -> int:
    """``C`` accepts any int ``>= 1`` (docs/contract.md §2: one bit, and more than 15, clip to [-1, 1])."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an int >= 1, got {value!r} of type {type(value).__name__}")
    if int(value) < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value}")
    return int(value)


def check_mode(value: object, name: str = "mode") -> str:
    """Return the rounding mode, ``"nearest"`` or ``"stochastic"``, else raise naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {ROUNDING_MODES}, got {value!r} of type {type(value).__name__}")
    if value not in ROUNDING_MODES:
        raise ValueError(f"{name} must be one of {ROUNDING_MODES}, got {value!r}")
    return value


def check_scale(value: object, name: str = "scale") -> float:
    """A positive finite real number (the initializer's per-layer power of two)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a positive finite number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def check_lr(value: object, name: str = "lr") -> float:
    """A finite real number given as a Python or NumPy scalar."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a finite number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def draws_randomness(mode: str, bits: int) -> bool:
    """Whether a quantizer with rounding ``mode`` at ``bits`` draws random numbers.

    Only ``"stochastic"`` rounding draws, and a full-precision quantizer (``bits == -1``) rounds nothing.
    """
    return mode == "stochastic" and bits != FULL_PRECISION
