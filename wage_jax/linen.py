"""WAGE for Flax linen: ``WAGEQuantizer``, the hooks ``WAGEDotGeneral``/``WAGEConvGeneralDilated``, and the
conveniences ``WAGEDense``/``WAGEConv``.

Any linen model becomes a WAGE model with stock layers (the hook AQT uses to quantize):

    nn.Dense(features, use_bias=False, kernel_init=wage_kernel_init(bits_W, factor),
             dot_general=wage_dot_general(bits_W, factor))
    nn.Conv(features, (3, 3), use_bias=False, kernel_init=wage_kernel_init(bits_W, factor),
            conv_general_dilated=wage_conv_general_dilated(bits_W, factor))

with ``WAGEQuantizer(bits_A, bits_E)`` on the activations. Stochastic ``W_mode`` needs a fresh key per call,
which a plain function cannot draw: pass ``dot_general_cls=functools.partial(WAGEDotGeneral, bits_W,
factor, "stochastic")`` (and ``conv_general_dilated_cls=...WAGEConvGeneralDilated...``) instead. Stochastic
modes draw from the rng stream named ``"wage"``: ``model.apply(variables, x, rngs={"wage": key})``; a
forward pass that draws nothing (nearest A and W; E is drawn in the backward) needs no key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.typing import ArrayLike, DTypeLike

from wage_jax._src.initializers import wage_kernel_init
from wage_jax._src.layers import conv_padding, positive_pair, wage_conv_general_dilated, wage_dot_general
from wage_jax._src.rng import RNG_STREAM
from wage_jax._src.wage_quantizer import wage_quantize
from wage_spec import FULL_PRECISION, check_bits, check_mode, draws_randomness

__all__ = ["WAGEConv", "WAGEConvGeneralDilated", "WAGEDense", "WAGEDotGeneral", "WAGEQuantizer"]


class WAGEQuantizer(nn.Module):
    """Quantize activations forward (``bits_A``) and errors backward (``bits_E``); -1: full precision.

    WAGE Eq. 8-10; see ``wage_jax.wage_quantize``. Any shape; returns ``x``'s shape and dtype. A stochastic
    ``A_mode`` draws from the ``"wage"`` stream in the forward; a stochastic ``E_mode`` needs the stream only
    when a gradient is taken (evaluation runs without a key).
    """

    bits_A: int
    bits_E: int
    A_mode: str = "nearest"
    E_mode: str = "nearest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        draws_A = draws_randomness(self.A_mode, self.bits_A)
        draws_E = draws_randomness(self.E_mode, self.bits_E)
        # E's draws happen in the backward: without a stream, the forward still runs (evaluation) and
        # taking a gradient raises, naming the missing key.
        key = self.make_rng(RNG_STREAM) if draws_A or (draws_E and self.has_rng(RNG_STREAM)) else None
        return wage_quantize(x, self.bits_A, self.bits_E, self.A_mode, self.E_mode, key=key)


class _WAGEHook(nn.Module):
    """The fields of the linen hooks: ``wage_dot_general``'s / ``wage_conv_general_dilated``'s arguments."""

    bits_W: int
    factor: float = 2.0
    W_mode: str = "nearest"
    integer: bool | str = False
    bits_A: int = FULL_PRECISION
    bits_E: int = FULL_PRECISION

    def _options(self) -> dict:
        return {"integer": self.integer, "bits_A": self.bits_A, "bits_E": self.bits_E}


class WAGEDotGeneral(_WAGEHook):
    """``nn.Dense(dot_general_cls=functools.partial(WAGEDotGeneral, bits_W, ...))``: ``wage_dot_general``
    drawing the stochastic ``W_mode``'s key from the ``"wage"`` stream. Fields as ``wage_dot_general``'s."""

    def __call__(self, lhs: ArrayLike, rhs: jax.Array, dimension_numbers: Any, **kwargs: Any) -> jax.Array:
        fn = wage_dot_general(self.bits_W, self.factor, self.W_mode, **self._options())
        return fn(lhs, rhs, dimension_numbers, key=_w_key(self), **kwargs)


class WAGEConvGeneralDilated(_WAGEHook):
    """``nn.Conv(conv_general_dilated_cls=functools.partial(WAGEConvGeneralDilated, bits_W, ...))``:
    ``wage_conv_general_dilated`` drawing the stochastic ``W_mode``'s key from the ``"wage"`` stream."""

    lowering: str = "conv"

    def __call__(self, lhs: ArrayLike, rhs: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
        fn = wage_conv_general_dilated(self.bits_W, self.factor, self.W_mode, **self._options(),
                                       lowering=self.lowering)
        return fn(lhs, rhs, *args, key=_w_key(self), **kwargs)


def _w_key(module: nn.Module) -> jax.Array | None:
    return module.make_rng(RNG_STREAM) if check_mode(module.W_mode, "W_mode") == "stochastic" else None


class WAGEDense(nn.Module):
    """Dense layer without bias whose forward uses ``QW(kernel, bits_W, scale)`` (WAGE Eq. 5-7).

    The same as ``nn.Dense(features, use_bias=False, kernel_init=wage_kernel_init(bits_W, factor),
    dot_general_cls=partial(WAGEDotGeneral, bits_W, factor, W_mode, ...))``, bit for bit and with the same
    parameter tree (``{"kernel": (in, features)}``, the weight accumulator; a stochastic ``W_mode`` draws its
    key in this module's scope, so its draws differ from the stock layer's). Input ``(..., in)`` (at least
    1-d), output ``(..., features)``.

    Attributes:
        bits_W: weight bits, an int in [2, 24].
        factor: the initializer's variance factor. The default 2.0 is the documented torch
            ``wage_init_``'s; the paper's models use 1.0 (``WAGEConfig.factor``, passed by
            ``wage_jax.models``). The layer's ``scale`` always comes from ``factor``.
        W_mode: ``QW``'s rounding, ``"nearest"`` or ``"stochastic"`` (draws from the ``"wage"`` stream).
        kernel_init: overrides the WAGE initializer's draw ``init(key, shape, dtype)`` (the scale still
            comes from ``bits_W`` and ``factor``).
        param_dtype: the kernel's dtype (float32).
        dtype: the output's dtype; None: float32. WAGE computes in float32 whatever this is.
        integer: compute the products on int8/int16 with int32 sums (``wage_jax.integer``),
            bit-identical to the float path (``"int32"``: wherever int32 holds the sums, not only float32, the
            same bits on every backend). Contract: the input comes from a ``WAGEQuantizer`` with
            ``bits_A`` and the backward's error from one with ``bits_E`` (through ReLU/pooling only).
        bits_A, bits_E: those grids; only read when ``integer``; -1: float path for those products.
    """

    features: int
    bits_W: int
    factor: float = 2.0
    W_mode: str = "nearest"
    kernel_init: Callable[..., jax.Array] | None = None
    param_dtype: DTypeLike = jnp.float32
    dtype: DTypeLike | None = None
    integer: bool | str = False
    bits_A: int = FULL_PRECISION
    bits_E: int = FULL_PRECISION

    @nn.compact
    def __call__(self, x: ArrayLike) -> jax.Array:
        if jnp.ndim(x) == 0:
            raise ValueError(f"WAGEDense input x must be at least 1-d (..., in), got a 0-d array {x!r}")
        kernel = self.param("kernel", _init(self), (jnp.shape(x)[-1], self.features), self.param_dtype)
        y = wage_dot_general(self.bits_W, self.factor, self.W_mode, integer=self.integer, bits_A=self.bits_A,
                             bits_E=self.bits_E)(x, kernel, (((jnp.ndim(x) - 1,), (0,)), ((), ())), key=_w_key(self))
        return y if self.dtype is None else y.astype(self.dtype)


class WAGEConv(nn.Module):
    """2-D convolution without bias (NHWC, kernel HWIO) whose forward uses ``QW(kernel, bits_W, scale)``.

    The same as ``nn.Conv(features, kernel_size, strides, padding, use_bias=False, kernel_init=
    wage_kernel_init(bits_W, factor), conv_general_dilated_cls=partial(WAGEConvGeneralDilated, ...))``, bit
    for bit. ``kernel_size``: an int or two ints; ``padding``: ``"SAME"``, ``"VALID"``, an int, two ints or two
    ``(lo, hi)`` pairs. Input 4-d NHWC. ``lowering``: how the convolution is computed, the same bits in
    every case: ``"conv"`` (the backend's convolution), ``"patches"`` (patches and a ``dot_general``, no
    convolution in the forward or backward) or, with ``integer``, ``"int8_f32"`` (integer operands with a
    float32 result); see ``wage_jax.wage_conv_general_dilated``. Attributes otherwise as ``WAGEDense``'s.
    """

    features: int
    bits_W: int
    kernel_size: int | Sequence[int] = (3, 3)
    strides: int | Sequence[int] = (1, 1)
    padding: str | int | Sequence[int] | Sequence[tuple[int, int]] = "SAME"
    factor: float = 2.0
    W_mode: str = "nearest"
    kernel_init: Callable[..., jax.Array] | None = None
    param_dtype: DTypeLike = jnp.float32
    dtype: DTypeLike | None = None
    integer: bool | str = False
    bits_A: int = FULL_PRECISION
    bits_E: int = FULL_PRECISION
    lowering: str = "conv"

    @nn.compact
    def __call__(self, x: ArrayLike) -> jax.Array:
        if jnp.ndim(x) != 4:
            raise ValueError(f"WAGEConv input x must be 4-d NHWC (batch, height, width, channels), "
                             f"got shape {jnp.shape(x)}")
        padding = conv_padding(self.padding)
        shape = (*positive_pair(self.kernel_size), jnp.shape(x)[-1], self.features)
        kernel = self.param("kernel", _init(self), shape, self.param_dtype)
        conv = wage_conv_general_dilated(self.bits_W, self.factor, self.W_mode, integer=self.integer,
                                         bits_A=self.bits_A, bits_E=self.bits_E, lowering=self.lowering)
        y = conv(x, kernel, positive_pair(self.strides, "strides"), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                 key=_w_key(self))
        return y if self.dtype is None else y.astype(self.dtype)


def _init(module: nn.Module) -> Callable[..., jax.Array]:
    check_bits(module.bits_W, "bits_W")
    return module.kernel_init if module.kernel_init is not None else wage_kernel_init(module.bits_W, module.factor)
