"""A trained WAGE network as an integer-only program, and its NumPy reference (the executable specification).

In WAGE's forward pass every operand of a product is on a fixed-point grid (docs/contract.md §2; Wu et al.,
ICLR 2018, Eq. 5-8): activations after ``Q_A`` are ``a = k_a * 2^-(bits_A-1)``, forward weights
``QW(w) = k_w * 2^-(bits_W-1) / scale`` with a power-of-two ``scale``. A layer's sum is therefore
``S * 2^-(bits_A-1) * 2^-(bits_W-1) / scale`` with the integer ``S = sum k_a * k_w``, and the next ``Q_A``
multiplies it by ``2^(bits_A-1)``: the next layer's codes are ``S / 2^shift`` with
``shift = bits_W - 1 + log2(scale)``, rounded as ``Q_A`` rounds and clamped to ``|k| <= 2^(bits_A-1) - 1``.
ReLU and 2x2 max-pooling are monotone and keep 0, so they commute with that rounding and run on ``S``.

``Q_A``'s nearest rounding (contract §1) is ``nearbyint(double(float32(y + 1/2)) - 1/2)``. For
``y = S / 2^shift``, ``y + 1/2`` is a multiple of ``2^-(shift+1)``: the float32 addition is exact whenever
``|y| <= 2^(22-shift)`` (24 significant bits), and then the result is ``y`` rounded half to even, which
:func:`rescale` computes with integer operations only. Beyond, ``|y| > 2^(22-shift) >= 2^bits_A`` when
``shift <= 22 - bits_A`` (checked by :func:`check_program`): the float rounding is monotone, so both clamp
to ``±kmax``, and the integer rule equals ``Q_A`` on every input.

Exactness bounds (:func:`check_program`, :func:`float32_rounding_layers`):

* int32: every sum satisfies ``|S| <= terms * kmax_a * kmax_w``; a program with a layer where this exceeds
  ``2^31 - 1`` is refused.
* float32: the training forward computes ``S`` (times a power of two) in float32, exact in any order when
  ``sum |k_a * k_w| <= 2^24`` for every output. When ``terms * kmax_a * kmax_w`` exceeds ``2^24`` the float
  path may round where the integer program does not; :func:`float32_rounding_layers` checks the data it is given.

Only the input's ``Q_A`` touches floats (:func:`quantize_input`); the logits are the last layer's int32 sums,
``logits = S * 2^logit_exponent`` in the float model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wage_spec.validation import check_bits

__all__ = [
    "FLOAT32_EXACT",
    "INT32_MAX",
    "IntegerLayer",
    "IntegerProgram",
    "check_program",
    "float32_rounding_layers",
    "max_pool_2x2",
    "quantize_input",
    "rescale",
    "run_integer_program",
]

INT32_MAX = 2**31 - 1
FLOAT32_EXACT = 2**24


@dataclass(frozen=True, eq=False)
class IntegerLayer:
    """One product of the network and what follows it, on integers.

    Attributes:
        kind: ``"dense"`` (``kernel`` ``(in, out)``) or ``"conv"`` (``kernel`` HWIO, input NHWC, no dilation
            or groups).
        kernel: int8 codes ``k_w`` of ``QW(w)``, ``|k_w| <= 2^(bits_W-1) - 1``.
        shift: ``bits_W - 1 + log2(scale)``: ``QW(w) = k_w * 2^-shift * 2^-(bits_A-1)`` relative to the
            activation grid, so the next layer's codes are ``S / 2^shift`` rounded.
        strides, pads: the convolution's strides and explicit ``((lo, hi), (lo, hi))`` paddings.
        flatten: before a dense layer, flatten an NHWC input in NCHW order (as the models and torch do).
        pool: 2x2 max-pooling (stride 2, floor) of the sums.
        relu: ReLU of the sums.
        requantize: round to the next layer's ``bits_A`` codes; False for the last layer (int32 logits).
        name: the layer's parameter name (for messages).
    """

    kind: str
    kernel: np.ndarray
    shift: int
    strides: tuple[int, int] = (1, 1)
    pads: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    flatten: bool = False
    pool: bool = False
    relu: bool = True
    requantize: bool = True
    name: str = ""

    @property
    def terms(self) -> int:
        """The reduction length of one output sum."""
        return int(np.prod(self.kernel.shape[:-1]))


@dataclass(frozen=True, eq=False)
class IntegerProgram:
    """A WAGE network's forward pass on integers: ``Q_A`` of the input, then ``layers``.

    Attributes:
        bits_A: the activation grid (2 to 8 bits: codes are int8).
        bits_W: the weight grid (2 to 8 bits).
        layers: the products in order; the last one has ``requantize=False``.
        input_shape: one example's shape (NHWC without N for convolutional networks).
        logit_exponent: the float model's logits are ``S * 2^logit_exponent``.
    """

    bits_A: int
    bits_W: int
    layers: tuple[IntegerLayer, ...]
    input_shape: tuple[int, ...]
    logit_exponent: int = 0

    @property
    def kmax_A(self) -> int:
        return 2 ** (self.bits_A - 1) - 1

    @property
    def kmax_W(self) -> int:
        return 2 ** (self.bits_W - 1) - 1


def check_program(program: IntegerProgram) -> IntegerProgram:
    """``program`` if every bound of the module docstring holds, else a one-line ValueError naming the layer."""
    for name, bits in (("bits_A", program.bits_A), ("bits_W", program.bits_W)):
        if check_bits(bits, name) > 8:
            raise ValueError(f"{name}={bits}: the integer program holds int8 codes (at most 8 bits)")
    if not program.layers or program.layers[-1].requantize or any(not lay.requantize for lay in program.layers[:-1]):
        raise ValueError("layers must requantize every layer but the last (whose int32 sums are the logits)")
    for lay in program.layers:
        if lay.kernel.dtype != np.int8 or np.abs(lay.kernel.astype(np.int32)).max(initial=0) > program.kmax_W:
            raise ValueError(f"layer {lay.name!r}: kernel must hold int8 codes within +-{program.kmax_W}")
        bound = lay.terms * program.kmax_A * program.kmax_W
        if bound > INT32_MAX:
            raise ValueError(f"layer {lay.name!r} could overflow int32: {lay.terms} terms x {program.kmax_A} x "
                             f"{program.kmax_W} = {bound} > 2^31 - 1; the integer program refuses it")
        if lay.requantize and not 0 <= lay.shift <= 22 - program.bits_A:
            raise ValueError(f"layer {lay.name!r}: shift {lay.shift} outside [0, {22 - program.bits_A}], where "
                             "Q_A's float32 rounding equals the integer rounding")
    return program


def quantize_input(images: np.ndarray, bits_A: int) -> np.ndarray:
    """``Q_A`` of the input as int8 codes: the float32 steps of contract §1 with ``r = 1/2``, then the clamp.

    ``k = clamp(nearbyint(double(float32(x * 2^(bits_A-1) + 1/2)) - 1/2), +-(2^(bits_A-1) - 1))``.

    Args:
        images: any shape, converted to float32; must be finite (a ValueError names ``images`` otherwise).
        bits_A: the activation grid's bits.

    Returns:
        int8 codes of ``images``'s shape.
    """
    x = np.asarray(images, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("images hold NaN or Inf: the integer program needs finite inputs")
    kmax = 2 ** (bits_A - 1) - 1
    with np.errstate(over="ignore"):
        s = x * np.float32(2.0 ** (bits_A - 1)) + np.float32(0.5)  # float32, rounds as the float path does
    return np.clip(np.rint(s.astype(np.float64) - 0.5), -kmax, kmax).astype(np.int8)


def rescale(s: np.ndarray, shift: int, kmax: int) -> np.ndarray:
    """``clamp(round_half_even(s / 2^shift), +-kmax)`` on integers: ``Q_A``'s rounding of a layer's sums.

    Args:
        s: int32 sums, any shape.
        shift: a non-negative int.
        kmax: the clamp, ``2^(bits_A-1) - 1``.

    Returns:
        int8 codes of ``s``'s shape.

    Examples:
        >>> rescale(np.array([-3, -2, -1, 1, 2, 3, 5, 6, 1000]), 2, 127).tolist()
        [-1, 0, 0, 0, 0, 1, 1, 2, 127]
    """
    s = np.asarray(s, dtype=np.int64)
    if shift > 0:
        q = s >> shift  # floor
        r = s - (q << shift)  # in [0, 2^shift)
        half = 1 << (shift - 1)
        s = q + ((r > half) | ((r == half) & (q & 1 == 1)))
    return np.clip(s, -kmax, kmax).astype(np.int8)


def max_pool_2x2(x: np.ndarray) -> np.ndarray:
    """2x2 max-pooling with stride 2 of NHWC ``x`` (odd trailing rows/columns dropped, as VALID pooling)."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _patches(x: np.ndarray, lay: IntegerLayer) -> np.ndarray:
    """``(N, Ho, Wo, kh*kw*Ci)`` windows of NHWC ``x`` in the kernel's HWI order (zero padding)."""
    kh, kw = lay.kernel.shape[:2]
    (pt, pb), (pl, pr) = lay.pads
    x = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    sh, sw = lay.strides
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    cols = [x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] for i in range(kh) for j in range(kw)]
    return np.concatenate(cols, axis=-1)


