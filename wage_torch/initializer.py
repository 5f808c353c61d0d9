"""The WAGE weight initializer for torch tensors (docs/contract.md §3), as ``xbtorch.quant.wage_init`` has it."""

from __future__ import annotations

import torch

from wage_spec import fan_in as _fan_in
from wage_spec import wage_init_limits

__all__ = ["wage_init_"]


def wage_init_(tensor: torch.Tensor, bits_W: int, factor: float = 2.0, mode: str = "fan_in") -> float:
    """Fill ``tensor`` in place from ``U(-L, L)`` and set ``tensor.weight_scale`` (WAGE Eq. 6-7).

    ``float_limit = sqrt(3 * factor / fan_in)``, ``Wm = 1.5 / 2^(bits_W - 1)``,
    ``L = max(Wm, float_limit)``, ``weight_scale = max(2^round(log2(Wm / float_limit)), 1)``.

    Args:
        tensor: a weight of shape ``(out, in)`` or ``(out, in, *kernel)``, floating point.
        bits_W: weight bits, an int in [2, 24].
        factor: the variance factor, positive. The default 2.0 is the documented ``wage_init_``'s; the
            paper's models use 1.0 (``WAGEConfig.factor``, passed by ``wage_torch.models``).
        mode: only ``"fan_in"``.

    Returns:
        the layer's scale (also stored as ``tensor.weight_scale``), a power of two ``>= 1``.

    Raises:
        TypeError: ``tensor`` is not a floating-point tensor; ``bits_W`` or ``factor`` of the wrong type.
        ValueError: ``bits_W`` or ``factor`` out of range; ``mode`` is not ``"fan_in"``; ``tensor`` has
            fewer than 2 dimensions.

    References:
        Wu et al., ICLR 2018, Sec. 3.3.1, Eq. 6-7; ``wage_spec.wage_init_limits``; docs/contract.md §3.

    Examples:
        >>> import torch
        >>> w = torch.empty(10, 64)
        >>> wage_init_(w, bits_W=2)  # float_limit = sqrt(6 / 64) ~ 0.31, Wm = 0.75: 2^round(log2 2.45)
        2.0
        >>> w.weight_scale, bool(w.abs().max() <= 0.75)
        (2.0, True)
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"tensor must be floating point, got {tensor.dtype}")
    if mode != "fan_in":
        raise ValueError(f"mode must be 'fan_in' (the only mode WAGE defines), got {mode!r}")
    limit, scale = wage_init_limits(_fan_in(tensor.shape, layout="torch"), bits_W, factor)
    with torch.no_grad():
        tensor.uniform_(-limit, limit)
    tensor.weight_scale = scale
    return scale
