"""WAGE for Flax linen: ``WAGEQuantizer``, ``WAGEDense``, ``WAGEConv``.

Thin modules over ``wage_jax.ops`` and ``wage_jax.wage_quantizer``. Stochastic modes draw from the rng
stream named ``"wage"``: ``model.apply(variables, x, rngs={"wage": key})``.

Carried forward weights: given the variable collection ``"wage_forward"`` (``FORWARD_COLLECTION``), a layer
whose kernel has an entry there computes with it instead of ``QW(kernel)`` (``W_mode="nearest"`` only),
``model.apply({"params": p, "wage_forward": fw}, x)``. ``fw`` is the optimizer's
``wage_jax.optax.carry_forward_weights`` state, built for a model by ``kernel_quantizers``;
``make_apply_fn`` and ``wage_jax.train.make_train_step`` pass it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.typing import ArrayLike, DTypeLike

from wage_jax._rng import RNG_STREAM
from wage_jax.initializers import kernel_scale, wage_kernel_init
from wage_jax.ops import conv_padding, kernel_size_2d, wage_conv, wage_dense
from wage_jax.optax import KernelQuantizer
from wage_jax.wage_quantizer import wage_quantize
from wage_spec import FULL_PRECISION, check_bits, check_mode, draws_randomness

__all__ = ["FORWARD_COLLECTION", "WAGEConv", "WAGEDense", "WAGEQuantizer", "kernel_quantizers", "make_apply_fn"]

FORWARD_COLLECTION = "wage_forward"

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


def _wage_kernel(
    module: nn.Module, shape: tuple[int, ...]
) -> tuple[jax.Array, float, jax.Array | None, jax.Array | None]:
    """Declare the layer's kernel (the accumulator); return it, its static scale, W's rng key and the carried
    forward weights (None unless the ``"wage_forward"`` collection has this layer's kernel)."""
    check_bits(module.bits_W, "bits_W")
    check_mode(module.W_mode, "W_mode")
    if module.integer:
        check_bits(module.bits_A, "bits_A", allow_full_precision=True)
        check_bits(module.bits_E, "bits_E", allow_full_precision=True)
    init = module.kernel_init if module.kernel_init is not None else wage_kernel_init(module.bits_W, module.factor)
    kernel = module.param("kernel", init, shape, module.param_dtype)
    key = module.make_rng(RNG_STREAM) if module.W_mode == "stochastic" else None
    forward = module.get_variable(FORWARD_COLLECTION, "kernel")  # None when absent
    return kernel, kernel_scale(shape, module.bits_W, module.factor), key, forward


def _output(y: jax.Array, dtype: DTypeLike | None) -> jax.Array:
    return y if dtype is None else y.astype(dtype)


_LAYER_FIELDS = """
    Attributes:
        bits_W: weight bits, an int in [2, 24].
        factor: the initializer's variance factor. The default 2.0 is the documented torch
            ``wage_init_``'s; the paper's models use 1.0 (``WAGEConfig.factor``, passed by
            ``wage_jax.models``). The layer's ``scale`` always comes from ``factor``.
        W_mode: ``QW``'s rounding, ``"nearest"`` or ``"stochastic"`` (draws from the ``"wage"`` stream).
            With ``"nearest"``, the layer uses the carried ``QW(kernel)`` of the ``"wage_forward"``
            collection when given one (see the module docstring).
        kernel_init: overrides the WAGE initializer's draw ``init(key, shape, dtype)`` (the scale still
            comes from ``bits_W`` and ``factor``).
        param_dtype: the kernel's dtype (float32).
        dtype: the output's dtype; None: float32. WAGE computes in float32 whatever this is.
        integer: compute the products on int8/int16 with int32 sums (``wage_jax.integer``),
            bit-identical to the float path. Contract: the input comes from a ``WAGEQuantizer`` with
            ``bits_A`` and the backward's error from one with ``bits_E`` (through ReLU/pooling only).
        bits_A, bits_E: those grids; only read when ``integer``; -1: float path for those products.
"""


class WAGEDense(nn.Module):
    """Dense layer without bias whose forward uses ``QW(kernel, bits_W, scale)`` (WAGE Eq. 5-7).

    ``kernel`` ``(in, features)`` is the weight accumulator, drawn by the WAGE initializer; ``scale`` is
    the layer's power of two from the same initializer, a static function of the kernel's shape.
    Input ``(..., in)`` (at least 1-d), output ``(..., features)``.
    """

    features: int
    bits_W: int
    factor: float = 2.0
    W_mode: str = "nearest"
    kernel_init: Callable[..., jax.Array] | None = None
    param_dtype: DTypeLike = jnp.float32
    dtype: DTypeLike | None = None
    integer: bool = False
    bits_A: int = FULL_PRECISION
    bits_E: int = FULL_PRECISION

    @nn.compact
    def __call__(self, x: ArrayLike) -> jax.Array:
        if jnp.ndim(x) == 0:
            raise ValueError(f"WAGEDense input x must be at least 1-d (..., in), got a 0-d array {x!r}")
        kernel, scale, key, forward = _wage_kernel(self, (jnp.shape(x)[-1], self.features))
        y = wage_dense(x, kernel, self.bits_W, scale, self.W_mode, key=key, forward=forward, integer=self.integer,
                       bits_A=self.bits_A, bits_E=self.bits_E)
        return _output(y, self.dtype)


class WAGEConv(nn.Module):
    """2-D convolution without bias (NHWC, kernel HWIO) whose forward uses ``QW(kernel, bits_W, scale)``.

    ``kernel_size``: an int or two ints; ``padding``: Flax's forms (``"SAME"``, ``"VALID"``, an int,
    two ints, two ``(lo, hi)`` pairs; see ``wage_jax.ops.conv_padding``). Input 4-d NHWC.
    """

    features: int
    bits_W: int
    kernel_size: int | Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: str | int | Sequence[int] | Sequence[tuple[int, int]] = "SAME"
    factor: float = 2.0
    W_mode: str = "nearest"
    kernel_init: Callable[..., jax.Array] | None = None
    param_dtype: DTypeLike = jnp.float32
    dtype: DTypeLike | None = None
    integer: bool = False
    bits_A: int = FULL_PRECISION
    bits_E: int = FULL_PRECISION

    @nn.compact
    def __call__(self, x: ArrayLike) -> jax.Array:
        if jnp.ndim(x) != 4:
            raise ValueError(f"WAGEConv input x must be 4-d NHWC (batch, height, width, channels), "
                             f"got shape {jnp.shape(x)}")
        padding = conv_padding(self.padding)
        kernel, scale, key, forward = _wage_kernel(
            self, (*kernel_size_2d(self.kernel_size), jnp.shape(x)[-1], self.features))
        y = wage_conv(x, kernel, self.bits_W, scale, self.W_mode, strides=self.strides, padding=padding, key=key,
                      forward=forward, integer=self.integer, bits_A=self.bits_A, bits_E=self.bits_E)
        return _output(y, self.dtype)


WAGEDense.__doc__ += _LAYER_FIELDS
WAGEConv.__doc__ += _LAYER_FIELDS


def kernel_quantizers(model: nn.Module, *args: Any, **kwargs: Any) -> dict:
    """The ``QW`` arguments of every carriable kernel of ``model``: ``carry_forward_weights``' configuration.

    Traces ``model.init`` abstractly (``jax.eval_shape``: no arrays are computed) on the example inputs and
    records each ``WAGEDense``/``WAGEConv`` with ``W_mode="nearest"`` at its path; layers with stochastic
    ``W_mode`` are left out (their ``QW`` draws new noise every pass and cannot be carried).

    Args:
        model: a linen module (e.g. ``wage_jax.models.MLP``).
        *args, **kwargs: example inputs of ``model.__call__`` (only shapes and dtypes matter).

    Returns:
        a nested dict with the structure of the ``"wage_forward"`` collection, a ``KernelQuantizer(bits_W,
        scale)`` at each kernel's path, e.g. ``{"dense0": {"kernel": KernelQuantizer(2, 16.0)}}``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from wage_jax.models import MLP
        >>> kernel_quantizers(MLP(hidden=(64,)), jnp.zeros((1, 784)))["dense0"]
        {'kernel': KernelQuantizer(bits_W=2, scale=16.0)}
    """
    found: dict = {}

    def record(next_fun: Callable[..., Any], fargs: tuple, fkwargs: dict, context: Any) -> Any:
        out = next_fun(*fargs, **fkwargs)
        m = context.module
        if context.method_name == "__call__" and isinstance(m, (WAGEDense, WAGEConv)) and m.W_mode == "nearest":
            shape = m.get_variable("params", "kernel").shape
            node = found
            for name in m.path:
                node = node.setdefault(name, {})
            node["kernel"] = KernelQuantizer(m.bits_W, kernel_scale(shape, m.bits_W, m.factor))
        return out

    key = jax.random.key(0)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.init({"params": key, RNG_STREAM: key}, *args, **kwargs))
    return found


def make_apply_fn(model: nn.Module) -> Callable[..., jax.Array]:
    """``apply_fn(params, x, key=None, forward_weights=None) -> model.apply(...)``, for ``make_train_step``.

    ``key`` feeds the ``"wage"`` rng stream (None: no stream); ``forward_weights`` (the carried ``QW`` of the
    kernels, ``wage_jax.optax.carried_forward_weights``) is passed as the ``"wage_forward"`` collection.

    Args:
        model: a linen module.

    Returns:
        the apply function.
    """

    def apply_fn(params: Any, x: ArrayLike, key: jax.Array | None = None, forward_weights: Any = None) -> jax.Array:
        variables = {"params": params}
        if forward_weights:
            variables[FORWARD_COLLECTION] = forward_weights
        return model.apply(variables, x, rngs=None if key is None else {RNG_STREAM: key})

    return apply_fn
