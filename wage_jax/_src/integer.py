"""Integer execution of WAGE's matmuls and convolutions: int8 operands, int32 sums, one power-of-two rescale.

In WAGE every operand of a layer's products is on a fixed-point grid (docs/contract.md §2):

- activations after ``Q_A``: ``k * 2^-(bits_A-1)`` with ``|k| <= 2^(bits_A-1) - 1`` (Eq. 8);
- forward weights ``QW(w)``: ``k * 2^-(bits_W-1) / scale``, the division only when ``scale > 1.8``
  (Eq. 5-7); the initializer's scales are powers of two;
- errors after ``Q_E``: ``k * 2^-(bits_E-1)`` (Eq. 10; ``wage_quantize``'s backward returns the grid
  value of the shifted error, the shift is not undone). ReLU's and max-pooling's backward only route
  and zero values, so the error entering a layer's backward is still on that grid.

So each product ``a @ b`` equals ``(k_a @ k_b) * unit_a * unit_b`` with integer ``k``: ``k_a`` and
``k_b`` are converted exactly to int8 (int16 for grids of 9 to 16 bits), multiplied with int32
accumulation (``preferred_element_type``) and the int32 sum converted to float32 and multiplied by
the exact power of two ``unit_a * unit_b``. The backward is a ``jax.custom_vjp``: the input's
gradient is error x weights, the kernel's is activations x error, computed the same way, except that a
convolution's backward never convolves integer types: the ``"conv"`` and ``"int8_f32"`` lowerings convolve
the integers in float32 there (exact within the plan), the ``"patches"`` lowering (and every lowering with
``sums="int32"``) multiplies them with int32 sums (``integer_conv``).

Exactness (checked statically): the float32 path is exact in any summation order, and equal to the
integer path, when ``terms * max|k_a| * max|k_b| <= 2^24`` (``terms``: the length of the reduction).
Each product for which the shapes and bits cannot guarantee this, or whose operands are not on a grid
of at most 16 bits (``bits == -1``, or ``bits > 16``, or a scale that is not a power of two), is
computed by the float32 path instead (the documented fallback): the integer mode never changes a
result. ``integer_plan`` says which products run on integers.

int32 sums (``sums="int32"``; the layers' ``integer="int32"``): the plan runs every product on integers whose
largest possible sum fits int32, ``terms * max|k_a| * max|k_b| < 2^31``, the backward's included (a
convolution's kernel gradient sums over the batch and the positions, past 2^24 at VGG7's usual batches).
Integer sums are exact in any order, so the result, rounded once to float32, is the same on every backend
and equal to the float32 path wherever that path is exact (within 2^24); past 2^24 it is the exact sum
rounded once, where a float32 sum may round at every step. The backward multiplies with int32 dots in every
lowering (a float32 convolution of the integers would be exact within 2^24 only); products past 2^31 fall
back to the float32 path, as ``integer_plan`` says.

Checks: ``bits_A``, ``bits_W``, ``bits_E`` and ``scale`` are validated eagerly as the quantizers validate them
(a ValueError/TypeError naming the argument: 0, 1, ``True`` or 8.5 bits are refused). Every operand of a product
that runs on integers must be finite and on its grid: eagerly a ValueError names the operand, under ``jit``
the product is all NaN (never a wrong integer: NaN would become -0.25, 2.0 on an 8-bit grid 0.496).

Precondition (the layer's declared contract, checked as above): with ``integer=True`` the
layer's input comes from a ``WAGEQuantizer`` with ``bits_A`` (the layer's ``bits_A``) and the error
entering its backward from a ``WAGEQuantizer``'s backward with ``bits_E`` (the layer's ``bits_E``),
through at most ReLU, max-pooling and reshapes. ``wage_jax.models`` builds every layer this way;
``on_grid`` checks an array.

References:
    Wu, Li, Chen, Shi. Training and Inference with Integers in Deep Neural Networks. ICLR 2018.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wage_jax._src.conv_lowering import (
    check_lowering,
    conv_patches,
    explicit_pads,
    out_size,
    patches,
    patches_dot,
    patches_transpose,
)
from wage_spec import FULL_PRECISION, check_bits, check_scale

__all__ = ["SUMS", "check_sums", "exact_in_float32", "integer_conv", "integer_dense", "integer_plan", "on_grid"]

_F32_EXACT = 2**24
_I32_LIMIT = 2**31  # a sum of magnitude below this fits int32
SUMS = ("float32", "int32")


class _Grid(NamedTuple):
    """A fixed-point grid ``k * unit`` with ``|k| <= kmax``; ``dtype`` holds ``k`` (None: no integer form)."""

    unit: float
    kmax: int
    dtype: type | None


def _grid(bits: int, scale: float = 1.0) -> _Grid:
    """The grid of WAGE's ``FP(.; bits, bits-1, clamp, symmetric)``, divided by ``scale`` if ``scale > 1.8``."""
    if bits == FULL_PRECISION or bits > 16:
        return _Grid(0.0, 0, None)
    unit = 2.0 ** -(bits - 1)
    if scale > 1.8:
        mantissa, _ = math.frexp(scale)
        if mantissa != 0.5:  # not a power of two: QW's division is not exact on a grid
            return _Grid(0.0, 0, None)
        unit /= scale
    return _Grid(unit, 2 ** (bits - 1) - 1, np.int8 if bits <= 8 else np.int16)


