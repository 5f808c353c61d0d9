"""A trained WAGE model as an integer program (``wage_spec.integer_program``) and its JAX forward pass.

``integer_program(model, params, config)`` reads the int8 codes of ``QW(kernel)`` from a trained
``wage_jax.models`` network (``MLP``, ``LeNet5``, ``VGG7``) and lays out its layers as the model's
``__call__`` does: product, 2x2 max-pooling, ReLU, ``Q_A``. ``integer_forward(program, images)`` runs it
with int8 operands and int32 sums (``lax.dot_general`` / ``lax.conv_general_dilated`` with
``preferred_element_type=int32``) and the rescale of ``wage_spec.integer_program.rescale`` in int32
arithmetic: it equals the NumPy reference bit for bit, and the float32 training forward's
``logits * 2^-logit_exponent`` where the float path is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wage_jax._src.arrays import all_finite_now
from wage_jax._src.conv_lowering import explicit_pads
from wage_jax._src.fixed_point import fixed_point_quantize
from wage_jax._src.functional import QW
from wage_jax._src.initializers import kernel_scale
from wage_jax.models import MLP, VGG7, LeNet5
from wage_spec import FULL_PRECISION, WAGEConfig, qw_divides_by_scale
from wage_spec.integer_program import IntegerLayer, IntegerProgram, check_program

__all__ = ["integer_forward", "integer_program"]


def _codes(p: Mapping, name: str, cfg: WAGEConfig) -> tuple[np.ndarray, int]:
    """Layer ``name``'s ``QW(kernel)`` as int8 codes and its ``shift = bits_W - 1 + log2(scale)`` (Eq. 5-7)."""
    kernel = p[name]["kernel"]
    bits_W, scale = cfg.bits_W, kernel_scale(kernel.shape, cfg.bits_W, cfg.factor)
    mantissa, exponent = math.frexp(scale)
    if mantissa != 0.5:
        raise ValueError(f"layer {name!r}: scale {scale} is not a power of two: QW's division has no integer form")
    e = exponent - 1 if qw_divides_by_scale(scale) else 0
    shift = bits_W - 1 + e
    # QW(w) = k * 2^-shift: the multiplication by 2^shift is exact, the cast exact on integers.
    k = np.asarray(QW(jnp.asarray(kernel, jnp.float32), bits_W, scale) * np.float32(2.0**shift))
    return k.astype(np.int8), shift


def _check_config(model: Any, config: WAGEConfig) -> None:
    if not getattr(model, "quantized", False):
        raise ValueError("model is a float baseline (quantized=False): only a WAGE network has an integer form")
    if model.config != config:
        raise ValueError(f"config {config} is not the model's {model.config}")
    if config.bits_A == FULL_PRECISION or config.bits_A > 8 or config.bits_W > 8:
        raise ValueError(f"config has bits_A={config.bits_A}, bits_W={config.bits_W}: the integer program holds "
                         "int8 codes (2 to 8 bits each)")
    for name in ("A_mode", "W_mode"):
        if getattr(config, name) != "nearest":
            raise ValueError(f"config.{name}={getattr(config, name)!r}: a forward that draws random numbers has "
                             "no deterministic integer form (use 'nearest')")


