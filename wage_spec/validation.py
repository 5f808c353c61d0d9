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


# An lr above this is refused: QG's update is ``lr / 2^(bits_G-1)`` times a number of magnitude <= 1, and
# the accumulators live in [-1, 1]; the paper's largest lr is 8. The bound only catches typos (1e9 for 1e-9)
# and overflow; any lr a WAGE run can use lies far below it.
MAX_LR = 2.0**24


def check_lr(value: object, name: str = "lr") -> float:
    """A finite real number given as a Python or NumPy scalar (``wage_torch.QG``'s documented contract).

    Args:
        value: the learning rate.
        name: the argument's name, for the message.

    Returns:
        ``value`` as a float.

    Raises:
        TypeError: ``value`` is not a real number (or is a bool).
        ValueError: ``value`` is NaN or infinite.

    Examples:
        >>> check_lr(-2)
        -2.0
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a finite number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def check_learning_rate(value: object, name: str = "lr") -> float:
    """A learning rate for WAGE's update: finite, ``> 0`` and at most ``MAX_LR`` (``2^24``).

    ``wage_jax.QG`` and ``wage_jax.scale_by_qg`` use it; ``wage_torch.QG`` keeps its documented
    ``check_lr`` (any finite lr, zero and negative included).

    Args:
        value: the learning rate (a Python or NumPy real scalar).
        name: the argument's name, for the message.

    Returns:
        ``value`` as a float.

    Raises:
        TypeError: ``value`` is not a real number (or is a bool).
        ValueError: ``value`` is NaN, infinite, ``<= 0`` or above ``MAX_LR``.

    Examples:
        >>> check_learning_rate(8)
        8.0
        >>> check_learning_rate(0.0)
        Traceback (most recent call last):
        ...
        ValueError: lr must be a finite number in (0, 2^24], got 0.0
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a finite number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and 0 < value <= MAX_LR):
        raise ValueError(f"{name} must be a finite number in (0, 2^24], got {value}")
    return value


def check_randomness(needed: bool, has_key: bool, has_noise: bool, *, mode_name: str, noise_name: str) -> None:
    """"Key or noise, not both": the one rule for where a stochastic quantizer's draws come from.

    Args:
        needed: whether the quantizer draws (``draws_randomness(mode, bits)``).
        has_key: whether a PRNG key was passed.
        has_noise: whether explicit uniform draws were passed.
        mode_name: the name of the rounding-mode argument (``"rounding"``, ``"A_mode"``, ...), for the message.
        noise_name: the name of the noise argument (``"noise"``, ``"noise_E"``, ...), for the message.

    Raises:
        ValueError: both a key and noise were passed; or the mode draws and neither was passed; or
            noise was passed to a quantizer that does not draw.

    Examples:
        >>> check_randomness(True, True, False, mode_name="E_mode", noise_name="noise_E")
        >>> check_randomness(True, True, True, mode_name="E_mode", noise_name="noise_E")
        Traceback (most recent call last):
        ...
        ValueError: pass either key or noise_E for E_mode='stochastic', not both
    """
    what = "stochastic rounding" if mode_name == "rounding" else f"{mode_name}='stochastic'"
    if has_key and has_noise:
        raise ValueError(f"pass either key or {noise_name} for {what}, not both")
    if needed and not (has_key or has_noise):
        raise ValueError(
            f"{what} needs randomness: pass key (a jax.random key) or {noise_name} (uniform draws in [0, 1))"
        )
    if not needed and has_noise:
        raise ValueError(f"{noise_name} is only used when {mode_name}='stochastic' and its bits are not -1")


def draws_randomness(mode: str, bits: int) -> bool:
    """Whether a quantizer with rounding ``mode`` at ``bits`` draws random numbers.

    Only ``"stochastic"`` rounding draws, and a full-precision quantizer (``bits == -1``) rounds nothing.
    """
    return mode == "stochastic" and bits != FULL_PRECISION