def exact_in_float32(terms: int, bits_a: int, bits_b: int) -> bool:
    """Whether any sum of ``terms`` products of two grids' integers stays within float32's ``2^24``.

    Args:
        terms: the reduction length of the matmul or convolution.
        bits_a, bits_b: the operands' grids (``FP(.; bits, bits-1)``: ``|k| <= 2^(bits-1) - 1``).

    Returns:
        ``terms * (2^(bits_a-1) - 1) * (2^(bits_b-1) - 1) <= 2^24``.

    Examples:
        >>> exact_in_float32(784, 8, 8), exact_in_float32(1152, 8, 8)
        (True, False)
    """
    return terms * (2 ** (bits_a - 1) - 1) * (2 ** (bits_b - 1) - 1) <= _F32_EXACT


def on_grid(x: jax.Array, bits: int, scale: float = 1.0) -> jax.Array:
    """Whether every element of ``x`` is ``k * 2^-(bits-1) (/ scale)`` with ``|k| <= 2^(bits-1) - 1``.

    Returns a boolean scalar array (usable under ``jit``); for checking the integer mode's precondition.
    """
    g = _grid(bits, scale)
    if g.dtype is None:
        raise ValueError(f"bits={bits}, scale={scale} has no integer grid of at most 16 bits")
    k = jnp.asarray(x, jnp.float32) * np.float32(1.0 / g.unit)
    return jnp.all((k == jnp.round(k)) & (jnp.abs(k) <= g.kmax))


def _validate(bits_A: object, bits_W: object, bits_E: object, scale: object) -> tuple[int, int, int, float]:
    """The arguments checked as the quantizers check them: ``bits_W`` an int in [2, 24], ``bits_A``/``bits_E``
    also -1 (full precision), ``scale`` a positive finite number (TypeError/ValueError naming the argument)."""
    return (check_bits(bits_A, "bits_A", allow_full_precision=True), check_bits(bits_W, "bits_W"),
            check_bits(bits_E, "bits_E", allow_full_precision=True), check_scale(scale, "scale"))


def _fits(x: jax.Array, g: _Grid) -> jax.Array:
    """Whether every element of ``x`` is finite and on grid ``g`` (a boolean scalar; NaN and Inf are not)."""
    k = x * np.float32(1.0 / g.unit)
    return jnp.all(jnp.isfinite(k) & (k == jnp.round(k)) & (jnp.abs(k) <= g.kmax))