def _conv(p: Mapping, name: str, x_hw: tuple[int, int], padding: str, pool: bool, cfg: WAGEConfig):
    """The layer and its output's spatial size (SAME's padding depends on the input's)."""
    k, shift = _codes(p, name, cfg)
    pads = explicit_pads(padding, (1, *x_hw, k.shape[2]), k.shape, (1, 1))
    hw = tuple(x_hw[i] + sum(pads[i]) - k.shape[i] + 1 for i in range(2))
    if pool:
        hw = (hw[0] // 2, hw[1] // 2)
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    return IntegerLayer("conv", k, shift, pads=pads, pool=pool, name=name), hw


def _dense(p: Mapping, name: str, cfg: WAGEConfig, *, flatten: bool = False, last: bool = False) -> IntegerLayer:
    k, shift = _codes(p, name, cfg)
    return IntegerLayer("dense", k, shift, flatten=flatten, relu=not last, requantize=not last, name=name)


def _side(features: int, channels: int, name: str) -> int:
    """The square feature map's side before the flatten, from the first dense layer's fan-in."""
    side = math.isqrt(features // channels)
    if side * side * channels != features:
        raise ValueError(f"{name}'s fan-in {features} is not a square map of {channels} channels")
    return side


def _mlp(model: MLP, p: Mapping, cfg: WAGEConfig, input_shape: tuple[int, ...] | None):
    n = len(model.hidden) + 1
    layers = [_dense(p, f"dense{i}", cfg, last=i == n - 1) for i in range(n)]
    features = layers[0].kernel.shape[0]
    if input_shape is not None and math.prod(input_shape) != features:
        raise ValueError(f"input_shape {input_shape} does not hold dense0's {features} inputs")
    return layers, input_shape or (features,)  # the MLP flattens its input in C order, as the program does


def _conv_net(p: Mapping, cfg: WAGEConfig, blocks: list[tuple[str, bool]], padding: str,
              input_side: Callable[[int], int], input_shape: tuple[int, ...] | None):
    """Convolutions ``blocks`` (name, pool), then dense0 (flattened NCHW) and dense1 (the logits)."""
    channels = p["conv0"]["kernel"].shape[2]
    last_width = p[blocks[-1][0]]["kernel"].shape[3]
    features = p["dense0"]["kernel"].shape[0]
    if input_shape is None:
        side = input_side(_side(features, last_width, "dense0"))
        input_shape = (side, side, channels)
    if len(input_shape) != 3 or input_shape[2] != channels:
        raise ValueError(f"input_shape must be (height, width, {channels}), got {input_shape}")
    hw, layers = input_shape[:2], []
    for name, pool in blocks:
        layer, hw = _conv(p, name, hw, padding, pool, cfg)
        layers.append(layer)
    if hw[0] * hw[1] * last_width != features:
        raise ValueError(f"input_shape {input_shape} gives {hw[0] * hw[1] * last_width} features, dense0 takes "
                         f"{features}")
    layers += [_dense(p, "dense0", cfg, flatten=True), _dense(p, "dense1", cfg, last=True)]
    return layers, input_shape


def _lenet(model: LeNet5, p: Mapping, cfg: WAGEConfig, input_shape: tuple[int, ...] | None):
    blocks = [(f"conv{i}", True) for i in range(len(model.widths))]

    def input_side(s: int) -> int:
        for _ in blocks:  # each block: a 5x5 VALID convolution (side - 4), then a pool (side / 2)
            s = s * 2 + 4
        return s

    return _conv_net(p, cfg, blocks, "VALID", input_side, input_shape)


def _vgg(model: VGG7, p: Mapping, cfg: WAGEConfig, input_shape: tuple[int, ...] | None):
    blocks = [(f"conv{i}", i % 2 == 1) for i in range(2 * len(model.widths))]  # SAME 3x3, a pool every second
    return _conv_net(p, cfg, blocks, "SAME", lambda s: s * 2 ** len(model.widths), input_shape)


_BUILDERS = {MLP: _mlp, LeNet5: _lenet, VGG7: _vgg}


def integer_program(model: Any, params: Mapping, config: WAGEConfig,
                    input_shape: Sequence[int] | None = None) -> IntegerProgram:
    """The integer form of a trained ``wage_jax.models`` network.

    Args:
        model: an ``MLP``, ``LeNet5`` or ``VGG7`` with ``quantized=True`` (``integer`` and ``lowering`` do not
            matter: every mode computes the same forward).
        params: its Flax params (``{"params": ...}`` or the inner dict), the weight accumulators.
        config: the model's ``WAGEConfig``: ``bits_A`` and ``bits_W`` of 2 to 8, nearest ``A_mode`` and ``W_mode``.
        input_shape: one example's shape, e.g. ``(8, 8, 1)`` for an MLP fed images; default: inferred from the
            first dense layer's fan-in (``(in,)`` for the MLP; square images, the smallest size that gives it,
            for the convolutional networks).

    Returns:
        a checked ``IntegerProgram`` (codes of ``QW(kernel)``, shifts, the layer sequence, the input shape).

    Raises:
        ValueError: another model class, a float baseline, unsupported bits or modes, an ``input_shape`` the
            model cannot take, a scale that is not a power of two, or a layer whose sums could overflow int32
            (one line naming it).
    """
    builder = _BUILDERS.get(type(model))
    if builder is None:
        raise ValueError(f"model must be a wage_jax.models MLP, LeNet5 or VGG7, got {type(model).__name__}")
    _check_config(model, config)
    p = params.get("params", params)
    layers, input_shape = builder(model, p, config, None if input_shape is None else tuple(int(d) for d in input_shape))
    last = layers[-1]
    exponent = -(config.bits_A - 1) - last.shift
    return check_program(IntegerProgram(config.bits_A, config.bits_W, tuple(layers), input_shape, exponent))


# -------------------------------------------------------------------------------------------- forward


def _rescale(s: jax.Array, shift: int, kmax: int) -> jax.Array:
    """``wage_spec.integer_program.rescale`` on int32: round half to even of ``s / 2^shift``, clamp to int8."""
    if shift > 0:
        q = s >> shift  # arithmetic shift: floor
        r = s - (q << shift)
        half = 1 << (shift - 1)
        s = q + ((r > half) | ((r == half) & ((q & 1) == 1))).astype(jnp.int32)
    return jnp.clip(s, -kmax, kmax).astype(jnp.int8)


def _max_pool(s: jax.Array) -> jax.Array:
    return lax.reduce_window(s, jnp.iinfo(s.dtype).min, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _product(x: jax.Array, lay: IntegerLayer) -> jax.Array:
    k = jnp.asarray(lay.kernel)
    if lay.kind == "conv":
        return lax.conv_general_dilated(x, k, lay.strides, lay.pads, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        preferred_element_type=jnp.int32)
    if lay.flatten:
        x = x.transpose(0, 3, 1, 2)
    x = x.reshape(x.shape[0], -1)
    return lax.dot_general(x, k, (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32)


def quantize_input(images: jax.Array, bits_A: int) -> jax.Array:
    """``Q_A(images)``'s int8 codes: the library's ``fixed_point_quantize`` (contract §1), times ``2^(bits_A-1)``."""
    q = fixed_point_quantize(jnp.asarray(images, jnp.float32), bits_A, bits_A - 1, clamp=True, symmetric=True)
    return (q * np.float32(2.0 ** (bits_A - 1))).astype(jnp.int8)


def integer_forward(program: IntegerProgram, images: jax.Array) -> jax.Array:
    """``(N, *program.input_shape)`` float32 images -> ``(N, classes)`` int32 logits, on integers only.

    Traceable (``jit``, ``jax.export``); the program's codes become constants. Bit-identical to
    ``wage_spec.integer_program.run_integer_program``. Finite images only: eagerly NaN or Inf raises a
    ValueError naming ``images``; traced (and in the exported programs) nothing can raise, and a NaN pixel's
    code is unspecified, so check inputs before.
    """
    images = jnp.asarray(images, jnp.float32)
    if not all_finite_now(images):
        raise ValueError("images hold NaN or Inf: the integer program needs finite inputs")
    x = quantize_input(images, program.bits_A).reshape(-1, *program.input_shape)
    for lay in program.layers:
        s = _product(x, lay)
        if lay.pool:
            s = _max_pool(s)
        if lay.relu:
            s = jnp.maximum(s, 0)
        x = _rescale(s, lay.shift, program.kmax_A) if lay.requantize else s
    return x
