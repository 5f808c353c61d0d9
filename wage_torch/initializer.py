"""The WAGE weight initializer for torch tensors (docs/contract.md §3), as ``xbtorch.quant.wage_init`` has it."""

from __future__ import annotations

import inspect
from collections.abc import MutableMapping
from typing import Any, overload

import torch

from wage_spec import fan_in as _fan_in
from wage_spec import wage_init_limits

__all__ = ["wage_init_"]


def _xbtorch_form(tensor: torch.Tensor, bits_W: int, factor: float = 2.0, mode: str = "fan_in") -> None:
    """The documented (xbtorch) signature of ``wage_init_``."""


def _qpytorch_form(
    tensor: torch.Tensor,
    bits_W: int,
    name: str,
    scale_dict: MutableMapping[str, float],
    factor: float = 2.0,
    mode: str = "fan_in",
) -> None:
    """QPyTorch's signature (examples/WAGE/models/wage_initializer.py): the scale goes to ``scale_dict[name]``."""


_XBTORCH = inspect.signature(_xbtorch_form)
_QPYTORCH = inspect.signature(_qpytorch_form)


@overload
def wage_init_(tensor: torch.Tensor, bits_W: int, factor: float = 2.0, mode: str = "fan_in") -> float: ...


@overload
def wage_init_(
    tensor: torch.Tensor,
    bits_W: int,
    name: str,
    scale_dict: MutableMapping[str, float],
    factor: float = 2.0,
    mode: str = "fan_in",
) -> float: ...


def wage_init_(tensor: torch.Tensor, bits_W: int, *args: Any, **kwargs: Any) -> float:
    """Fill ``tensor`` in place from ``U(-L, L)`` and set ``tensor.weight_scale`` (WAGE Eq. 6-7).

    ``float_limit = sqrt(3 * factor / fan_in)``, ``Wm = 1.5 / 2^(bits_W - 1)``,
    ``L = max(Wm, float_limit)``, ``weight_scale = max(2^round(log2(Wm / float_limit)), 1)``.

    Two call forms: the documented one, ``wage_init_(tensor, bits_W, factor=2.0, mode="fan_in")``, and
    QPyTorch's, ``wage_init_(tensor, bits_W, name, scale_dict, factor=2.0, mode="fan_in")`` (told apart by a
    ``str`` third argument, or ``name=``/``scale_dict=`` keywords), which also stores the scale in
    ``scale_dict[name]`` as QPyTorch's example does.

    Args:
        tensor: a weight of shape ``(out, in)`` or ``(out, in, *kernel)``, floating point.
        bits_W: weight bits, an int in [2, 24].
        name: (QPyTorch's form) the key under which the scale is stored, a ``str``.
        scale_dict: (QPyTorch's form) a mutable mapping (a ``dict``) that receives ``scale_dict[name] = scale``.
        factor: the variance factor, positive. The default 2.0 is the documented ``wage_init_``'s; the
            paper's models use 1.0 (``WAGEConfig.factor``, passed by ``wage_torch.models``).
        mode: only ``"fan_in"``.

    Returns:
        the layer's scale (also stored as ``tensor.weight_scale``), a power of two ``>= 1``.

    Raises:
        TypeError: ``tensor`` is not a floating-point tensor; ``bits_W`` or ``factor`` of the wrong type;
            ``scale_dict`` is not a mutable mapping; arguments that fit neither form.
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
        >>> scales = {}
        >>> wage_init_(torch.empty(10, 64), 2, "fc.weight", scales, factor=1.0)  # QPyTorch's form
        4.0
        >>> scales
        {'fc.weight': 4.0}
    """
    qpytorch = (bool(args) and isinstance(args[0], str)) or "name" in kwargs or "scale_dict" in kwargs
    form = _QPYTORCH if qpytorch else _XBTORCH
    try:
        bound = form.bind(tensor, bits_W, *args, **kwargs)
    except TypeError as error:
        raise TypeError(
            f"wage_init_: {error}; the forms are wage_init_(tensor, bits_W, factor=2.0, mode='fan_in') and "
            "QPyTorch's wage_init_(tensor, bits_W, name, scale_dict, factor=2.0, mode='fan_in')"
        ) from None
    bound.apply_defaults()
    given = bound.arguments
    factor, mode = given["factor"], given["mode"]
    scale_dict = given.get("scale_dict")
    if qpytorch and not isinstance(given["name"], str):
        raise TypeError(f"name must be a str (the key of scale_dict), got {type(given['name']).__name__}")
    if qpytorch and not isinstance(scale_dict, MutableMapping):
        raise TypeError(f"scale_dict must be a mutable mapping such as a dict, got {type(scale_dict).__name__}")
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
    if scale_dict is not None:
        scale_dict[given["name"]] = scale
    return scale
