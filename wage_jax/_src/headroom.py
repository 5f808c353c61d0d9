"""Exactness headroom: how large a WAGE layer's sums get, in units of their operands' grids, against 2^24.

Every operand of a WAGE product is on a fixed-point grid (``wage_jax.integer``), so each product is an
integer times ``unit_a * unit_b`` and exact in float32. A sum of such products is exact in *any* order (so
any backend, algorithm or reduction tree gives the same bits) when every partial sum is an integer of at
most 2^24 units, float32's contiguous integers. ``exact_in_float32`` proves that from the shapes alone
(``terms * kmax_a * kmax_b``), which the convolutions' kernel gradients fail (a reduction over the batch
and every position). The data usually stay below that bound: ``sum_bounds`` measures it. A partial sum, in
any order or reduction tree, adds a subset of an output element's products, so its magnitude is at most
the larger of the sum of the positive products and that of the negative ones, ``max(P, N) = (sum |p| +
|sum p|) / 2`` (in units), and the order that adds the positive ones first reaches it; its maximum over the
output is the layer's figure. At most 2^24: exact in any order; above: the float32 sums may round,
differently on two backends (the integer mode's int32 sums never do).

The bounds are computed in float32 at ``Precision.HIGHEST`` (past 2^24 they round too: a relative error of
a few 2^-24, immaterial to a comparison with 2^24).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

from wage_jax._src.conv_lowering import explicit_pads
from wage_jax._src.functional import QW
from wage_jax._src.integer import _grid
from wage_jax._src.layers import conv_padding
from wage_jax._src.train import sse_loss
from wage_spec import check_bits, wage_init_limits

__all__ = ["EXACT_SUM_LIMIT", "PRODUCTS", "layer_sum_bounds", "sum_bounds"]

EXACT_SUM_LIMIT = 2**24
PRODUCTS = ("forward", "input_grad", "kernel_grad")


def _unit(bits: object, name: str, scale: float = 1.0) -> np.float32:
    """``1 / unit`` of the grid of ``bits`` (and ``scale``); a ValueError naming ``name`` where there is none."""
    g = _grid(check_bits(bits, name, allow_full_precision=True), scale)
    if g.dtype is None:
        raise ValueError(f"{name}={bits} (scale {scale:g}) has no fixed-point grid of at most 16 bits: its sums "
                         "have no integer bound")
    return np.float32(1.0 / g.unit)


def sum_bounds(
    kind: str, x: jax.Array, w: jax.Array, e: jax.Array, bits_A: int, bits_W: int, bits_E: int, scale: float, *,
    strides: Sequence[int] = (1, 1), padding: str | Sequence[tuple[int, int]] = "SAME",
) -> dict[str, jax.Array]:
    """The largest partial sum of one output element, in units of the grids, for a layer's three products.

    Args:
        kind: ``"dense"`` (``x @ w``) or ``"conv"`` (2-D NHWC/HWIO, no dilation or groups).
        x: the layer's input on the ``bits_A`` grid: ``(..., in)`` or ``(N, H, W, Ci)``, float32.
        w: the quantized weights ``QW(kernel, bits_W, scale)``: ``(in, out)`` or ``(kh, kw, Ci, Co)``.
        e: the error entering the layer's backward, on the ``bits_E`` grid: the output's shape.
        bits_A, bits_W, bits_E, scale: the grids (WAGE Eq. 5-10); each must have one of at most 16 bits.
        strides, padding: the convolution's.

    Returns:
        ``{"forward": x w, "input_grad": e w, "kernel_grad": x e}``: for each product, the largest over its
        output elements of ``max(P, N) = (sum |p| + |sum p|) / 2``, float32 scalars in units of the two
        operands' grids. At most ``EXACT_SUM_LIMIT`` (2^24): that product's float32 sums are exact in any order.

    Raises:
        ValueError: ``kind`` unknown, or a ``bits`` (full precision, more than 16 bits) without a grid.
    """
    if kind not in ("dense", "conv"):
        raise ValueError(f"kind must be 'dense' or 'conv', got {kind!r}")
    ux, uw, ue = _unit(bits_A, "bits_A"), _unit(bits_W, "bits_W", scale), _unit(bits_E, "bits_E")
    if kind == "dense":
        def product(a, b):
            return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)
    else:
        pads = explicit_pads(padding, x.shape, w.shape, tuple(strides))

        def product(a, b):
            return lax.conv_general_dilated(a, b, tuple(strides), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            precision=lax.Precision.HIGHEST)

    kx, kw, ke = (jnp.asarray(a, jnp.float32) * u for a, u in ((x, ux), (w, uw), (e, ue)))
    y, vjp = jax.vjp(product, jnp.abs(kx), jnp.abs(kw))
    absolute = (y, *vjp(jnp.abs(ke)))  # sum |p| per output element
    y, vjp = jax.vjp(product, kx, kw)
    signed = (y, *vjp(ke))  # sum p
    return {name: jnp.max((a + jnp.abs(s)) * np.float32(0.5), initial=0.0)
            for name, a, s in zip(PRODUCTS, absolute, signed, strict=True)}


def layer_sum_bounds(
    model: nn.Module, params: Any, x: jax.Array, y: jax.Array, *, rngs: dict[str, jax.Array] | None = None,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = sse_loss,
) -> dict[str, dict[str, jax.Array]]:
    """``sum_bounds`` of every WAGE layer of a linen model, for one batch, as a training step sees it.

    Runs ``model.apply({"params": params}, x, rngs=rngs)`` and the gradient of ``loss_fn(logits, y)``
    (the same keys: the same draws as the step), capturing each ``WAGEDense``'s and ``WAGEConv``'s input,
    quantized kernel and the error reaching its output. Jit it (one compilation); wrap it in
    ``wage_jax.checked.checkify`` with ``check_exact_sums`` to check the bounds at run time.

    Args:
        model: a linen model whose WAGE layers are ``wage_jax.linen.WAGEDense``/``WAGEConv`` with their
            ``bits_A`` and ``bits_E`` set (``wage_jax.models`` sets them) and ``W_mode="nearest"``.
        params: its parameters (the weight accumulators).
        x, y: a batch and its labels, as the step takes them.
        rngs: the step's keys (``{"wage": key}``), for stochastic A and E rounding.
        loss_fn: the step's loss (default ``sse_loss``).

    Returns:
        ``{layer path ("conv0", "block/dense1"): {product: bound}}`` in the order the layers run.

    Raises:
        ValueError: a layer with a stochastic ``W_mode`` (its draws cannot be repeated here) or a grid missing.
    """
    from wage_jax.linen import WAGEDense

    layers: dict[str, nn.Module] = {}  # static fields only are read from these

    def loss(perturb):
        captured = {}

        def interceptor(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            name = _wage_layer(context)
            if name is None:
                return out
            layers[name] = context.module
            captured[name] = (jnp.asarray(args[0], jnp.float32), context.module.variables["params"]["kernel"])
            return out + perturb[name]  # d loss / d perturb[name]: the error reaching the layer's output

        with nn.intercept_methods(interceptor):
            logits = model.apply({"params": params}, x, rngs=rngs)
        return loss_fn(logits, y), captured

    shapes = jax.eval_shape(lambda: _outputs(model, params, x, rngs))
    errors, captured = jax.grad(loss, has_aux=True)({n: jnp.zeros(s.shape, s.dtype) for n, s in shapes.items()})
    bounds = {}
    for name, (layer_x, kernel) in captured.items():
        m = layers[name]
        if m.W_mode != "nearest":
            raise ValueError(f"layer_sum_bounds: layer {name} has W_mode={m.W_mode!r}; its QW draws cannot be "
                             "repeated here (W_mode='nearest' only)")
        scale = wage_init_limits(math.prod(kernel.shape[:-1]), m.bits_W, m.factor)[1]
        w, e = QW(kernel, m.bits_W, scale), errors[name]
        if isinstance(m, WAGEDense):
            bounds[name] = sum_bounds("dense", layer_x.reshape(-1, layer_x.shape[-1]), w, e.reshape(-1, w.shape[-1]),
                                      m.bits_A, m.bits_W, m.bits_E, scale)
        else:
            bounds[name] = sum_bounds("conv", layer_x, w, e, m.bits_A, m.bits_W, m.bits_E, scale,
                                      strides=tuple(int(v) for v in m.strides), padding=conv_padding(m.padding))
    return bounds


def _wage_layer(context: Any) -> str | None:
    """The path (``"block/conv0"``) of the module a ``nn.intercept_methods`` call enters, if it is a WAGE layer's
    ``__call__``; else None."""
    from wage_jax.linen import WAGEConv, WAGEDense

    if context.method_name == "__call__" and isinstance(context.module, (WAGEDense, WAGEConv)):
        return "/".join(context.module.scope.path)
    return None


def _outputs(model: nn.Module, params: Any, x: jax.Array, rngs: dict[str, jax.Array] | None) -> dict[str, jax.Array]:
    """Each WAGE layer's output, by path (the perturbations' shapes)."""
    outs: dict[str, jax.Array] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        name = _wage_layer(context)
        if name is not None:
            outs[name] = out
        return out

    with nn.intercept_methods(interceptor):
        model.apply({"params": params}, x, rngs=rngs)
    return outs
