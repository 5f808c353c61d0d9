"""WAGE for Flax linen: ``WAGEQuantizer``, ``WAGEDense``, ``WAGEConv``.

Thin modules over ``wage_jax.ops`` and ``wage_jax.wage_quantizer``. Stochastic modes draw from the rng
stream named ``"wage"``: ``model.apply(variables, x, rngs={"wage": key})``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from wage_jax._rng import RNG_STREAM
from wage_jax.initializers import kernel_scale, wage_kernel_init
from wage_jax.ops import wage_conv, wage_dense
from wage_jax.wage_quantizer import wage_quantize
from wage_spec import check_bits, check_mode, draws_randomness

__all__ = ["WAGEConv", "WAGEDense", "WAGEQuantizer"]



class WAGEQuantizer(nn.Module):
    """Quantize activations forward (``bits_A``) and errors backward (``bits_E``); -1: full precision.

    WAGE Eq. 8-10; see ``wage_jax.wage_quantize``. Any shape; returns ``x``'s shape and dtype.
    """

    bits_A: int
    bits_E: int
    A_mode: str = "nearest"
    E_mode: str = "nearest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        stochastic = draws_randomness(self.A_mode, self.bits_A) or draws_randomness(self.E_mode, self.bits_E)
        key = self.make_rng(RNG_STREAM) if stochastic else None
        return wage_quantize(x, self.bits_A, self.bits_E, self.A_mode, self.E_mode, key=key)


def _wage_kernel(module: nn.Module, shape: tuple[int, ...]) -> tuple[jax.Array, float, jax.Array | None]:
    """Declare the layer's kernel (the accumulator) and return it with its static scale and W's rng key."""
    check_bits(module.bits_W, "bits_W")
    check_mode(module.W_mode, "W_mode")
    kernel = module.param("kernel", wage_kernel_init(module.bits_W, module.factor), shape, jnp.float32)
    key = module.make_rng(RNG_STREAM) if module.W_mode == "stochastic" else None
    return kernel, kernel_scale(shape, module.bits_W, module.factor), key


class WAGEDense(nn.Module):
    """Dense layer without bias whose forward uses ``QW(kernel, bits_W, scale)`` (WAGE Eq. 5-7).

    ``kernel`` ``(in, features)`` is the weight accumulator, drawn by the WAGE initializer; ``scale`` is
    the layer's power of two from the same initializer, a static function of the kernel's shape.
    """

    features: int
    bits_W: int
    factor: float = 2.0
    W_mode: str = "nearest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, scale, key = _wage_kernel(self, (x.shape[-1], self.features))
        return wage_dense(x, kernel, self.bits_W, scale, self.W_mode, key=key)


class WAGEConv(nn.Module):
    """2-D convolution without bias (NHWC, kernel HWIO) whose forward uses ``QW(kernel, bits_W, scale)``."""

    features: int
    bits_W: int
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: str = "SAME"
    factor: float = 2.0
    W_mode: str = "nearest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, scale, key = _wage_kernel(self, (*self.kernel_size, x.shape[-1], self.features))
        return wage_conv(
            x, kernel, self.bits_W, scale, self.W_mode, strides=self.strides, padding=self.padding, key=key
        )
