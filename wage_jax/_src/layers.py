"""The WAGE layers' arithmetic: ``dot_general`` and ``conv_general_dilated`` with ``QW(kernel)``.

Flax's stock layers take their contraction as an argument (``nn.Dense(dot_general=...)``,
``nn.Conv(conv_general_dilated=...)``, the same on ``nnx.Linear``/``nnx.Conv``), the hook AQT uses to
quantize. ``wage_dot_general`` and ``wage_conv_general_dilated`` are such functions: the kernel parameter is
the weight accumulator, the contraction uses ``QW(kernel, bits_W, scale)`` (WAGE Eq. 5-7), and ``QW``'s
straight-through derivative gives the accumulator the gradient of the quantized weights (what the
reference's ``param.data = QW(w_acc)`` amounts to). ``scale`` is the layer's power of two, a static
function of the kernel's fan-in (``wage_spec.wage_init_limits``), the same the WAGE initializer uses.
With ``wage_kernel_init(bits_W, factor)`` as the layer's ``kernel_init`` and no bias, a stock layer is a
WAGE layer, bit for bit ``wage_jax.linen.WAGEDense``/``WAGEConv`` (which are built on these functions).

With quantized operands every product is exact and, within the bounds stated in the parity tests,
every sum too, so matmuls and convolutions give the same bits in any summation order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from wage_jax._src.conv_lowering import check_lowering, conv_patches, explicit_pads
from wage_jax._src.functional import QW
from wage_jax._src.integer import check_sums, integer_conv, integer_dense
from wage_spec import FULL_PRECISION, check_bits, check_mode, wage_init_limits

__all__ = [
    "conv_padding",
    "positive_pair",
    "max_pool_2x2",
    "wage_conv_general_dilated",
    "wage_dot_general",
]

def conv_padding(padding: str | int | Sequence[int] | Sequence[tuple[int, int]]) -> str | tuple[tuple[int, int], ...]:
    """Flax's padding forms for a 2-D convolution, as ``lax.conv_general_dilated`` takes them.

    Args:
        padding: ``"SAME"`` or ``"VALID"`` (any case); an int ``p`` (``p`` on every side); a sequence
            of two ints (``(p, p)`` per spatial dimension); or a sequence of two ``(lo, hi)`` pairs.

    Returns:
        ``"SAME"``/``"VALID"``, or a tuple of two ``(lo, hi)`` int pairs.

    Raises:
        ValueError: an unknown string (Flax's ``"CIRCULAR"``/``"CAUSAL"`` are not supported), a wrong
            number of entries, or a negative or non-integer width.
    """
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID', an int or a sequence of ints or (lo, hi) pairs, "
                             f"got {padding!r}")
        return padding.upper()
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        padding = (int(padding), int(padding))
    try:
        entries = list(padding)
    except TypeError:
        raise ValueError(f"padding must be a str, an int or a sequence, got {padding!r}") from None
    if len(entries) != 2:
        raise ValueError(f"padding needs one entry per spatial dimension (2), got {padding!r}")
    pairs = [(e, e) if isinstance(e, (int, np.integer)) else tuple(e) for e in entries]
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
                                     for v in pair):
            raise ValueError(f"padding entries must be non-negative ints or (lo, hi) pairs of them, got {padding!r}")
    return tuple((int(lo), int(hi)) for lo, hi in pairs)


def positive_pair(value: int | Sequence[int], name: str = "kernel_size") -> tuple[int, int]:
    """A convolution's ``kernel_size`` or ``strides`` (``name``) as ``(h, w)``: an int ``k`` means ``(k, k)``;
    raises ValueError naming the argument otherwise (a float, a bool, a length other than 2, a value < 1)."""
    pair = (value, value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        size = tuple(pair)
    except TypeError:
        raise ValueError(f"{name} must be a positive int or two positive ints, got {value!r}") from None
    if len(size) != 2 or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k > 0 for k in size):
        raise ValueError(f"{name} must be a positive int or two positive ints, got {value!r}")
    return int(size[0]), int(size[1])


def check_integer(integer: object) -> bool | str:
    """The layers' ``integer`` validated: ``False``, ``True`` (int32 sums where float32 is exact) or ``"int32"``
    (int32 sums wherever they fit: ``wage_jax.integer``'s ``sums="int32"``)."""
    if isinstance(integer, (bool, np.bool_)):
        return bool(integer)
    if integer == "int32":
        return "int32"
    raise TypeError(f"integer must be a bool or 'int32', got {integer!r}")


def _sums(integer: bool | str) -> str:
    """The integer functions' ``sums`` for a validated ``integer``."""
    return "int32" if integer == "int32" else "float32"


def _checked_options(bits_W: int, factor: float, W_mode: str, integer: bool | str, bits_A: int,
                     bits_E: int) -> tuple:
    bits_W = check_bits(bits_W, "bits_W")
    W_mode = check_mode(W_mode, "W_mode")
    wage_init_limits(1, bits_W, factor)  # validates factor (a positive, finite number)
    integer = check_integer(integer)
    bits_A = check_bits(bits_A, "bits_A", allow_full_precision=True)
    bits_E = check_bits(bits_E, "bits_E", allow_full_precision=True)
    return bits_W, float(factor), W_mode, integer, bits_A, bits_E


def _quantized_kernel(kernel: jax.Array, fan: int, bits_W: int, factor: float, W_mode: str,
                      key: jax.Array | None, who: str) -> tuple[jax.Array, float]:
    scale = wage_init_limits(fan, bits_W, factor)[1]
    if W_mode == "stochastic" and key is None:
        raise ValueError(f"{who} with W_mode='stochastic' needs a key for QW's draws (the linen and NNX layers "
                         f"draw it from the 'wage' rng stream)")
    return QW(kernel, bits_W, scale, W_mode, key=key), scale


def wage_dot_general(
    bits_W: int,
    factor: float = 2.0,
    W_mode: str = "nearest",
    *,
    integer: bool | str = False,
    bits_A: int = FULL_PRECISION,
    bits_E: int = FULL_PRECISION,
) -> Callable[..., jax.Array]:
    """A ``dot_general`` for Flax's ``nn.Dense``/``nnx.Linear`` that multiplies by ``QW(kernel)``.

    ``dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, *, key=None)``
    computes ``lax.dot_general(lhs, QW(rhs, bits_W, scale, W_mode), dimension_numbers)`` in float32 at
    ``Precision.HIGHEST`` (WAGE needs exact products; the layer's ``precision`` is ignored); ``rhs`` is the
    weight accumulator and ``scale`` comes from its fan-in, the product of its contracting dimensions.
    The gradient reaches ``rhs`` straight through ``QW``. Use it with ``kernel_init=wage_kernel_init(bits_W,
    factor)`` and ``use_bias=False``.

    Args:
        bits_W: weight bits, an int in [2, 24].
        factor: the initializer's variance factor (the scale depends on it): 2.0 as the documented torch
            ``wage_init_``, 1.0 in the paper's models.
        W_mode: ``QW``'s rounding. ``"stochastic"`` needs a ``key`` per call, which Flax's layers do not
            pass: use ``wage_jax.linen.WAGEDotGeneral`` (``dot_general_cls``) or the NNX ``WAGEDense``.
        integer: compute the products on int8/int16 with int32 sums (``wage_jax.integer``), bit-identical
            to the float path, given ``lhs`` on the ``bits_A`` grid and the backward's error on the
            ``bits_E`` grid (a ``WAGEQuantizer`` before the layer and after it). Dense contractions only.
            ``"int32"``: int32 sums wherever they fit int32, not only where float32 is exact (the same bits
            on every backend; ``wage_jax.integer``, "int32 sums").
        bits_A, bits_E: those grids (-1: the products with that operand use the float path).

    Returns:
        the ``dot_general`` function; output float32, ``lax.dot_general``'s shape.

    Raises:
        TypeError, ValueError: a bad bits, factor or mode argument (here); at call time a non-floating
            operand, or ``integer`` with a contraction other than ``(..., in) x (in, out)``.

    References:
        Wu et al., "Training and Inference with Integers in Deep Neural Networks", ICLR 2018, Eq. 5-7.

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> from wage_jax import QW, kernel_scale, wage_kernel_init
        >>> layer = nn.Dense(3, use_bias=False, kernel_init=wage_kernel_init(2), dot_general=wage_dot_general(2))
        >>> x = jnp.ones((1, 4))
        >>> kernel = layer.init(jax.random.key(0), x)["params"]["kernel"]
        >>> w = QW(kernel, 2, kernel_scale(kernel.shape, 2))
        >>> bool((layer.apply({"params": {"kernel": kernel}}, x) == x @ w).all())
        True
    """
    bits_W, factor, W_mode, integer, bits_A, bits_E = _checked_options(bits_W, factor, W_mode, integer, bits_A,
                                                                        bits_E)

    def dot_general(lhs: ArrayLike, rhs: jax.Array, dimension_numbers: Any, precision: Any = None,
                    preferred_element_type: Any = None, *, key: jax.Array | None = None, **kwargs: Any) -> jax.Array:
        del precision, preferred_element_type, kwargs  # WAGE computes exactly, in float32
        (lhs_contract, rhs_contract), batch = dimension_numbers
        fan = math.prod(rhs.shape[d] for d in rhs_contract)
        w, scale = _quantized_kernel(rhs, fan, bits_W, factor, W_mode, key, "wage_dot_general")
        if integer:
            standard = (tuple(lhs_contract) == (jnp.ndim(lhs) - 1,) and tuple(rhs_contract) == (0,)
                        and rhs.ndim == 2 and not any(batch))
            if not standard:
                raise ValueError(f"wage_dot_general(integer=True) computes (..., in) x (in, out) products only, got "
                                 f"dimension_numbers={dimension_numbers} for shapes {jnp.shape(lhs)}, {rhs.shape}")
            return integer_dense(jnp.asarray(lhs, jnp.float32), w, bits_A, bits_W, bits_E, scale,
                                 sums=_sums(integer))
        return lax.dot_general(lhs, w, dimension_numbers, precision=lax.Precision.HIGHEST)

    return dot_general


def wage_conv_general_dilated(
    bits_W: int,
    factor: float = 2.0,
    W_mode: str = "nearest",
    *,
    integer: bool | str = False,
    bits_A: int = FULL_PRECISION,
    bits_E: int = FULL_PRECISION,
    lowering: str = "conv",
) -> Callable[..., jax.Array]:
    """A ``conv_general_dilated`` for Flax's ``nn.Conv``/``nnx.Conv`` that convolves with ``QW(kernel)``.

    Called as ``lax.conv_general_dilated`` (Flax passes the strides, padding, dilations, dimension numbers
    and groups) plus an optional ``key=``; computes it with ``QW(rhs, bits_W, scale, W_mode)`` at
    ``Precision.HIGHEST``. ``rhs`` is the accumulator in Flax's layout ``(*spatial, in, out)``; ``scale``
    comes from its fan-in, the product of all but its last dimension. Arguments as ``wage_dot_general``'s;
    ``integer`` supports 2-D NHWC/HWIO convolutions without dilation or groups.

    ``lowering`` chooses how the products are computed, the same bits in every case (docs/integer.md):

    * ``"conv"`` (default): the backend's convolution (``lax.conv_general_dilated``; with ``integer``,
      int8/int16 operands and int32 sums);
    * ``"patches"``: the input's windows gathered by slicing, then one ``dot_general`` (a GEMM), in the
      forward and, through its derivative, in the backward: no convolution at all, so no Winograd or FFT
      algorithm can round a sum (2-D NHWC/HWIO, no dilation or groups; 9x the input's memory for 3x3);
    * ``"int8_f32"`` (with ``integer`` only): integer operands with float32 results, which XLA:GPU compiles
      where int8 x int8 -> int32 convolutions do not.

    Returns:
        the ``conv_general_dilated`` function; output float32.

    References:
        Wu et al., ICLR 2018, Eq. 5-7.

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> from wage_jax import wage_kernel_init
        >>> conv = nn.Conv(2, (3, 3), use_bias=False, kernel_init=wage_kernel_init(2),
        ...                conv_general_dilated=wage_conv_general_dilated(2))
        >>> conv.init(jax.random.key(0), jnp.ones((1, 4, 4, 1)))["params"]["kernel"].shape
        (3, 3, 1, 2)
    """
    bits_W, factor, W_mode, integer, bits_A, bits_E = _checked_options(bits_W, factor, W_mode, integer, bits_A,
                                                                        bits_E)
    lowering = check_lowering(lowering, integer)
    check_sums(_sums(integer), lowering)

    def conv_general_dilated(lhs: ArrayLike, rhs: jax.Array, window_strides: Sequence[int], padding: Any,
                             lhs_dilation: Sequence[int] | None = None, rhs_dilation: Sequence[int] | None = None,
                             dimension_numbers: Any = None, feature_group_count: int = 1,
                             batch_group_count: int = 1, precision: Any = None, preferred_element_type: Any = None,
                             *, key: jax.Array | None = None, **kwargs: Any) -> jax.Array:
        del precision, preferred_element_type, kwargs  # WAGE computes exactly, in float32
        w, scale = _quantized_kernel(rhs, math.prod(rhs.shape[:-1]), bits_W, factor, W_mode, key,
                                     "wage_conv_general_dilated")
        if integer or lowering != "conv":
            plain = (all(d == 1 for d in (lhs_dilation or (1,))) and all(d == 1 for d in (rhs_dilation or (1,)))
                     and feature_group_count == 1 and batch_group_count == 1 and jnp.ndim(lhs) == 4
                     and _is_nhwc_hwio(dimension_numbers, jnp.shape(lhs), rhs.shape))
            if not plain:
                what = f"integer={integer!r}" if integer else f"lowering={lowering!r}"
                raise ValueError(f"wage_conv_general_dilated({what}) computes 2-D NHWC/HWIO convolutions "
                                 "without dilation or feature groups")
            strides = tuple(int(s) for s in window_strides)
            if integer:
                return integer_conv(jnp.asarray(lhs, jnp.float32), w, bits_A, bits_W, bits_E, scale,
                                    strides=strides, padding=padding, lowering=lowering, sums=_sums(integer))
            lhs = jnp.asarray(lhs, jnp.float32)
            return conv_patches(lhs, w, strides, explicit_pads(padding, lhs.shape, w.shape, strides))
        return lax.conv_general_dilated(
            lhs, w, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
            batch_group_count=batch_group_count, precision=lax.Precision.HIGHEST)

    return conv_general_dilated


def _is_nhwc_hwio(dimension_numbers: Any, lhs_shape: tuple, rhs_shape: tuple) -> bool:
    wanted = lax.conv_dimension_numbers(lhs_shape, rhs_shape, ("NHWC", "HWIO", "NHWC"))
    if dimension_numbers is None:
        return False
    return lax.conv_dimension_numbers(lhs_shape, rhs_shape, dimension_numbers) == wanted


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pooling with stride 2 over NHWC ``x`` (H and W even) -> ``(N, H/2, W/2, C)``.

    The gradient goes to the first maximum of each window in row-major order, as torch's
    ``max_pool2d`` routes it. Quantized activations tie often (zeros after ReLU), so this matters for
    bit-identical training; ``lax.reduce_window``'s gradient does not promise an order.
    """
    n, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"max_pool_2x2 needs even height and width, got {x.shape}")
    windows = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4)
    first = jnp.argmax(windows, axis=-1, keepdims=True)  # argmax returns the first maximum
    return jnp.take_along_axis(windows, first, axis=-1)[..., 0]
