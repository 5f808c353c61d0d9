"""WAGE for Flax NNX: ``WAGEQuantizer``, the hooks ``WAGEDotGeneral``/``WAGEConvGeneralDilated``, and the
conveniences ``WAGEDense``/``WAGEConv``, mirroring ``wage_jax.linen``.

Stock layers become WAGE layers as in linen: ``nnx.Linear(in, out, use_bias=False,
kernel_init=wage_kernel_init(bits_W, factor), dot_general=wage_dot_general(bits_W, factor), rngs=rngs)``
and ``nnx.Conv(..., conv_general_dilated=wage_conv_general_dilated(bits_W, factor))``; for a stochastic
``W_mode`` pass ``dot_general=WAGEDotGeneral(bits_W, factor, "stochastic", rngs=rngs)`` (a module that
draws its key). Stochastic modes draw from the rng stream named ``"wage"`` of the ``nnx.Rngs`` given at
construction (``rngs=nnx.Rngs(params=0, wage=1)``) or at call time; a forward pass that draws nothing
(nearest A and W; E is drawn in the backward) needs none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike, DTypeLike

from wage_jax._src.initializers import kernel_scale, wage_kernel_init
from wage_jax._src.layers import (
    check_integer,
    conv_padding,
    positive_pair,
    wage_conv_general_dilated,
    wage_dot_general,
)
from wage_jax._src.rng import RNG_STREAM
from wage_jax._src.wage_quantizer import wage_quantize
from wage_spec import FULL_PRECISION, check_bits, check_mode, draws_randomness

__all__ = ["WAGEConv", "WAGEConvGeneralDilated", "WAGEDense", "WAGEDotGeneral", "WAGEQuantizer"]



def _fork_stream(rngs: nnx.Rngs | nnx.RngStream | None, needed: bool):
    if not needed or rngs is None:
        return nnx.data(None)
    return rngs[RNG_STREAM].fork() if isinstance(rngs, nnx.Rngs) else rngs.fork()


def _draw(own, rngs, owner: str, required: bool = True) -> jax.Array | None:
    source = rngs if rngs is not None else own
    if source is None and not required:
        return None
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
        self.draws_A = draws_randomness(self.A_mode, self.bits_A)
        self.stochastic = self.draws_A or draws_randomness(self.E_mode, self.bits_E)
        self.rngs = _fork_stream(rngs, self.stochastic)

    def __call__(self, x: jax.Array, *, rngs=None) -> jax.Array:
        # E's draws happen in the backward: without rngs the forward still runs (evaluation), and taking a
        # gradient raises, naming the missing key.
        key = _draw(self.rngs, rngs, "WAGEQuantizer", required=self.draws_A) if self.stochastic else None
        return wage_quantize(x, self.bits_A, self.bits_E, self.A_mode, self.E_mode, key=key)


class WAGEDotGeneral(nnx.Module):
    """``nnx.Linear(..., dot_general=WAGEDotGeneral(bits_W, factor, W_mode, rngs=rngs))``: ``wage_dot_general``
    that draws a stochastic ``W_mode``'s key from its ``"wage"`` stream (given here or at call time)."""

    def __init__(self, bits_W: int, factor: float = 2.0, W_mode: str = "nearest", *, integer: bool | str = False,
                 bits_A: int = FULL_PRECISION, bits_E: int = FULL_PRECISION, rngs: nnx.Rngs | None = None) -> None:
        self.fn = nnx.static(wage_dot_general(bits_W, factor, W_mode, integer=integer, bits_A=bits_A,
                                              bits_E=bits_E))
        self.stochastic = check_mode(W_mode, "W_mode") == "stochastic"
        self.rngs = _fork_stream(rngs, self.stochastic)

    def __call__(self, lhs: ArrayLike, rhs: jax.Array, *args, rngs=None, **kwargs) -> jax.Array:
        key = _draw(self.rngs, rngs, type(self).__name__) if self.stochastic else None
        return self.fn(lhs, rhs, *args, key=key, **kwargs)