def _checked(y: jax.Array, pairs: Sequence[tuple[jax.Array, _Grid, str]]) -> jax.Array:
    """``y`` when every operand lies on its grid; eagerly a ValueError naming the first that does not, under
    ``jit`` an all-NaN ``y`` (an off-grid operand would be truncated to a wrong integer, NaN become -0.25).
    Operands on the float32 path (no grid) are not checked: that path computes them as they are."""
    ok = None
    for a, g, name in pairs:
        if g.dtype is None:
            continue
        fits = _fits(a, g)
        if not isinstance(fits, jax.core.Tracer) and not bool(fits):  # a value now (eager): raise
            bad = "NaN or Inf" if not bool(jnp.isfinite(a).all()) else "values off its integer grid"
            raise ValueError(f"{name} holds {bad} (multiples of {g.unit:g} up to {g.kmax * g.unit:g} in "
                             "magnitude): the integer path needs WAGE-quantized operands")
        ok = fits if ok is None else ok & fits
    return y if ok is None else jnp.where(ok, y, jnp.float32(jnp.nan))


def _to_int(x: jax.Array, g: _Grid, other: _Grid) -> jax.Array:
    """``x``'s integers ``k`` in the wider of the two operands' integer dtypes (XLA needs one dtype)."""
    dtype = np.int16 if np.int16 in (g.dtype, other.dtype) else np.int8
    return (x * np.float32(1.0 / g.unit)).astype(dtype)


def _rescale(s: jax.Array, ga: _Grid, gb: _Grid) -> jax.Array:
    return s.astype(jnp.float32) * np.float32(ga.unit * gb.unit)


class _Plan(NamedTuple):
    """Static decisions of one layer: the three products' grids and whether each runs on integers."""

    x: _Grid
    w: _Grid
    e: _Grid
    forward: bool
    input_grad: bool
    kernel_grad: bool
    sums: str = "float32"


def check_sums(sums: object, lowering: str = "conv") -> str:
    """``sums`` validated: ``"float32"`` (integers only where float32 is exact) or ``"int32"``, the latter not with
    the ``"int8_f32"`` lowering (its forward sums are float32)."""
    if sums not in SUMS:
        raise ValueError(f"sums must be one of {', '.join(repr(v) for v in SUMS)}, got {sums!r}")
    if sums == "int32" and lowering == "int8_f32":
        raise ValueError("lowering='int8_f32' sums in float32 (exact within 2^24 only): with int32 sums use "
                         "lowering='patches' (what XLA:GPU compiles) or 'conv'")
    return str(sums)


def _decide(ga: _Grid, gb: _Grid, terms: int, sums: str) -> bool:
    """Whether a product runs on integers: both grids have an integer form and its largest possible sum stays
    within float32's exact range (``sums="float32"``: the same bits as the float32 path) or below int32's limit
    (``sums="int32"``: exact, and so the same bits in any summation order on any backend)."""
    bound = terms * ga.kmax * gb.kmax
    fits = bound <= _F32_EXACT if sums == "float32" else bound < _I32_LIMIT
    return ga.dtype is not None and gb.dtype is not None and fits


def _plan(bits_A: int, bits_W: int, bits_E: int, scale: float, terms: tuple[int, int, int],
          sums: str = "float32") -> _Plan:
    gx, gw, ge = _grid(bits_A), _grid(bits_W, scale), _grid(bits_E)
    return _Plan(gx, gw, ge, _decide(gx, gw, terms[0], sums), _decide(ge, gw, terms[1], sums),
                 _decide(gx, ge, terms[2], sums), sums)


