"""qtorch's fixed-point CPU kernel written with plain torch operations (docs/contract.md §1).

The same bits as ``qtorch/quant/quant_cpu/quant_cpu.cpp`` on every float32 input (signs of zero,
subnormals, Inf and NaN included), on any torch device, with no C++ build. Per element, with
``y = x * 2^fl`` (exact) and ``s = float32(y + r)``, the kernel returns ``q * 2^-fl`` with
``q = nearbyint(double(s) - 0.5)`` (round half to even), then clamps. ``s - 0.5`` is not exact in
float32, so ``q`` is formed without it, exactly, from ``floor(s)``:

* ``s`` not an integer: ``q = floor(s)`` (``s - 0.5`` lies strictly between two half-integers);
* ``s`` an integer: ``s - 0.5`` is a tie between ``s - 1`` and ``s``: ``q`` is the even one,
  ``2 * floor(s / 2)`` (``s / 2`` is exact);
* a zero ``q`` takes the sign of ``s - 0.5`` (``nearbyint(-0.3) = -0.0``): ``-0`` when ``s < 0.5``;
* ``double(s) - 0.5`` itself rounds when ``s`` lies in ``[-2^-54, 0)`` (only when a draw ``r = 0`` meets a tiny
  negative ``y``): it becomes ``-0.5`` and ``q = -0``, not ``-1``.

Stochastic rounding draws ``r = torch.rand_like(x)`` from torch's default generator (the
generator of ``x``'s device), exactly as qtorch does: the same call, on the same shape, in the same
order, so a seeded run gives the same bits with either kernel.
"""

from __future__ import annotations

import torch

__all__ = ["draw", "fixed_point_quantize", "fixed_point_quantize_with_mask", "fixed_range"]


def draw(x: torch.Tensor) -> torch.Tensor:
    """The stochastic-rounding draw: ``torch.rand_like(x)``, qtorch's call (a hook for device parity checks).

    Args:
        x: a float32 tensor of any shape, on any device.

    Returns:
        uniform draws in ``[0, 1)`` of ``x``'s shape, dtype and device, from torch's default generator.

    References:
        docs/contract.md §1 (stochastic rounding adds one draw per element); Wu et al., ICLR 2018, Eq. 1.

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> r = draw(torch.zeros(3))
        >>> r.shape, bool(((r >= 0) & (r < 1)).all())
        (torch.Size([3]), True)
    """
    return torch.rand_like(x)


def fixed_range(wl: int, fl: int, symmetric: bool) -> tuple[float, float]:
    """``(t_min, t_max)`` of qtorch's ``fixed_min_max``.

    ``t_min = -2^(wl-fl-1)`` (``+ 2^-fl`` if ``symmetric``), ``t_max = 2^(wl-fl-1) - 2^-fl``.

    Args:
        wl: word length; fl: fractional length (ints, as qtorch takes them; not checked here).
        symmetric: raise ``t_min`` by ``2^-fl``.

    Returns:
        ``(t_min, t_max)``, floats.

    References:
        docs/contract.md §1; Wu et al., ICLR 2018, Eq. 1 (the symmetric range ``[-1 + 2^-fl, 1 - 2^-fl]``).

    Examples:
        >>> fixed_range(8, 7, symmetric=True)
        (-0.9921875, 0.9921875)
    """
    t_min = -(2.0 ** (wl - fl - 1))
    t_max = -t_min - 2.0**-fl
    if symmetric:
        t_min = t_min + 2.0**-fl
    return t_min, t_max


def _round(x: torch.Tensor, fl: int, rounding: str) -> torch.Tensor:
    """``nearbyint(double(float32(x * 2^fl + r)) - 0.5) * 2^-fl`` in float32, exactly; ``x`` float32 contiguous."""
    y = x * (2.0**fl)  # exact: a power-of-two scaling (overflow gives Inf, as ldexp does)
    r = draw(x) if rounding == "stochastic" else 0.5
    s = y + r  # the kernel's float32 addition
    # floor(s), except that s in [-2^-54, 0) gives 0: there double(s) - 0.5 rounds to -0.5 in double
    # (possible only when r == 0 is drawn), whose nearbyint is -0. Adding 2^-54 changes no other floor.
    f = torch.floor(s + 2.0**-54)
    q = torch.where(f == s, torch.floor(s * 0.5) * 2.0, f)  # an integer s: the even one of s - 1 and s
    q = torch.copysign(q, s - 0.5)  # a zero q takes the sign of s - 0.5
    return q * (2.0**-fl)  # exact: q is an integer below 2^25 in magnitude, or Inf/NaN


def fixed_point_quantize(
    x: torch.Tensor, wl: int, fl: int, clamp: bool = True, symmetric: bool = False, rounding: str = "stochastic"
) -> torch.Tensor:
    """qtorch's ``fixed_point_quantize`` (CPU kernel): round to ``fl`` fractional bits, then clamp.

    Args:
        x: a float32 tensor of any shape, on any device.
        wl: word length; fl: fractional length (``2^-fl`` is the step).
        clamp: clamp the rounded value to ``[t_min, t_max]`` (see ``fixed_range``).
        symmetric: raise ``t_min`` by ``2^-fl``.
        rounding: ``"nearest"`` or ``"stochastic"`` (one ``torch.rand_like(x)`` draw).

    Returns:
        a float32 tensor of ``x``'s shape.

    References:
        docs/contract.md §1; qtorch's ``quant_cpu.cpp``; Wu et al., ICLR 2018, Eq. 1.

    Examples:
        >>> import torch
        >>> fixed_point_quantize(torch.tensor([0.3, 0.75, -2.0]), 2, 1, symmetric=True, rounding="nearest")
        tensor([ 0.5000,  0.5000, -0.5000])
    """
    x = x.contiguous()
    out = _round(x, fl, rounding)
    if clamp:
        t_min, t_max = fixed_range(wl, fl, symmetric)
        out = torch.clamp(out, t_min, t_max)
    return out


def fixed_point_quantize_with_mask(
    x: torch.Tensor, wl: int, fl: int, symmetric: bool = False, rounding: str = "stochastic"
) -> tuple[torch.Tensor, torch.Tensor]:
    """qtorch's ``fixed_point_quantize_{nearest,stochastic}_mask``: clamped result and its clamp mask.

    Args:
        x, wl, fl, symmetric, rounding: as for :func:`fixed_point_quantize` (the result is always clamped).

    Returns:
        ``(out, mask)``: ``out`` float32 of ``x``'s shape; ``mask`` bool, set where the rounded value lay
        outside ``[t_min, t_max]`` (NaN is never masked, as in the kernel).

    References:
        docs/contract.md §1; WAGE's error quantizer (Eq. 10) zeroes the errors where this mask is set.

    Examples:
        >>> import torch
        >>> fixed_point_quantize_with_mask(torch.tensor([0.3, -2.0]), 2, 1, symmetric=True, rounding="nearest")
        (tensor([ 0.5000, -0.5000]), tensor([False,  True]))
    """
    x = x.contiguous()
    rounded = _round(x, fl, rounding)
    t_min, t_max = fixed_range(wl, fl, symmetric)
    mask = (rounded > t_max) | (rounded < t_min)
    return torch.clamp(rounded, t_min, t_max), mask