class WAGEConvGeneralDilated(WAGEDotGeneral):
    """``nnx.Conv(..., conv_general_dilated=WAGEConvGeneralDilated(bits_W, factor, W_mode, rngs=rngs))``:
    ``wage_conv_general_dilated`` that draws a stochastic ``W_mode``'s key from its ``"wage"`` stream."""

    def __init__(self, bits_W: int, factor: float = 2.0, W_mode: str = "nearest", *, integer: bool | str = False,
                 bits_A: int = FULL_PRECISION, bits_E: int = FULL_PRECISION, lowering: str = "conv",
                 rngs: nnx.Rngs | None = None) -> None:
        super().__init__(bits_W, factor, W_mode, integer=integer, bits_A=bits_A, bits_E=bits_E, rngs=rngs)
        self.fn = nnx.static(wage_conv_general_dilated(bits_W, factor, W_mode, integer=integer, bits_A=bits_A,
                                                       bits_E=bits_E, lowering=lowering))


class _WAGEKernelLayer(nnx.Module):
    """Shared by the layers: the kernel (the accumulator), W's rng stream, the integer mode."""

    def _init_kernel(self, shape: tuple[int, ...], bits_W: int, factor: float, W_mode: str, rngs: nnx.Rngs,
                     options: dict) -> None:
        self.bits_W = check_bits(bits_W, "bits_W")
        self.W_mode = check_mode(W_mode, "W_mode")
        self.factor = factor
        self.integer = check_integer(options["integer"])
        self.bits_A = check_bits(options["bits_A"], "bits_A", allow_full_precision=True)
        self.bits_E = check_bits(options["bits_E"], "bits_E", allow_full_precision=True)
        self.dtype = options["dtype"]
        init = options["kernel_init"] if options["kernel_init"] is not None else wage_kernel_init(bits_W, factor)
        self.kernel = nnx.Param(init(rngs.params(), shape, options["param_dtype"]))
        self.scale = kernel_scale(shape, self.bits_W, factor)  # static: from the shape, whatever kernel_init is
        self.rngs = _fork_stream(rngs, W_mode == "stochastic")

    def _key(self, rngs) -> jax.Array | None:
        return _draw(self.rngs, rngs, type(self).__name__) if self.W_mode == "stochastic" else None

    def _integer(self) -> dict:
        return {"integer": self.integer, "bits_A": self.bits_A, "bits_E": self.bits_E}

    def _output(self, y: jax.Array) -> jax.Array:
        return y if self.dtype is None else y.astype(self.dtype)


_LAYER_ARGS = """
    Args:
        in_features, out_features: the input's and the output's features (channels for ``WAGEConv``).
        bits_W: weight bits, an int in [2, 24].
        factor: the initializer's variance factor. The default 2.0 is the documented torch
            ``wage_init_``'s; the paper's models use 1.0 (``WAGEConfig.factor``). ``scale`` comes from it.
        W_mode: ``QW``'s rounding, ``"nearest"`` or ``"stochastic"`` (draws from the ``"wage"`` stream).
        kernel_init: overrides the initializer's draw ``init(key, shape, dtype)`` (scale unchanged).
        param_dtype: the kernel's dtype (float32).
        dtype: the output's dtype; None: float32.
        integer: compute the products on int8/int16 with int32 sums (``wage_jax.integer``),
            bit-identical to the float path (``"int32"``: wherever int32 holds the sums, not only float32, the
            same bits on every backend). Contract: the input comes from a ``WAGEQuantizer`` with
            ``bits_A`` and the backward's error from one with ``bits_E`` (through ReLU/pooling only).
        bits_A, bits_E: those grids; only read when ``integer``; -1: float path for those products.
        rngs: ``nnx.Rngs`` with ``params`` (and ``wage`` for a stochastic ``W_mode``).
"""


def _options(kernel_init, param_dtype, dtype, integer, bits_A, bits_E) -> dict:
    return {"kernel_init": kernel_init, "param_dtype": param_dtype, "dtype": dtype, "integer": integer,
            "bits_A": bits_A, "bits_E": bits_E}