def integer_plan(
    kind: str, x_shape: Sequence[int], kernel_shape: Sequence[int], bits_A: int, bits_W: int, bits_E: int,
    scale: float, *, strides: Sequence[int] = (1, 1), padding: str | Sequence[tuple[int, int]] = "SAME",
    sums: str = "float32",
) -> dict[str, bool]:
    """Which of a layer's products run on integers: ``{"forward", "input_grad", "kernel_grad"}`` -> bool.

    ``kind`` is ``"dense"`` or ``"conv"``; the shapes and arguments are those of ``integer_dense`` /
    ``integer_conv``. A product runs on integers when both operands have a grid of at most 16 bits and
    its largest possible sum, ``terms * max|k_a| * max|k_b|``, is at most ``2^24`` (``sums="float32"``:
    ``exact_in_float32``) or below ``2^31`` (``sums="int32"``); ``False`` names a product computed by the
    float32 path instead.
    """
    if kind == "dense":
        terms = _dense_terms(tuple(x_shape), tuple(kernel_shape))
    elif kind == "conv":
        terms = _conv_terms(tuple(x_shape), tuple(kernel_shape), tuple(strides), padding)
    else:
        raise ValueError(f"kind must be 'dense' or 'conv', got {kind!r}")
    p = _plan(bits_A, bits_W, bits_E, scale, terms, check_sums(sums))
    return {"forward": p.forward, "input_grad": p.input_grad, "kernel_grad": p.kernel_grad}


# ----------------------------------------------------------------------------------------------- dense


def _dense_terms(x_shape: tuple[int, ...], k_shape: tuple[int, ...]) -> tuple[int, int, int]:
    return k_shape[0], k_shape[1], math.prod(x_shape[:-1])


def _dense_float(x, w):
    return jnp.matmul(x, w, precision=lax.Precision.HIGHEST)


def _int_dot(a: jax.Array, ga: _Grid, b: jax.Array, gb: _Grid, contracting) -> jax.Array:
    """``dot_general`` of two grids' integers with int32 sums, rescaled to float32."""
    s = lax.dot_general(_to_int(a, ga, gb), _to_int(b, gb, ga), (contracting, ((), ())),
                        preferred_element_type=jnp.int32)
    return _rescale(s, ga, gb)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _int_dense(x, w, plan: _Plan):
    return _int_dense_fwd(x, w, plan)[0]


def _int_dense_fwd(x, w, plan: _Plan):
    if plan.forward:
        y = _checked(_int_dot(x, plan.x, w, plan.w, ((x.ndim - 1,), (0,))), [(x, plan.x, "x"), (w, plan.w, "w")])
    else:
        y = _dense_float(x, w)
    return y, (x, w)


def _int_dense_bwd(plan: _Plan, res, g):
    x, w = res
    float_grads = None
    if not (plan.input_grad and plan.kernel_grad):
        float_grads = jax.vjp(_dense_float, x, w)[1](g)
    if plan.input_grad:
        dx = _checked(_int_dot(g, plan.e, w, plan.w, ((g.ndim - 1,), (1,))), [(g, plan.e, "the error")])
    else:
        dx = float_grads[0]
    if plan.kernel_grad:
        batch = tuple(range(x.ndim - 1))
        dw = _checked(_int_dot(x, plan.x, g, plan.e, (batch, batch)), [(g, plan.e, "the error")])
    else:
        dw = float_grads[1]
    return dx, dw


_int_dense.defvjp(_int_dense_fwd, _int_dense_bwd)


