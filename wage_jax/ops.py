"""The WAGE layers' arithmetic as pure functions, shared by ``wage_jax.linen`` and ``wage_jax.nnx``.

Each layer computes with ``QW(kernel)``: the kernel parameter is the weight accumulator, the forward
uses its quantized value, and the straight-through derivative gives the accumulator the gradient of
the quantized weights (what the reference's ``param.data = QW(w_acc)`` amounts to). No bias (WAGE has
none). ``forward=`` gives the layer ``QW(kernel)`` computed beforehand (the optimizer's carried forward
weights, ``wage_jax.optax.carry_forward_weights``): the forward then uses it as is, with the same
straight-through derivative, and runs no ``QW`` pass over the kernel. Layouts are Flax's: ``x`` is
``(..., in)`` or NHWC, kernels ``(in, out)`` or HWIO.

With quantized operands every product is exact and, within the bounds stated in the parity tests,
every sum too, so matmuls and convolutions give the same bits in any summation order.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from wage_jax.functional import QW, straight_through
from wage_jax.integer import integer_conv, integer_dense
from wage_spec import FULL_PRECISION

__all__ = ["conv_padding", "kernel_size_2d", "max_pool_2x2", "wage_conv", "wage_dense"]


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


def kernel_size_2d(kernel_size: int | Sequence[int]) -> tuple[int, int]:
    """``kernel_size`` as ``(kh, kw)``: an int ``k`` means ``(k, k)``; raises ValueError otherwise."""
    if isinstance(kernel_size, (int, np.integer)) and not isinstance(kernel_size, bool):
        kernel_size = (kernel_size, kernel_size)
    try:
        size = tuple(kernel_size)
    except TypeError:
        raise ValueError(f"kernel_size must be a positive int or two positive ints, got {kernel_size!r}") from None
    if len(size) != 2 or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k > 0 for k in size):
        raise ValueError(f"kernel_size must be a positive int or two positive ints, got {kernel_size!r}")
    return int(size[0]), int(size[1])


def _check_input(x: ArrayLike, rank: str, ok: bool, layer: str) -> None:
    if not ok:
        raise ValueError(f"{layer} input x must be {rank}, got shape {jnp.shape(x)}")


def _forward_weights(
    kernel: jax.Array, forward: jax.Array | None, bits_W: int, scale: float, W_mode: str, key: jax.Array | None
) -> jax.Array:
    """``QW(kernel)``, or the given ``forward`` (``QW(kernel)`` carried from the update) with ``QW``'s derivative.

    ``straight_through(kernel, forward)``: the value ``forward``, the cotangent passed to ``kernel`` unchanged,
    as ``QW``'s own (bit for bit: no arithmetic on either).
    """
    if forward is None:
        return QW(kernel, bits_W, scale, W_mode, key=key)
    if W_mode != "nearest":
        raise ValueError(f"forward weights can only be carried for W_mode='nearest' (stochastic QW draws new "
                         f"noise every pass), got W_mode={W_mode!r}")
    if jnp.shape(forward) != kernel.shape or jnp.result_type(forward) != kernel.dtype:
        raise ValueError(f"forward weights must have the kernel's shape and dtype {kernel.shape} {kernel.dtype}, got "
                         f"{jnp.shape(forward)} {jnp.result_type(forward)}")
    return straight_through(kernel, forward)


def wage_dense(
    x: ArrayLike,
    kernel: jax.Array,
    bits_W: int,
    scale: float,
    W_mode: str = "nearest",
    *,
    key: jax.Array | None = None,
    forward: jax.Array | None = None,
    integer: bool = False,
    bits_A: int = FULL_PRECISION,
    bits_E: int = FULL_PRECISION,
) -> jax.Array:
    """``x @ QW(kernel, bits_W, scale)``; ``x`` ``(..., in)``, ``kernel`` ``(in, out)`` -> ``(..., out)`` float32.

    Args:
        x: activations, at least 1-d, last dimension ``in``.
        kernel: the weight accumulator ``(in, out)``.
        bits_W, scale, W_mode, key: ``QW``'s arguments (WAGE Eq. 5-7).
        forward: ``QW(kernel, bits_W, scale, "nearest")`` computed beforehand (the carried forward weights),
            used instead of computing ``QW``; only with ``W_mode="nearest"``. The caller keeps it equal to
            ``QW(kernel)`` (``wage_jax.optax.carry_forward_weights`` does).
        integer: compute the products on integers (``wage_jax.integer``): bit-identical results, given
            that ``x`` is on the ``bits_A`` grid and the backward's error on the ``bits_E`` grid.
        bits_A, bits_E: those grids (``-1``: the products with that operand use the float path).

    Raises:
        ValueError: ``x`` is 0-d or its last dimension is not ``kernel``'s first; ``forward`` with a stochastic
            ``W_mode`` or not of the kernel's shape and dtype.
    """
    _check_input(x, "at least 1-d (..., in)", jnp.ndim(x) >= 1, "WAGEDense")
    if jnp.shape(x)[-1] != kernel.shape[0]:
        raise ValueError(f"WAGEDense input x has {jnp.shape(x)[-1]} features, the kernel expects {kernel.shape[0]}")
    w = _forward_weights(kernel, forward, bits_W, scale, W_mode, key)
    if integer:
        return integer_dense(jnp.asarray(x, jnp.float32), w, bits_A, bits_W, bits_E, scale)
    return jnp.matmul(x, w, precision=lax.Precision.HIGHEST)


def wage_conv(
    x: ArrayLike,
    kernel: jax.Array,
    bits_W: int,
    scale: float,
    W_mode: str = "nearest",
    *,
    strides: Sequence[int] = (1, 1),
    padding: str | int | Sequence[int] | Sequence[tuple[int, int]] = "SAME",
    key: jax.Array | None = None,
    forward: jax.Array | None = None,
    integer: bool = False,
    bits_A: int = FULL_PRECISION,
    bits_E: int = FULL_PRECISION,
) -> jax.Array:
    """2-D convolution with ``QW(kernel)``: ``x`` NHWC, ``kernel`` HWIO -> NHWC float32 (no bias).

    ``padding`` takes Flax's forms (see ``conv_padding``); the other arguments are ``wage_dense``'s.

    Raises:
        ValueError: ``x`` is not 4-d NHWC, its channels differ from the kernel's, bad padding, or a bad
            ``forward`` (as ``wage_dense``).
    """
    _check_input(x, "4-d NHWC (batch, height, width, channels)", jnp.ndim(x) == 4, "WAGEConv")
    if jnp.shape(x)[-1] != kernel.shape[2]:
        raise ValueError(f"WAGEConv input x has {jnp.shape(x)[-1]} channels, the kernel expects {kernel.shape[2]}")
    padding = conv_padding(padding)
    strides = tuple(int(s) for s in strides)
    w = _forward_weights(kernel, forward, bits_W, scale, W_mode, key)
    if integer:
        return integer_conv(jnp.asarray(x, jnp.float32), w, bits_A, bits_W, bits_E, scale,
                            strides=strides, padding=padding)
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=strides,
        padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )


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
