"""The WAGE quantizers on qtorch, with the documented API of ``xbtorch.quant.wage_qtorch``.

Wu, Li, Chen and Shi, "Training and Inference with Integers in Deep Neural Networks", ICLR 2018.
Names, parameter order, defaults and behaviour follow the documented module (QPyTorch's
``examples/WAGE/wage_qtorch.py``), with the two fixes that ``docs/contract.md`` §2 makes the contract:

* ``shift`` takes its exponent exactly from the bits of ``max|x|`` (the reference's float32
  ``log2`` rounds down just above a power of two) and returns an all-zero tensor unchanged (the
  reference returns ``0/0 = NaN``);
* NaN or Inf reaching ``shift`` or ``QG`` raises ``ValueError`` (the reference silently turns the
  weights into NaN).

Every function takes a floating-point tensor of any shape. qtorch computes in float32 only: float16,
bfloat16 and float64 inputs are converted to float32, computed, and returned in their own dtype.

The fixed-point rounding runs on the backend of ``wage_torch.backend`` (qtorch by default, or
``wage_torch.torch_kernels`` with ``set_backend("torch")`` / ``WAGE_TORCH_BACKEND=torch``), chosen at
each call; qtorch is imported only when first used.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec

import numpy as np
import torch
from torch import nn

from wage_spec import (
    check_bits,
    check_clip_bits,
    check_lr,
    check_mode,
    check_scale,
    clip_delta,
    qg_norm,
    qw_divides_by_scale,
)
from wage_torch import torch_kernels
from wage_torch.backend import get_backend, qtorch_modules

__all__ = ["C", "QG", "QW", "FixedPointFormat", "WAGEQuantizer", "shift"]

_P = ParamSpec("_P")

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _as_float32(x: object, name: str = "x") -> torch.Tensor:
    """Validate ``x`` and return it as a contiguous float32 tensor (qtorch's only dtype)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got {x.dtype}"
        )
    return x.to(torch.float32).contiguous()


def _fixed_point_quantize(
    x: torch.Tensor, wl: int, fl: int, clamp: bool, symmetric: bool, rounding: str
) -> torch.Tensor:
    """qtorch's ``fixed_point_quantize`` on the selected backend (``x`` float32)."""
    if get_backend() == "qtorch":
        quant = qtorch_modules()[1]
        return quant.fixed_point_quantize(x, wl=wl, fl=fl, clamp=clamp, symmetric=symmetric, rounding=rounding)
    return torch_kernels.fixed_point_quantize(x, wl, fl, clamp=clamp, symmetric=symmetric, rounding=rounding)


def _pow2(k: torch.Tensor) -> torch.Tensor:
    """``2**k`` as float32 for an int32 ``k`` in [-126, 127], built from its bits: exact by construction."""
    return ((k + 127) << 23).to(torch.int32).view(torch.float32)


def _shift_f32(x: torch.Tensor, name: str) -> torch.Tensor:
    """``shift`` of a float32 tensor; ``name`` is the argument a NaN/Inf error names."""
    if x.numel() == 0:
        return x
    m = x.abs().max()
    if not torch.isfinite(m):
        raise ValueError(f"{name} contains NaN or Inf: WAGE's shift needs finite values")
    if m == 0:
        # contract §2 fix: the reference divides 0 by 2^-inf and returns NaN.
        return x
    # k = ceil(log2 m), exactly: m = f * 2^e with f in [0.5, 1), and log2 m is an integer iff f == 0.5.
    f, e = torch.frexp(m)
    k = e.to(torch.int32) - (f == 0.5).to(torch.int32)
    # k lies in [-148, 128]; 2^k is a normal float32 only in [-126, 127]. Divide in two exact steps:
    # first by the small remainder (exact scaling for finite x), then by the normal power of two.
    k1 = k.clamp(-126, 127)
    return (x / _pow2(k - k1)) / _pow2(k1)


def shift(x: torch.Tensor) -> torch.Tensor:
    """Scale ``x`` by the power of two that brings ``max|x|`` into ``(1/2, 1]``.

    ``shift(x) = x / 2^k``, ``k = ceil(log2(max|x|))`` computed exactly (WAGE Eq. 9's ``Shift``).

    Args:
        x: a floating-point tensor of any shape, finite.

    Returns:
        a tensor of ``x``'s shape and dtype; an all-zero or empty ``x`` is returned unchanged.

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: ``x`` holds NaN or Inf.

    References:
        Wu et al., "Training and Inference with Integers in Deep Neural Networks", ICLR 2018, Eq. 9;
        docs/contract.md §2.

    Examples:
        >>> import torch
        >>> shift(torch.tensor([3.0, -1.0, 0.5]))
        tensor([ 0.7500, -0.2500,  0.1250])
    """
    x32 = _as_float32(x)
    return _shift_f32(x32, "x").to(x.dtype)