def integer_dense(x: jax.Array, w: jax.Array, bits_A: int, bits_W: int, bits_E: int, scale: float, *,
                  sums: str = "float32") -> jax.Array:
    """``x @ w`` on integers, with the same float32 result and gradients as the float32 path.

    Args:
        x: ``(..., in)`` float32 activations on the ``bits_A`` grid (``Q_A``'s output).
        w: ``(in, out)`` float32 ``QW(kernel, bits_W, scale)``.
        bits_A, bits_W, bits_E: the grids of the input, the weights and the error entering the
            backward (``-1``: that operand's products use the float path).
        scale: the layer's power-of-two scale (``QW`` divides by it when ``scale > 1.8``).
        sums: ``"float32"``: integers only for the products whose sums float32 holds exactly (within
            ``2^24``); ``"int32"``: integers for every product whose sums fit int32 (below ``2^31``), each
            rounded once to float32 (the module docstring, "int32 sums").

    Returns:
        ``(..., out)`` float32, bit-identical to ``x @ w`` at ``Precision.HIGHEST`` wherever that path is
        exact (see the module docstring for the precondition and the static exactness fallback).
    """
    bits_A, bits_W, bits_E, scale = _validate(bits_A, bits_W, bits_E, scale)
    plan = _plan(bits_A, bits_W, bits_E, scale, _dense_terms(x.shape, w.shape), check_sums(sums))
    return _int_dense(x, w, plan)


# ------------------------------------------------------------------------------------------------ conv

_DN = ("NHWC", "HWIO", "NHWC")


def _conv_terms(x_shape, k_shape, strides, padding) -> tuple[int, int, int]:
    pads = explicit_pads(padding, x_shape, k_shape, strides)
    out_hw = [out_size(x_shape[1 + i], k_shape[i], strides[i], pads[i]) for i in range(2)]
    kh, kw, cin, cout = k_shape
    return kh * kw * cin, kh * kw * cout, x_shape[0] * out_hw[0] * out_hw[1]


def _conv_float(x, w, strides, pads, lowering: str = "conv"):
    """The float32 product (the plan's fallback): patches and a dot for ``"patches"``, else the backend's conv."""
    if lowering == "patches":
        return conv_patches(x, w, strides, pads)
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_DN, precision=lax.Precision.HIGHEST)


def _sum_dtype(lowering: str):
    """The forward's integer convolution's result: int32 sums, or float32 (``"int8_f32"``: exact, the plan bounds
    them by 2^24)."""
    return jnp.float32 if lowering == "int8_f32" else jnp.int32


def _float_conv(lhs: jax.Array, rhs: jax.Array, pads: Sequence[tuple[int, int]], dimension_numbers: tuple,
                **dilation: Sequence[int]) -> jax.Array:
    """A backward convolution of two grids' integers, computed in float32 at ``HIGHEST``: exact, since the plan
    keeps every sum within 2^24. An integer-typed convolution in the backward is what XLA:GPU rewrites into
    cuDNN's backward-data and backward-filter calls, which have no int8 engines; a float32 one compiles."""
    return lax.conv_general_dilated(lhs.astype(jnp.float32), rhs.astype(jnp.float32), (1, 1), pads,
                                    dimension_numbers=dimension_numbers, precision=lax.Precision.HIGHEST, **dilation)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _int_conv(x, w, strides, pads, plan: _Plan, lowering: str):
    return _int_conv_fwd(x, w, strides, pads, plan, lowering)[0]


def _int_conv_fwd(x, w, strides, pads, plan: _Plan, lowering: str):
    if plan.forward:
        xi, wi = _to_int(x, plan.x, plan.w), _to_int(w, plan.w, plan.x)
        if lowering == "patches":
            s = patches_dot(xi, wi, strides, pads, preferred_element_type=jnp.int32)
        else:
            s = lax.conv_general_dilated(xi, wi, strides, pads, dimension_numbers=_DN,
                                         preferred_element_type=_sum_dtype(lowering))
        y = _checked(_rescale(s, plan.x, plan.w), [(x, plan.x, "x"), (w, plan.w, "w")])
    else:
        y = _conv_float(x, w, strides, pads, lowering)
    return y, (x, w)


def _dilated(size: int, dilation: int) -> int:
    """Length of a dimension of ``size`` with ``dilation - 1`` holes between its elements."""
    return 0 if size == 0 else 1 + dilation * (size - 1)


