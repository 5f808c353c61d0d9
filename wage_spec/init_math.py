"""The WAGE initializer's arithmetic (docs/contract.md §3), shared by both packages.

Reference: QPyTorch's ``examples/WAGE/models/wage_initializer.py`` (``scale_limit`` with
``beta = 1.5``), after Wu et al., "Training and Inference with Integers in Deep Neural Networks",
ICLR 2018, Sec. 3.3.1 (Eq. 6-7: ``W ~ U(-L, L)``, ``L = max(L_min, L_float)``,
``alpha = max(2^round(log2(L_min / L_float)), 1)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from wage_spec.validation import check_bits, check_scale


def fan_in(shape: Sequence[int], *, layout: str = "torch") -> int:
    """Fan-in of a kernel of ``shape``.

    ``layout="torch"``: ``(out, in)`` or ``(out, in, *spatial)`` as ``nn.Linear`` / ``nn.Conv2d``
    store weights. ``layout="flax"``: ``(in, out)`` or ``(*spatial, in, out)`` as Flax stores kernels.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"the kernel must have at least 2 dimensions, got shape {shape}")
    if layout == "torch":
        fan = shape[1] * math.prod(shape[2:])
    elif layout == "flax":
        fan = math.prod(shape[:-1])
    else:
        raise ValueError(f"layout must be 'torch' or 'flax', got {layout!r}")
    if fan <= 0:
        raise ValueError(f"the kernel's fan-in must be positive, got shape {shape}")
    return fan


def float_init_limit(fan: int, factor: float = 2.0) -> float:
    """The float baseline's uniform limit ``sqrt(3 * factor / fan)`` (``U(-limit, limit)`` has variance
    ``factor / fan``); also the ``L_float`` of WAGE's initializer.

    Args:
        fan: the kernel's fan-in, a positive int.
        factor: the variance factor, a positive finite number (2.0 as ``wage_init_``; the paper's models 1.0).

    Returns:
        the limit, a float.

    Raises:
        TypeError, ValueError: a bad ``factor``; ``fan <= 0``.

    References:
        Wu et al., ICLR 2018, Sec. 3.3.1 (Eq. 6); He et al., ICCV 2015.

    Examples:
        >>> float_init_limit(48, 1.0)
        0.25
    """
    factor = check_scale(factor, "factor")
    if int(fan) <= 0:
        raise ValueError(f"fan_in must be positive, got {fan}")
    return math.sqrt(3.0 * factor / fan)


def wage_init_limits(fan: int, bits_W: int, factor: float = 2.0) -> tuple[float, float]:
    """Return ``(L, scale)``: the uniform limit and the per-layer power-of-two scale.

    ``float_limit = sqrt(3 * factor / fan)``, ``Wm = 1.5 / 2^(bits_W - 1)``,
    ``scale = max(2^round(log2(Wm / float_limit)), 1)``, ``L = max(Wm, float_limit)``.
    ``round`` is NumPy's (half to even), as the reference computes it.
    """
    bits_W = check_bits(bits_W, "bits_W")
    float_limit = float_init_limit(fan, factor)
    wm = 1.5 / 2.0 ** (bits_W - 1)
    # Python's round() is half-to-even like np.round; an exact tie needs Wm/float_limit = 2^(k+1/2).
    scale = max(2.0 ** round(math.log2(wm / float_limit)), 1.0)
    return max(wm, float_limit), scale