class WAGEDense(_WAGEKernelLayer):
    """Dense layer without bias whose forward uses ``QW(kernel, bits_W, scale)`` (WAGE Eq. 5-7).

    ``kernel`` ``(in_features, out_features)`` is the weight accumulator, drawn by the WAGE initializer
    from ``rngs.params``; ``scale`` is the layer's power of two from the same initializer.
    Input ``(..., in_features)`` (at least 1-d), output ``(..., out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits_W: int,
        factor: float = 2.0,
        W_mode: str = "nearest",
        *,
        kernel_init: Callable[..., jax.Array] | None = None,
        param_dtype: DTypeLike = jnp.float32,
        dtype: DTypeLike | None = None,
        integer: bool | str = False,
        bits_A: int = FULL_PRECISION,
        bits_E: int = FULL_PRECISION,
        rngs: nnx.Rngs,
    ) -> None:
        options = _options(kernel_init, param_dtype, dtype, integer, bits_A, bits_E)
        self._init_kernel((in_features, out_features), bits_W, factor, W_mode, rngs, options)

    def __call__(self, x: ArrayLike, *, rngs=None) -> jax.Array:
        if jnp.ndim(x) == 0:
            raise ValueError(f"WAGEDense input x must be at least 1-d (..., in), got a 0-d array {x!r}")
        if jnp.shape(x)[-1] != self.kernel.shape[0]:
            raise ValueError(f"WAGEDense input x has {jnp.shape(x)[-1]} features, the kernel expects "
                             f"{self.kernel.shape[0]}")
        dot = wage_dot_general(self.bits_W, self.factor, self.W_mode, **self._integer())
        y = dot(x, self.kernel[...], (((jnp.ndim(x) - 1,), (0,)), ((), ())), key=self._key(rngs))
        return self._output(y)


class WAGEConv(_WAGEKernelLayer):
    """2-D convolution without bias (NHWC, kernel HWIO) whose forward uses ``QW(kernel, bits_W, scale)``.

    ``kernel_size``: an int or two ints; ``padding``: Flax's forms (``"SAME"``, ``"VALID"``, an int,
    two ints, two ``(lo, hi)`` pairs; see ``wage_jax.linen.WAGEConv``). Input 4-d NHWC. ``lowering``:
    ``"conv"``, ``"patches"`` or, with ``integer``, ``"int8_f32"``, the same bits in every case (see
    ``wage_jax.wage_conv_general_dilated``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits_W: int,
        kernel_size: int | Sequence[int] = (3, 3),
        strides: int | Sequence[int] = (1, 1),
        padding: str | int | Sequence[int] | Sequence[tuple[int, int]] = "SAME",
        factor: float = 2.0,
        W_mode: str = "nearest",
        *,
        kernel_init: Callable[..., jax.Array] | None = None,
        param_dtype: DTypeLike = jnp.float32,
        dtype: DTypeLike | None = None,
        integer: bool | str = False,
        bits_A: int = FULL_PRECISION,
        bits_E: int = FULL_PRECISION,
        lowering: str = "conv",
        rngs: nnx.Rngs,
    ) -> None:
        options = _options(kernel_init, param_dtype, dtype, integer, bits_A, bits_E)
        # checked now (a bad value fails at construction, naming the argument), used at call time
        wage_conv_general_dilated(bits_W, factor, W_mode, integer=integer, bits_A=bits_A, bits_E=bits_E,
                                  lowering=lowering)
        self.lowering = lowering
        self._init_kernel((*positive_pair(kernel_size), in_features, out_features), bits_W, factor, W_mode, rngs,
                          options)
        self.strides = positive_pair(strides, "strides")
        self.padding = conv_padding(padding)

    def __call__(self, x: ArrayLike, *, rngs=None) -> jax.Array:
        if jnp.ndim(x) != 4:
            raise ValueError(f"WAGEConv input x must be 4-d NHWC (batch, height, width, channels), "
                             f"got shape {jnp.shape(x)}")
        if jnp.shape(x)[-1] != self.kernel.shape[2]:
            raise ValueError(f"WAGEConv input x has {jnp.shape(x)[-1]} channels, the kernel expects "
                             f"{self.kernel.shape[2]}")
        conv = wage_conv_general_dilated(self.bits_W, self.factor, self.W_mode, **self._integer(),
                                         lowering=self.lowering)
        y = conv(x, self.kernel[...], self.strides, self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                 key=self._key(rngs))
        return self._output(y)


# ``__doc__`` is None under ``python -OO``.
if WAGEDense.__doc__ is not None and WAGEConv.__doc__ is not None:
    WAGEDense.__doc__ += _LAYER_ARGS
    WAGEConv.__doc__ += _LAYER_ARGS
