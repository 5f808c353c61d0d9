"""How the WAGE convolutions are lowered: the backend's convolution, or patches and a ``dot_general``.

Every operand of a WAGE convolution is on a fixed-point grid, so its float32 products are exact and its
sums are exact in any order while they stay within ``2^24`` units of their grid (``wage_jax.integer``):
any *direct* or GEMM algorithm gives the same bits. cuDNN also has Winograd and FFT algorithms, which
transform the operands and round on the way; XLA's autotuner may pick them (it accepts results within a
tolerance), and one ulp on a quantized activation, whose values sit on rounding ties, changes the next
quantization. The lowerings (``wage_conv_general_dilated(..., lowering=...)``):

* ``"conv"``: ``lax.conv_general_dilated`` (the backend's convolution; on a GPU, cuDNN's choice);
* ``"patches"``: the input's patches gathered by slicing (``patches``) and one ``dot_general`` with the
  kernel read as a matrix. Its derivative is ``dot_general``s and the transposes of slices (pads and
  adds): no convolution anywhere in the step, so a GEMM computes every product, exactly, whatever
  algorithm cuDNN would have picked. (``lax.conv_general_dilated_patches`` is itself a convolution with
  a one-hot kernel, so it is not used.) More memory: the patches of a 3x3 convolution are 9x its input;
* ``"int8_f32"`` (integer mode only): the integer mode's forward convolution on int8/int16 operands with a
  float32 result (``preferred_element_type=float32``), which XLA:GPU compiles (int8 x int8 -> int32
  convolutions it does not, jax-ml/jax#7637); the integer plan keeps every sum within ``2^24``, where the
  float32 result is exact.

In the integer mode no lowering puts an integer-typed convolution in the backward (cuDNN has no int8
backward-data or backward-filter engines): ``"conv"`` and ``"int8_f32"`` convolve the integers in float32
there, ``"patches"`` multiplies them with int32 sums (the one lowering with integer sums in the backward; with
int32 sums, ``wage_jax.integer``'s ``sums="int32"``, every lowering's backward multiplies that way).

All three give the same bits wherever the sums are exact (tested on the CPU: tests/test_jax_conv_lowering.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["LOWERINGS", "check_lowering", "conv_patches", "explicit_pads", "out_size", "patches", "patches_dot",
           "patches_transpose"]

LOWERINGS = ("conv", "patches", "int8_f32")


def check_lowering(lowering: object, integer: bool) -> str:
    """``lowering`` validated: one of ``LOWERINGS``; ``"int8_f32"`` only with ``integer=True``."""
    if lowering not in LOWERINGS:
        raise ValueError(f"lowering must be one of {', '.join(repr(v) for v in LOWERINGS)}, got {lowering!r}")
    if lowering == "int8_f32" and not integer:
        raise ValueError("lowering='int8_f32' lowers the integer mode's products: it needs integer=True")
    return str(lowering)


def explicit_pads(padding: str | Sequence[tuple[int, int]], x_shape: Sequence[int], k_shape: Sequence[int],
                  strides: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """A 2-D NHWC/HWIO convolution's padding as two ``(lo, hi)`` pairs (``"SAME"``/``"VALID"`` resolved)."""
    if isinstance(padding, str):
        return tuple(lax.padtype_to_pads(x_shape[1:3], k_shape[:2], strides, padding))
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def out_size(size: int, k: int, stride: int, pad: tuple[int, int]) -> int:
    """The convolution's output length along one dimension; 0 where the kernel is longer than the padded input
    (``lax.conv_general_dilated`` returns an empty result there)."""
    return max(0, (size + pad[0] + pad[1] - k) // stride + 1)


def patches(x: jax.Array, kernel_hw: Sequence[int], strides: Sequence[int],
            pads: Sequence[tuple[int, int]]) -> jax.Array:
    """The convolution's input windows: ``(N, H, W, C)`` -> ``(N, Ho, Wo, kh * kw * C)``, any dtype.

    Element ``[n, i, j, (a * kw + b) * C + c]`` is the padded input at ``(i * sh + a, j * sw + b, c)``:
    the order of an HWIO kernel ``(kh, kw, C, O)`` read as a ``(kh * kw * C, O)`` matrix. Built from strided
    slices of the zero-padded input (no arithmetic, so exact in any dtype).
    """
    n, h, w, c = x.shape
    kh, kw = kernel_hw
    ho, wo = out_size(h, kh, strides[0], pads[0]), out_size(w, kw, strides[1], pads[1])
    if ho == 0 or wo == 0:  # no window fits: the convolution's empty result (a slice cannot end before it starts)
        return jnp.zeros((n, ho, wo, kh * kw * c), x.dtype)
    xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    cols = [lax.slice(xp, (0, a, b, 0), (n, a + (ho - 1) * strides[0] + 1, b + (wo - 1) * strides[1] + 1, c),
                      (1, strides[0], strides[1], 1))
            for a in range(kh) for b in range(kw)]
    return jnp.stack(cols, axis=3).reshape(n, ho, wo, kh * kw * c)


def patches_transpose(p: jax.Array, x_hw: Sequence[int], kernel_hw: Sequence[int], strides: Sequence[int],
                      pads: Sequence[tuple[int, int]]) -> jax.Array:
    """The transpose of ``patches``: ``(N, Ho, Wo, kh * kw * C)`` -> ``(N, H, W, C)``, each window added back.

    For the integer mode's input gradient (``jax.vjp`` of ``patches`` does the same for float arrays):
    each window's slice is placed by an (interior) pad and the ``kh * kw`` of them summed in ``p``'s
    dtype (int32: exact).
    """
    n, ho, wo, k = p.shape
    kh, kw = kernel_hw
    c = k // (kh * kw)
    if ho == 0 or wo == 0:  # no window: nothing to add back
        return jnp.zeros((n, *x_hw, c), p.dtype)
    hp, wp = x_hw[0] + pads[0][0] + pads[0][1], x_hw[1] + pads[1][0] + pads[1][1]
    p = p.reshape(n, ho, wo, kh * kw, c)
    total = None
    zero = jnp.zeros((), p.dtype)
    for idx in range(kh * kw):
        a, b = divmod(idx, kw)
        config = ((0, 0, 0),
                  (a, hp - a - (ho - 1) * strides[0] - 1, strides[0] - 1),
                  (b, wp - b - (wo - 1) * strides[1] - 1, strides[1] - 1),
                  (0, 0, 0))
        placed = lax.pad(p[:, :, :, idx, :], zero, config)
        total = placed if total is None else total + placed
    # Remove the padding (negative pads crop).
    return lax.pad(total, zero, ((0, 0, 0), (-pads[0][0], -pads[0][1], 0), (-pads[1][0], -pads[1][1], 0),
                                 (0, 0, 0)))


def patches_dot(x: jax.Array, w: jax.Array, strides: Sequence[int], pads: Sequence[tuple[int, int]],
                **dot_options: Any) -> jax.Array:
    """A 2-D NHWC/HWIO convolution as ``patches(x) @ w.reshape(kh * kw * Ci, Co)``: ``(N, Ho, Wo, Co)``.

    ``dot_options`` go to ``lax.dot_general`` (``precision``, ``preferred_element_type``).
    """
    p = patches(x, w.shape[:2], strides, pads)
    return lax.dot_general(p, w.reshape(-1, w.shape[3]), (((3,), (0,)), ((), ())), **dot_options)


def _plus_zeros(x: jax.Array) -> jax.Array:
    return jnp.where(x == 0, jnp.zeros_like(x), x)


@jax.custom_vjp
def _positive_zeros(x: jax.Array) -> jax.Array:
    """``x`` with every zero ``+0.0``, and so its cotangent: what a sum started at ``+0.0`` gives (a convolution's),
    where a ``dot_general`` of one term, or of ``-0.0`` terms only, gives ``-0.0`` (``0 * -e``). A custom VJP: the
    gradient flows through the zeros of ``x`` too."""
    return _plus_zeros(x)


_positive_zeros.defvjp(lambda x: (_plus_zeros(x), None), lambda _, g: (_plus_zeros(g),))


def conv_patches(x: jax.Array, w: jax.Array, strides: Sequence[int], pads: Sequence[tuple[int, int]]) -> jax.Array:
    """A 2-D NHWC/HWIO float32 convolution as ``patches(x) @ w.reshape(kh * kw * Ci, Co)`` at ``HIGHEST``.

    Args:
        x: ``(N, H, W, Ci)`` float32; w: ``(kh, kw, Ci, Co)`` float32.
        strides: two ints; pads: two ``(lo, hi)`` pairs.

    Returns:
        ``(N, Ho, Wo, Co)`` float32: ``lax.conv_general_dilated``'s value wherever its sums are exact, and a
        derivative with no convolution in it. Zeros are ``+0.0``, in the result and the gradients, as the
        convolution's are (a sum of one term, e.g. the kernel gradient at batch 1 with a 1x1 output, would
        otherwise be ``0 * -e = -0.0``).
    """
    x, w = _positive_zeros(x), _positive_zeros(w)  # their cotangents
    return _positive_zeros(patches_dot(x, w, strides, pads, precision=lax.Precision.HIGHEST))