def _conv_transpose_lhs(g: jax.Array, w: jax.Array, x_hw: Sequence[int], strides: tuple[int, int],
                        pads: tuple[tuple[int, int], ...], lowering: str = "conv") -> jax.Array:
    """The input gradient of ``conv(x, w, strides, pads)``: ``g`` against the flipped, transposed kernel.

    Public ``lax.conv_general_dilated`` only (the transpose rule of JAX's convolution, 2-D, no
    dilation or groups): ``g`` (``N, Ho, Wo, Co``) is dilated by the strides (``lhs_dilation``), padded
    with ``kh - 1 - lo`` before and the rest after so that the result has ``x``'s spatial size, and
    convolved with ``w`` (``kh, kw, Ci, Co``) flipped in space and read as ``HWOI`` (``Co`` the input
    feature, ``Ci`` the output one).

    Args:
        g: ``(N, Ho, Wo, Co)`` integers (int8/int16) of the output's error.
        w: ``(kh, kw, Ci, Co)`` integers of the kernel, same dtype as ``g``.
        x_hw: the forward input's ``(H, W)``.
        strides, pads: the forward convolution's (``pads`` explicit ``(lo, hi)`` pairs).
        lowering: ``"patches"``: ``g @ w^T`` per window (a dot with int32 sums), then ``patches_transpose``;
            else this convolution on the integers in float32 (``_float_conv``: no integer convolution in the
            backward).

    Returns:
        ``(N, H, W, Ci)`` int32 sums for ``"patches"``, float32 ones (the same values) otherwise.
    """
    if lowering == "patches":
        dp = lax.dot_general(g, w.reshape(-1, w.shape[3]), (((3,), (1,)), ((), ())), preferred_element_type=jnp.int32)
        return patches_transpose(dp, x_hw, w.shape[:2], strides, pads)
    pad = []
    for i in range(2):
        before = w.shape[i] - 1 - pads[i][0]
        after = x_hw[i] + w.shape[i] - 1 - _dilated(g.shape[1 + i], strides[i]) - before
        pad.append((before, after))
    return _float_conv(g, lax.rev(w, (0, 1)), pad, ("NHWC", "HWOI", "NHWC"), lhs_dilation=strides)


def _conv_transpose_rhs(g: jax.Array, x: jax.Array, w_hw: Sequence[int], strides: tuple[int, int],
                        pads: tuple[tuple[int, int], ...], lowering: str = "conv") -> jax.Array:
    """The kernel gradient of ``conv(x, w, strides, pads)``: ``x`` correlated with ``g`` over the batch.

    Public ``lax.conv_general_dilated`` only (the transpose rule of JAX's convolution, 2-D, no
    dilation or groups): ``x`` read as ``CHWN`` (the batch ``N`` is the contracted feature) is padded
    with the forward's ``lo`` before and enough after, and convolved with ``g`` read as ``IHWO``,
    dilated by the forward strides (``rhs_dilation``); the result, read as ``HWNC``, is ``(kh, kw, Ci, Co)``.

    Args:
        g: ``(N, Ho, Wo, Co)`` integers (int8/int16) of the output's error.
        x: ``(N, H, W, Ci)`` integers of the forward input, same dtype as ``g``.
        w_hw: the kernel's ``(kh, kw)``.
        strides, pads: the forward convolution's (``pads`` explicit ``(lo, hi)`` pairs).
        lowering: ``"patches"``: ``patches(x)^T @ g`` over the batch and positions (a dot with int32 sums);
            else this convolution on the integers in float32 (``_float_conv``).

    Returns:
        ``(kh, kw, Ci, Co)`` int32 sums for ``"patches"``, float32 ones (the same values) otherwise.
    """
    if lowering == "patches":
        p = patches(x, w_hw, strides, pads)
        s = lax.dot_general(p, g, (((0, 1, 2), (0, 1, 2)), ((), ())), preferred_element_type=jnp.int32)
        return s.reshape(*w_hw, x.shape[3], g.shape[3])
    pad = []
    for i in range(2):
        lo = pads[i][0]
        hi = _dilated(g.shape[1 + i], strides[i]) - x.shape[1 + i] + w_hw[i] - lo - 1
        pad.append((lo, hi))
    return _float_conv(x, g, pad, ("CHWN", "IHWO", "HWNC"), rhs_dilation=strides)


