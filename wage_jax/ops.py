"""The WAGE layers' arithmetic as pure functions, shared by ``wage_jax.linen`` and ``wage_jax.nnx``.

Each layer computes with ``QW(kernel)``: the kernel parameter is the weight accumulator, the forward
uses its quantized value, and the straight-through derivative gives the accumulator the gradient of
the quantized weights (what the reference's ``param.data = QW(w_acc)`` amounts to). No bias (WAGE has
none). Layouts are Flax's: ``x`` is ``(..., in)`` or NHWC, kernels ``(in, out)`` or HWIO.

With quantized operands every product is exact and, within the bounds stated in the parity tests,
every sum too, so matmuls and convolutions give the same bits in any summation order.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from wage_jax.functional import QW

__all__ = ["max_pool_2x2", "wage_conv", "wage_dense"]


def wage_dense(
    x: jax.Array, kernel: jax.Array, bits_W: int, scale: float, W_mode: str = "nearest", *, key=None
) -> jax.Array:
    """``x @ QW(kernel, bits_W, scale)``; ``x`` ``(..., in)``, ``kernel`` ``(in, out)`` -> ``(..., out)``."""
    w = QW(kernel, bits_W, scale, W_mode, key=key)
    return jnp.matmul(x, w, precision=lax.Precision.HIGHEST)


def wage_conv(
    x: jax.Array,
    kernel: jax.Array,
    bits_W: int,
    scale: float,
    W_mode: str = "nearest",
    *,
    strides: Sequence[int] = (1, 1),
    padding: str | Sequence[tuple[int, int]] = "SAME",
    key=None,
) -> jax.Array:
    """2-D convolution with ``QW(kernel)``: ``x`` NHWC, ``kernel`` HWIO -> NHWC (no bias)."""
    w = QW(kernel, bits_W, scale, W_mode, key=key)
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=tuple(strides),
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
