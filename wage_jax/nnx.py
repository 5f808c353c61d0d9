"""WAGE for Flax NNX: ``WAGEQuantizer``, ``WAGEDense``, ``WAGEConv``.

Thin modules over ``wage_jax.ops`` and ``wage_jax.wage_quantizer``, mirroring ``wage_jax.linen``.
Stochastic modes draw from the rng stream named ``"wage"`` of the ``nnx.Rngs`` given at construction
(``rngs=nnx.Rngs(params=0, wage=1)``) or at call time.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from wage_jax._rng import RNG_STREAM
from wage_jax.initializers import wage_init
from wage_jax.ops import wage_conv, wage_dense
from wage_jax.wage_quantizer import wage_quantize
from wage_spec import check_bits, check_mode, draws_randomness

__all__ = ["WAGEConv", "WAGEDense", "WAGEQuantizer"]



def _fork_stream(rngs: nnx.Rngs | nnx.RngStream | None, needed: bool):
    if not needed or rngs is None:
        return nnx.data(None)
    return rngs[RNG_STREAM].fork() if isinstance(rngs, nnx.Rngs) else rngs.fork()


def _draw(own, rngs, owner: str) -> jax.Array:
    source = rngs if rngs is not None else own
    if source is None:
        raise ValueError(f"{owner} rounds stochastically: give it rngs with a '{RNG_STREAM}' stream")
    if isinstance(source, nnx.Rngs):
        return source[RNG_STREAM]()
    if isinstance(source, nnx.RngStream):
        return source()
    return source  # a jax.random key


class WAGEQuantizer(nnx.Module):
    """Quantize activations forward (``bits_A``) and errors backward (``bits_E``); -1: full precision.

    WAGE Eq. 8-10; see ``wage_jax.wage_quantize``. Any shape; returns ``x``'s shape and dtype.
    """

    def __init__(
        self, bits_A: int, bits_E: int, A_mode: str = "nearest", E_mode: str = "nearest", *, rngs=None
    ) -> None:
        self.bits_A = check_bits(bits_A, "bits_A", allow_full_precision=True)
        self.bits_E = check_bits(bits_E, "bits_E", allow_full_precision=True)
        self.A_mode = check_mode(A_mode, "A_mode")
        self.E_mode = check_mode(E_mode, "E_mode")
        self.stochastic = draws_randomness(self.A_mode, self.bits_A) or draws_randomness(self.E_mode, self.bits_E)
        self.rngs = _fork_stream(rngs, self.stochastic)

    def __call__(self, x: jax.Array, *, rngs=None) -> jax.Array:
        key = _draw(self.rngs, rngs, "WAGEQuantizer") if self.stochastic else None
        return wage_quantize(x, self.bits_A, self.bits_E, self.A_mode, self.E_mode, key=key)


class _WAGEKernelLayer(nnx.Module):
    """Shared by the layers: the kernel (the accumulator), its scale, and W's rng stream."""

    def _init_kernel(self, shape: tuple[int, ...], bits_W: int, factor: float, W_mode: str, rngs: nnx.Rngs) -> None:
        self.bits_W = check_bits(bits_W, "bits_W")
        self.W_mode = check_mode(W_mode, "W_mode")
        kernel, self.scale = wage_init(rngs.params(), shape, bits_W, factor)
        self.kernel = nnx.Param(kernel)
        self.rngs = _fork_stream(rngs, W_mode == "stochastic")

    def _key(self, rngs) -> jax.Array | None:
        return _draw(self.rngs, rngs, type(self).__name__) if self.W_mode == "stochastic" else None


class WAGEDense(_WAGEKernelLayer):
    """Dense layer without bias whose forward uses ``QW(kernel, bits_W, scale)`` (WAGE Eq. 5-7).

    ``kernel`` ``(in_features, out_features)`` is the weight accumulator, drawn by the WAGE initializer
    from ``rngs.params``; ``scale`` is the layer's power of two from the same initializer.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits_W: int,
        factor: float = 2.0,
        W_mode: str = "nearest",
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self._init_kernel((in_features, out_features), bits_W, factor, W_mode, rngs)

    def __call__(self, x: jax.Array, *, rngs=None) -> jax.Array:
        return wage_dense(x, self.kernel[...], self.bits_W, self.scale, self.W_mode, key=self._key(rngs))


class WAGEConv(_WAGEKernelLayer):
    """2-D convolution without bias (NHWC, kernel HWIO) whose forward uses ``QW(kernel, bits_W, scale)``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits_W: int,
        kernel_size: Sequence[int] = (3, 3),
        strides: Sequence[int] = (1, 1),
        padding: str = "SAME",
        factor: float = 2.0,
        W_mode: str = "nearest",
        *,
        rngs: nnx.Rngs,
    ) -> None:
        self._init_kernel((*kernel_size, in_features, out_features), bits_W, factor, W_mode, rngs)
        self.strides = tuple(strides)
        self.padding = padding

    def __call__(self, x: jax.Array, *, rngs=None) -> jax.Array:
        w = self.kernel[...]
        return wage_conv(
            x, w, self.bits_W, self.scale, self.W_mode, strides=self.strides, padding=self.padding, key=self._key(rngs)
        )