def C(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Clip ``x`` to ``[-1 + d, 1 - d]``, ``d = 2^-(bits-1)`` (WAGE Eq. 4's ``Clip``).

    ``d = 0`` when ``bits > 15`` or ``bits == 1``, as the reference has it.

    Args:
        x: a floating-point tensor of any shape.
        bits: an int ``>= 1``.

    Returns:
        a tensor of ``x``'s shape and dtype.

    Raises:
        TypeError: ``x`` is not a floating-point tensor; ``bits`` is not an int.
        ValueError: ``bits < 1``.

    References:
        Wu et al., ICLR 2018, Eq. 4 (``Clip``); ``wage_spec.clip_delta``.

    Examples:
        >>> import torch
        >>> C(torch.tensor([-2.0, 0.3, 0.9]), 2)
        tensor([-0.5000,  0.3000,  0.5000])
    """
    bits = check_clip_bits(bits, "bits")
    x32 = _as_float32(x)
    delta = clip_delta(bits)
    return torch.clamp(x32, -1.0 + delta, 1.0 - delta).to(x.dtype)


def QW(x: torch.Tensor, bits: int, scale: float = 1.0, mode: str = "nearest") -> torch.Tensor:
    """Quantize weights to ``bits``-bit fixed point in ``[-1 + d, 1 - d]`` (WAGE Eq. 5-7).

    ``FP(x; wl=bits, fl=bits-1, clamp=True, symmetric=True, rounding=mode)``, then divided by the
    layer's ``scale`` when ``scale > 1.8`` (the initializer's power of two, ``alpha`` in Eq. 7).

    Args:
        x: a floating-point tensor of any shape (the weight accumulator).
        bits: an int in [2, 24].
        scale: a positive finite number.
        mode: ``"nearest"`` or ``"stochastic"`` (draws from torch's default generator).

    Returns:
        the weights the forward pass uses, in ``x``'s shape and dtype.

    Raises:
        TypeError: ``x`` is not a floating-point tensor; ``bits``, ``scale`` or ``mode`` of the wrong type.
        ValueError: ``bits``, ``scale`` or ``mode`` out of range.

    References:
        Wu et al., ICLR 2018, Eq. 5-7; ``wage_spec.qw_divides_by_scale`` (the ``scale > 1.8`` rule).

    Examples:
        >>> import torch
        >>> QW(torch.tensor([0.3, -0.8, 0.1]), 2)
        tensor([ 0.5000, -0.5000,  0.0000])
        >>> QW(torch.tensor([0.3, -0.8, 0.1]), 2, scale=4.0)
        tensor([ 0.1250, -0.1250,  0.0000])
    """
    bits = check_bits(bits, "bits")
    scale = check_scale(scale, "scale")
    mode = check_mode(mode, "mode")
    with torch.no_grad():  # the values only: the gradient is the straight-through one below, on both backends
        x32 = _as_float32(x)
        y = _fixed_point_quantize(x32, wl=bits, fl=bits - 1, clamp=True, symmetric=True, rounding=mode)
        if qw_divides_by_scale(scale):
            y = _divide_by_scale(y, scale)
        y = y.to(x.dtype)
    if x.requires_grad and torch.is_grad_enabled():
        return _StraightThrough.apply(x, y)
    return y


def _divide_by_scale(y: torch.Tensor, scale: float) -> torch.Tensor:
    """``y / float32(scale)``, correctly rounded on every device (``y`` float32, ``|y| < 1`` or NaN).

    A power of two ``float32(scale) = 2^e`` never divides: ``y * 2^-e`` is the same correctly rounded
    number (``2^-e``, ``e <= 127``, is a float32; torch keeps subnormals). A scale beyond float32's range
    rounds to Inf and ``y / Inf = y * 0 = ±0`` (NaN stays NaN). Any other scale divides by a float32 tensor on
    ``y``'s device: torch's CUDA kernels replace division by a Python number with multiplication by its
    rounded reciprocal, which is not correctly rounded; a tensor divisor keeps IEEE division
    (docs/contract.md §2).
    """
    with np.errstate(over="ignore"):
        s32 = np.float32(scale)
    if not np.isfinite(s32):
        return y * 0.0
    mantissa, exponent = np.frexp(s32)
    if mantissa == 0.5:
        return y * float(np.float32(2.0 ** (1 - int(exponent))))
    return y / torch.tensor(s32, dtype=torch.float32, device=y.device)


class _StraightThrough(torch.autograd.Function):
    """``y`` in the forward, the identity in ``x`` in the backward (docs/contract.md §2: QW's backward is the
    identity, as ``wage_jax.QW``'s): qtorch's kernel has no autograd, and the pure-torch kernel's rounding
    would give a zero gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return y.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _refuse_qpytorch_qg_form(qg: Callable[_P, torch.Tensor]) -> Callable[_P, torch.Tensor]:
    """Wrap ``QG`` so that QPyTorch's call ``QG(x, bits_G, bits_R, lr, mode)`` fails saying how to port it.

    QPyTorch's example passes ``mode`` by keyword after four positional arguments, which Python itself
    rejects ("got multiple values for argument 'mode'") before ``QG``'s body runs: hence a wrapper.
    """

    @functools.wraps(qg)
    def QG(*args: _P.args, **kwargs: _P.kwargs) -> torch.Tensor:
        if len(args) >= 5 or (len(args) == 4 and ("mode" in kwargs or _is_number(args[3]))):
            given = f"{len(args)} positional arguments" + (" plus mode" if "mode" in kwargs else "")
            raise TypeError(
                f"QG was called with {given}, as QPyTorch's QG(x, bits_G, bits_R, lr, mode) is; this QG is "
                "xbtorch's documented QG(x, bits_G, lr, mode='nearest'): drop bits_R (QPyTorch's QG never reads "
                "it), e.g. QG(x, bits_G, lr, mode=mode); see docs/porting.md"
            )
        return qg(*args, **kwargs)

    return QG


@_refuse_qpytorch_qg_form
def QG(x: torch.Tensor, bits_G: int, lr: float, mode: str = "nearest") -> torch.Tensor:
    """Quantize a gradient into a ``bits_G``-bit weight update (WAGE Eq. 11-12).

    ``FP((lr / 2^(bits_G-1)) * shift(x); wl=bits_G, fl=bits_G-1, clamp=False, symmetric=True)``;
    ``lr / 2^(bits_G-1)`` is formed in double, the product in float32.

    Args:
        x: a floating-point tensor of any shape (a gradient), finite.
        bits_G: an int in [2, 24].
        lr: a finite number.
        mode: ``"nearest"`` or ``"stochastic"`` (draws from torch's default generator).

    Returns:
        the update to subtract from the weight accumulator, in ``x``'s shape and dtype. An all-zero
        gradient gives zeros.

    Raises:
        TypeError: ``x`` is not a floating-point tensor; ``bits_G``, ``lr`` or ``mode`` of the wrong type;
            called the QPyTorch way, ``QG(x, bits_G, bits_R, lr, mode)`` (the message says how to port it).
        ValueError: ``x`` holds NaN or Inf; ``bits_G``, ``lr`` or ``mode`` out of range.

    References:
        Wu et al., ICLR 2018, Eq. 11-12; ``wage_spec.qg_norm`` (the factor ``lr / 2^(bits_G-1)``).

    Examples:
        >>> import torch
        >>> QG(torch.tensor([0.02, -0.01, 0.001]), 8, lr=8.0)  # (8 / 128) * shift(x) on the 2^-7 grid: [5, -3, 0] / 128
        tensor([ 0.0391, -0.0234,  0.0000])
    """
    bits_G = check_bits(bits_G, "bits_G")
    lr = check_lr(lr, "lr")
    mode = check_mode(mode, "mode")
    x32 = _as_float32(x)
    norm = qg_norm(lr, bits_G)
    y = norm * _shift_f32(x32, "x")
    y = _fixed_point_quantize(y.contiguous(), wl=bits_G, fl=bits_G - 1, clamp=False, symmetric=True, rounding=mode)
    return y.to(x.dtype)


def _shift_error(grad: torch.Tensor) -> torch.Tensor:
    """The backward hook: ``shift`` of the incoming error (float32)."""
    return _shift_f32(grad, "the incoming gradient")


@dataclass(frozen=True)
class FixedPointFormat:
    """The fields of ``qtorch.FixedPoint`` (``wl``, ``fl``, ``clamp``, ``symmetric``), used where qtorch is absent.

    ``WAGEQuantizer.activate_number`` / ``error_number`` are ``qtorch.FixedPoint`` objects when qtorch can be
    imported (``import qtorch`` builds nothing), and this record otherwise: the same fields, the same ``repr``.

    Args:
        wl: the word length in bits.
        fl: the fractional length in bits.
        clamp: whether values outside the range are clamped.
        symmetric: whether the range is symmetric (drops ``-2^(wl-fl-1)``).

    References:
        QPyTorch's ``qtorch.FixedPoint``; examples/WAGE/wage_qtorch.py (``FixedPoint(wl=bits, fl=bits - 1,
        clamp=True, symmetric=True)``).

    Examples:
        >>> FixedPointFormat(wl=8, fl=7, clamp=True, symmetric=True)
        FixedPoint (wl=8, fl=7)
    """

    wl: int
    fl: int
    clamp: bool = True
    symmetric: bool = False

    def __repr__(self) -> str:
        return f"FixedPoint (wl={self.wl:d}, fl={self.fl:d})"  # qtorch's repr


def _fixed_point_number(bits: int) -> Any:
    """QPyTorch's number for ``bits``: ``FixedPoint(bits, bits - 1, clamp=True, symmetric=True)``, None at -1."""
    if bits == -1:
        return None
    try:
        from qtorch import FixedPoint  # qtorch/__init__ imports only its number formats: no kernel build
    except ImportError:
        return FixedPointFormat(wl=bits, fl=bits - 1, clamp=True, symmetric=True)
    return FixedPoint(wl=bits, fl=bits - 1, clamp=True, symmetric=True)


class _WAGERounding:
    """``WAGEQuantizer.quantizer``: QPyTorch's ``quantizer(...)`` function, on the backend selected at each call.

    Called as ``quantizer(x)`` (``x`` a floating-point tensor of any shape), it returns ``Q_A(x)`` in ``x``'s
    dtype, whose backward applies ``Q_E`` (WAGE Eq. 8-10). On the qtorch backend it is qtorch's own
    ``quant.quantizer(forward_number=..., backward_number=..., clamping_grad_zero=True, backward_hooks=[shift])``
    (built on first use), on the torch backend ``_TorchRounding`` with the same bits and draws.
    """

    def __init__(self, bits_A: int, bits_E: int, A_mode: str, E_mode: str) -> None:
        self.bits_A, self.bits_E, self.A_mode, self.E_mode = bits_A, bits_E, A_mode, E_mode
        self._qtorch: Any = None  # qtorch's quantizer function, built on first use of the qtorch backend

    def _qtorch_apply(self) -> Any:
        """qtorch's ``quantizer`` function for these bits and modes (built once)."""
        if self._qtorch is None:
            _, quant = qtorch_modules()
            self._qtorch = quant.quantizer(
                forward_number=_fixed_point_number(self.bits_A),
                forward_rounding=self.A_mode,
                backward_number=_fixed_point_number(self.bits_E),
                backward_rounding=self.E_mode,
                clamping_grad_zero=True,
                backward_hooks=[_shift_error],
            )
        return self._qtorch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x32 = _as_float32(x)
        if get_backend() == "qtorch":
            return self._qtorch_apply()(x32).to(x.dtype)
        return _TorchRounding.apply(x32, self.bits_A, self.bits_E, self.A_mode, self.E_mode).to(x.dtype)

    def __getstate__(self) -> dict[str, Any]:
        # qtorch's quantizer is a closure (not picklable): rebuilt on first use after unpickling or deepcopy.
        return {**self.__dict__, "_qtorch": None}

    def __repr__(self) -> str:
        return (
            f"WAGE quantizer(bits_A={self.bits_A}, bits_E={self.bits_E}, A_mode={self.A_mode!r}, "
            f"E_mode={self.E_mode!r})"
        )


class WAGEQuantizer(nn.Module):
    """Quantize activations in the forward pass and errors in the backward pass (WAGE Eq. 8-10).

    forward: ``FP(x; bits_A, bits_A-1, clamp=True, symmetric=True, A_mode)`` (identity when
    ``bits_A == -1``), remembering which elements were clamped.
    backward: ``FP(shift(g); bits_E, bits_E-1, clamp=True, symmetric=True, E_mode)``, zeroed where the
    forward clamped; ``bits_E == -1`` passes ``g`` unchanged.

    Args:
        bits_A: activation bits, an int in [2, 24] or -1 (full precision).
        bits_E: error bits, an int in [2, 24] or -1 (full precision).
        A_mode: ``"nearest"`` or ``"stochastic"``.
        E_mode: ``"nearest"`` or ``"stochastic"``.

    Shape: any; the output has the input's shape and dtype.

    Attributes:
        quantizer: the function ``forward`` applies, ``quantizer(x)`` (QPyTorch's attribute; runs on the backend
            selected at each call).
        activate_number, error_number: QPyTorch's number formats, ``FixedPoint(wl=bits, fl=bits - 1,
            clamp=True, symmetric=True)`` (``qtorch.FixedPoint``, or ``FixedPointFormat`` with the same fields
            where qtorch is not installed); None for -1 bits.

    Raises:
        TypeError, ValueError: (at construction) bits or modes of the wrong type or out of range;
            (forward) ``x`` is not a floating-point tensor; (backward) the error holds NaN or Inf.

    References:
        Wu et al., ICLR 2018, Eq. 8-10.

    Examples:
        >>> import torch
        >>> q = WAGEQuantizer(bits_A=2, bits_E=8)
        >>> x = torch.tensor([0.3, -2.0, 0.1], requires_grad=True)
        >>> y = q(x)
        >>> y.detach()
        tensor([ 0.5000, -0.5000,  0.0000])
        >>> y.backward(torch.tensor([0.5, 0.5, 0.25]))
        >>> x.grad  # shift(g) = [1, 1, 0.5] on the 8-bit grid (clamped to 127/128), 0 where the forward clamped
        tensor([0.9922, 0.0000, 0.5000])
    """

    def __init__(self, bits_A: int, bits_E: int, A_mode: str = "nearest", E_mode: str = "nearest") -> None:
        super().__init__()
        self.bits_A = check_bits(bits_A, "bits_A", allow_full_precision=True)
        self.bits_E = check_bits(bits_E, "bits_E", allow_full_precision=True)
        self.A_mode = check_mode(A_mode, "A_mode")
        self.E_mode = check_mode(E_mode, "E_mode")
        # QPyTorch's public attributes (examples/WAGE/wage_qtorch.py): the quantizer function that forward
        # applies, and (properties below) the number formats. Code that reads them runs unchanged.
        self.quantizer = _WAGERounding(self.bits_A, self.bits_E, self.A_mode, self.E_mode)

    @property
    def activate_number(self) -> Any:
        """QPyTorch's attribute: the activations' format ``FixedPoint(bits_A, bits_A - 1, clamp=True,
        symmetric=True)`` (``qtorch.FixedPoint``, or ``FixedPointFormat`` without qtorch), None when ``bits_A == -1``.

        A property, so that constructing the module never imports qtorch (the torch backend needs none).
        """
        return _fixed_point_number(self.bits_A)

    @property
    def error_number(self) -> Any:
        """QPyTorch's attribute: the errors' format, as ``activate_number`` for ``bits_E`` (None for -1 bits)."""
        return _fixed_point_number(self.bits_E)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``Q_A(x)`` (``x`` a floating-point tensor of any shape); the backward pass applies ``Q_E``."""
        return self.quantizer(x)

    def extra_repr(self) -> str:
        """The bits and modes, shown by ``repr``."""
        return f"bits_A={self.bits_A}, bits_E={self.bits_E}, A_mode={self.A_mode!r}, E_mode={self.E_mode!r}"


class _TorchRounding(torch.autograd.Function):
    """qtorch's ``quantizer(..., clamping_grad_zero=True, backward_hooks=[shift])`` on the torch kernels.

    The same steps, in the same order (so the same ``rand_like`` draws): forward rounds with the clamp
    mask (no mask, no draw for ``bits_A == -1``); backward passes ``g`` unchanged for ``bits_E == -1``,
    else ``FP(shift(g))`` zeroed where the mask is set.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bits_A: int, bits_E: int, A_mode: str, E_mode: str) -> torch.Tensor:
        if bits_A == -1:
            out, mask = x.clone(), torch.zeros_like(x, dtype=torch.bool)
        else:
            out, mask = torch_kernels.fixed_point_quantize_with_mask(x, bits_A, bits_A - 1, True, A_mode)
        ctx.save_for_backward(mask)
        ctx.bits_E, ctx.E_mode = bits_E, E_mode
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        if ctx.bits_E == -1:
            return grad_output, None, None, None, None
        (mask,) = ctx.saved_tensors
        g = _shift_error(grad_output.to(torch.float32).contiguous())
        g = torch_kernels.fixed_point_quantize(g, ctx.bits_E, ctx.bits_E - 1, True, True, ctx.E_mode)
        return g.masked_fill(mask, 0), None, None, None, None