def _int_conv_bwd(strides, pads, plan: _Plan, lowering: str, res, g):
    x, w = res
    if g.size == 0:  # an empty output (no window fits, or no example): nothing flows back
        return jnp.zeros_like(x), jnp.zeros_like(w)
    float_grads = None
    if not (plan.input_grad and plan.kernel_grad):
        float_grads = jax.vjp(lambda a, b: _conv_float(a, b, strides, pads, lowering), x, w)[1](g)
    if plan.sums == "int32":  # a float32 convolution of the integers is exact only within 2^24: int32 dots
        lowering = "patches"
    if plan.input_grad:
        gi, wi = _to_int(g, plan.e, plan.w), _to_int(w, plan.w, plan.e)
        dx = _checked(_rescale(_conv_transpose_lhs(gi, wi, x.shape[1:3], strides, pads, lowering), plan.e, plan.w),
                      [(g, plan.e, "the error")])
    else:
        dx = float_grads[0]
    if plan.kernel_grad:
        gi, xi = _to_int(g, plan.e, plan.x), _to_int(x, plan.x, plan.e)
        dw = _checked(_rescale(_conv_transpose_rhs(gi, xi, w.shape[:2], strides, pads, lowering), plan.x, plan.e),
                      [(g, plan.e, "the error")])
    else:
        dw = float_grads[1]
    return dx, dw


_int_conv.defvjp(_int_conv_fwd, _int_conv_bwd)


def integer_conv(
    x: jax.Array, w: jax.Array, bits_A: int, bits_W: int, bits_E: int, scale: float, *,
    strides: Sequence[int] = (1, 1), padding: str | Sequence[tuple[int, int]] = "SAME", lowering: str = "conv",
    sums: str = "float32",
) -> jax.Array:
    """2-D convolution (``x`` NHWC, ``w`` HWIO, no dilation or groups) on integers; see ``integer_dense``.

    ``lowering`` (``wage_jax._src.conv_lowering``): ``"conv"``, an integer convolution with int32 sums in the
    forward; ``"patches"``, patches and integer ``dot_general``s with int32 sums in the forward and the
    backward (no convolution anywhere, the float32 fallback included); ``"int8_f32"``, an integer convolution
    with a float32 result in the forward (what XLA:GPU compiles). The backward of ``"conv"`` and
    ``"int8_f32"`` convolves the integers in float32 (cuDNN has no int8 backward convolutions), exact within
    the plan's 2^24. The same bits in every case.

    ``sums="int32"`` (see ``integer_dense``) runs every product whose sums fit int32 on integers; the backward
    then multiplies with int32 sums in every lowering (as ``"patches"`` does), and ``"int8_f32"``, whose forward
    sums are float32, is refused. On XLA:GPU, ``lowering="patches"`` is the form with int32 sums throughout.

    Returns:
        NHWC float32, bit-identical to ``lax.conv_general_dilated`` at ``Precision.HIGHEST`` wherever that
        path is exact.
    """
    bits_A, bits_W, bits_E, scale = _validate(bits_A, bits_W, bits_E, scale)
    lowering = check_lowering(lowering, integer=True)
    sums = check_sums(sums, lowering)
    strides = tuple(int(s) for s in strides)
    pads = explicit_pads(padding, x.shape, w.shape, strides)
    plan = _plan(bits_A, bits_W, bits_E, scale, _conv_terms(x.shape, w.shape, strides, pads), sums)
    return _int_conv(x, w, strides, pads, plan, lowering)