def _product(x: np.ndarray, lay: IntegerLayer) -> np.ndarray:
    """The layer's exact integer sums (int64 arithmetic; the bound keeps them in int32)."""
    k = lay.kernel.astype(np.int64)
    if lay.kind == "conv":
        return _patches(x.astype(np.int64), lay) @ k.reshape(-1, k.shape[-1])
    if lay.flatten:
        x = x.transpose(0, 3, 1, 2)
    return x.reshape(x.shape[0], -1).astype(np.int64) @ k


def run_integer_program(program: IntegerProgram, images: np.ndarray) -> np.ndarray:
    """The integer forward pass: ``(N, *input_shape)`` float32 images -> ``(N, classes)`` int32 logits ``S``.

    Per layer: int32 sums of int8 codes, then 2x2 max-pooling, ReLU and :func:`rescale` as the layer says.
    Equals the float32 model's ``logits * 2^-logit_exponent`` whenever the float path is exact
    (:func:`float32_rounding_layers`).
    """
    check_program(program)
    x = quantize_input(images, program.bits_A).reshape(-1, *program.input_shape)
    for lay in program.layers:
        x = _layer(x, lay, program.kmax_A)
    return x


def _layer(x: np.ndarray, lay: IntegerLayer, kmax: int) -> np.ndarray:
    """One layer: int32 sums of the int8 codes ``x``, pooling, ReLU, then the next codes (or the logits)."""
    s = _product(x, lay)
    if lay.pool:
        s = max_pool_2x2(s)
    if lay.relu:
        s = np.maximum(s, 0)
    return rescale(s, lay.shift, kmax) if lay.requantize else s.astype(np.int32)


def float32_rounding_layers(program: IntegerProgram, images: np.ndarray) -> list[str]:
    """The layers whose float32 sums may round on ``images``: ``sum |k_a * k_w| > 2^24`` for some output.

    Layers whose static bound ``terms * kmax_a * kmax_w`` is within ``2^24`` are exact on any data and
    skipped. Returns their names (empty: the float32 training forward equals the integer program here).
    """
    x = quantize_input(images, program.bits_A).reshape(-1, *program.input_shape)
    risky = []
    for lay in program.layers:
        if lay.terms * program.kmax_A * program.kmax_W > FLOAT32_EXACT:
            magnitude = _product(np.abs(x.astype(np.int64)), _abs_layer(lay))
            if magnitude.max(initial=0) > FLOAT32_EXACT:
                risky.append(lay.name)
        x = _layer(x, lay, program.kmax_A)
    return risky


def _abs_layer(lay: IntegerLayer) -> IntegerLayer:
    return IntegerLayer(lay.kind, np.abs(lay.kernel), lay.shift, lay.strides, lay.pads, lay.flatten)
