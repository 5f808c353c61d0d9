"""The WAGE weight initializer for Flax kernels (docs/contract.md §3; WAGE Eq. 6-7).

Flax stores kernels as ``(in, out)`` and ``(kh, kw, in, out)``; the fan-in is the product of all but
the last dimension. The arithmetic (limit and scale) is ``wage_spec.wage_init_limits``, shared with
``wage_torch.wage_init_``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from wage_spec import fan_in, wage_init_limits

__all__ = ["kernel_scale", "wage_init", "wage_kernel_init"]


def kernel_scale(shape: Sequence[int], bits_W: int, factor: float = 2.0) -> float:
    """The layer's power-of-two scale ``alpha`` for a Flax kernel of ``shape`` (static, from the shape)."""
    return wage_init_limits(fan_in(shape, layout="flax"), bits_W, factor)[1]


def wage_init(
    key: jax.Array, shape: Sequence[int], bits_W: int, factor: float = 2.0, dtype=jnp.float32
) -> tuple[jax.Array, float]:
    """Draw a kernel from ``U(-L, L)`` and return it with its scale.

    Args:
        key: a PRNG key.
        shape: a Flax kernel shape, ``(in, out)`` or ``(*spatial, in, out)``.
        bits_W: weight bits, an int in [2, 24].
        factor: the variance factor, positive. The default 2.0 is the documented torch ``wage_init_``'s;
            the paper's models use 1.0 (``WAGEConfig.factor``, passed by ``wage_jax.models``).
        dtype: the kernel's dtype.

    Returns:
        ``(kernel, scale)``: ``L = max(1.5 / 2^(bits_W-1), sqrt(3 * factor / fan_in))``,
        ``scale = max(2^round(log2(Wm / float_limit)), 1)``.
    """
    limit, scale = wage_init_limits(fan_in(shape, layout="flax"), bits_W, factor)
    # Drawn flat and reshaped: the same bits as drawing ``shape`` directly (threefry's counter is the row-major
    # index, partitionable or not), but XLA:CPU takes ~4 s to compile a 4-D draw and ~0.5 s a flat one, which
    # made a jitted VGG7 ``init`` take 20-30 s (tests/test_jax_layers.py checks the bits).
    kernel = jax.random.uniform(key, (math.prod(shape),), dtype, minval=-limit, maxval=limit).reshape(tuple(shape))
    return kernel, scale


def wage_kernel_init(bits_W: int, factor: float = 2.0) -> Callable[..., jax.Array]:
    """A Flax initializer ``init(key, shape, dtype)`` drawing WAGE kernels (see ``wage_init``)."""

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        return wage_init(key, shape, bits_W, factor, dtype)[0]

    return init
