"""ONNX graphs of an ``IntegerProgram``: the integer program itself, and the same network in float32.

``onnx`` is imported when a graph is built (the ``export`` extra), never at import time.

**Integer form** (``integer_onnx``). The input's ``Q_A`` is the only float arithmetic: ``float32(x *
2^(bits_A-1) + 1/2)``, then ``Round(double(s) - 1/2)`` (half to even) and the clamp, exactly contract §1's
``nearbyint(double(s) - 0.5)``. Activations travel as uint8 ``k + zero_point`` (zero point 128 for the
input, whose codes can be negative; 0 after each ReLU), weights as int8 codes. Each layer's product
and rescale is one operator:

* ``requantize="qlinear"`` (where the layer's static bound ``terms * kmax_a * kmax_w <= 2^24``):
  ``QLinearConv`` / ``QLinearMatMul`` with unit input scales and ``y_scale = 2^shift``. The ONNX
  specification computes ``saturate(round_half_even(acc * 2^-shift) + y_zero_point)``; with
  ``|acc| <= 2^24`` the int32 accumulator converts to float32 exactly, the multiplication by a power of
  two is exact, and the rounding is ``Q_A``'s (``wage_spec.integer_program``), so the result is the
  integer program's. Output zero point 0: the uint8 saturation at 0 is the ReLU (pooling, monotone,
  commutes with it), and a ``Clip`` to ``kmax`` is ``Q_A``'s clamp.
* ``requantize="exact"`` (and any layer beyond ``2^24``): ``ConvInteger`` / ``MatMulInteger`` with int32
  sums, then in double (53 bits: every step exact) ``x * 2^-shift``, ``Round`` and the clamp.

The last layer is ``MatMulInteger``: the output ``logits`` are the int32 sums ``S``; the float model's
logits are ``S * 2^logit_exponent`` (stored in the model's metadata).

**Float32 form** (``float32_onnx``): the same trained network with float32 ``Conv`` / ``MatMul`` on the
weights ``QW(w) = k * 2^-shift`` and ``Q_A`` as float operators (``Round`` half to even of ``y *
2^(bits_A-1)``, exact as shown in ``wage_spec.integer_program``): the training forward, for comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wage_spec.integer_program import FLOAT32_EXACT, IntegerLayer, IntegerProgram, check_program

__all__ = ["float32_onnx", "integer_onnx"]

OPSET = 17
REQUANTIZE = ("qlinear", "exact")


class _Graph:
    """A list of nodes and initializers with fresh names (a thin layer over ``onnx.helper``)."""

    def __init__(self) -> None:
        try:
            import onnx
            from onnx import helper, numpy_helper
        except ImportError as exc:
            raise ImportError("the ONNX export needs the onnx package: pip install 'wage-jax[export]'") from exc

        self.onnx, self.helper, self.numpy_helper = onnx, helper, numpy_helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._count = 0

    def const(self, value: Any, dtype: Any, name: str = "c") -> str:
        self._count += 1
        name = f"{name}_{self._count}"
        self.inits.append(self.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str = "t", **attrs: Any) -> str:
        self._count += 1
        out = f"{name}_{self._count}"
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def model(self, x: str, out: str, out_type: int, program: IntegerProgram, doc: str) -> Any:
        h = self.helper
        tp = self.onnx.TensorProto
        self.nodes.append(h.make_node("Identity", [out], ["logits"]))
        graph = h.make_graph(
            self.nodes, "wage", [h.make_tensor_value_info(x, tp.FLOAT, ["N", *program.input_shape])],
            [h.make_tensor_value_info("logits", out_type, ["N", program.layers[-1].kernel.shape[-1]])],
            self.inits)
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="wage-jax", doc_string=doc)
        h.set_model_props(model, {"logit_exponent": str(program.logit_exponent), "bits_A": str(program.bits_A),
                                  "bits_W": str(program.bits_W)})
        self.onnx.checker.check_model(model)
        return model


def _input_codes(g: _Graph, x: str, bits_A: int) -> str:
    """``Q_A``'s codes as double integers in ``[-kmax, kmax]`` (contract §1 with ``r = 1/2``)."""
    kmax = 2 ** (bits_A - 1) - 1
    s = g.op("Add", [g.op("Mul", [x, g.const(2.0 ** (bits_A - 1), np.float32)]), g.const(0.5, np.float32)])
    r = g.op("Round", [g.op("Sub", [g.op("Cast", [s], to=g.onnx.TensorProto.DOUBLE), g.const(0.5, np.float64)])])
    return g.op("Clip", [r, g.const(-kmax, np.float64), g.const(kmax, np.float64)], "codes")


def _conv_attrs(lay: IntegerLayer) -> dict:
    (pt, pb), (pl, pr) = lay.pads
    return {"kernel_shape": list(lay.kernel.shape[:2]), "strides": list(lay.strides), "pads": [pt, pl, pb, pr]}


def _oihw(lay: IntegerLayer) -> np.ndarray:
    return lay.kernel.transpose(3, 2, 0, 1)


def _pool(g: _Graph, x: str) -> str:
    return g.op("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2])


def _check_supported(program: IntegerProgram) -> None:
    check_program(program)
    for lay in program.layers:
        if lay.requantize and not lay.relu:
            raise ValueError(f"layer {lay.name!r}: the ONNX export folds ReLU into the requantization; a requantized "
                             "layer without ReLU is not supported")
    if program.layers[-1].kind != "dense":
        raise ValueError("the ONNX export needs a dense last layer (the logits)")


def _layout(g: _Graph, x: str, program: IntegerProgram) -> str:
    """NHWC images to ONNX's NCHW for a convolution; any input flattened (C order) for a first dense layer."""
    if program.layers[0].kind == "conv":
        return g.op("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    return g.op("Flatten", [x], "flat", axis=1) if len(program.input_shape) > 1 else x


def integer_onnx(program: IntegerProgram, requantize: str = "qlinear") -> Any:
    """The integer program as an ``onnx.ModelProto``: float32 images ``(N, *input_shape)`` -> int32 ``logits``.

    Args:
        program: a checked ``IntegerProgram``.
        requantize: ``"qlinear"`` (``QLinearConv``/``QLinearMatMul`` where exact, see the module docstring) or
            ``"exact"`` (``ConvInteger``/``MatMulInteger`` and an exact double rescale everywhere).

    Returns:
        the model; its graph holds no floating-point ``Conv``, ``MatMul`` or ``Gemm``.
    """
    if requantize not in REQUANTIZE:
        raise ValueError(f"requantize must be one of {REQUANTIZE}, got {requantize!r}")
    _check_supported(program)
    g = _Graph()
    u8, i8, tp = np.uint8, np.int8, g.onnx.TensorProto
    zp = 128
    codes = _input_codes(g, "images", program.bits_A)
    x = _layout(g, g.op("Cast", [g.op("Add", [codes, g.const(zp, np.float64)])], "u8", to=tp.UINT8), program)
    for lay in program.layers:
        x_zp = g.const(zp, u8, "x_zp")
        w = g.const(_oihw(lay) if lay.kind == "conv" else lay.kernel, i8, lay.name)
        if lay.flatten:
            x = g.op("Flatten", [x], "flat", axis=1)
        if not lay.requantize:
            x = g.op("MatMulInteger", [x, w, x_zp], "sums")
            break
        qlinear = requantize == "qlinear" and lay.terms * program.kmax_A * program.kmax_W <= FLOAT32_EXACT
        if qlinear:
            one = g.const(1.0, np.float32)
            inputs = [x, one, x_zp, w, one, g.const(0, i8), g.const(2.0**lay.shift, np.float32), g.const(0, u8)]
            if lay.kind == "conv":
                x = g.op("QLinearConv", inputs, lay.name, **_conv_attrs(lay))
            else:
                x = g.op("QLinearMatMul", inputs, lay.name)
            if lay.pool:
                x = _pool(g, x)
            x = g.op("Clip", [x, g.const(0, u8), g.const(program.kmax_A, u8)], "clamp")
        else:
            if lay.kind == "conv":
                s = g.op("ConvInteger", [x, w, x_zp], lay.name, **_conv_attrs(lay))
            else:
                s = g.op("MatMulInteger", [x, w, x_zp], lay.name)
            s = g.op("Cast", [s], to=tp.DOUBLE)
            if lay.pool:
                s = _pool(g, s)
            r = g.op("Round", [g.op("Mul", [s, g.const(2.0**-lay.shift, np.float64)])])
            r = g.op("Clip", [r, g.const(0.0, np.float64), g.const(program.kmax_A, np.float64)], "clamp")
            x = g.op("Cast", [r], "u8", to=tp.UINT8)
        zp = 0
    return g.model("images", x, tp.INT32, program, "WAGE integer program: int32 logits S, float logits "
                   "S * 2^logit_exponent")


def float32_onnx(program: IntegerProgram) -> Any:
    """The same network in float32 (``Conv``/``MatMul`` on ``QW(w)``, ``Q_A`` as float operators): float32 logits.

    Its logits equal ``integer_onnx``'s ``S * 2^logit_exponent`` wherever the float path is exact.
    """
    _check_supported(program)
    g = _Graph()
    tp = g.onnx.TensorProto
    unit_A = 2.0 ** -(program.bits_A - 1)
    codes = g.op("Cast", [_input_codes(g, "images", program.bits_A)], to=tp.FLOAT)
    x = _layout(g, g.op("Mul", [codes, g.const(unit_A, np.float32)]), program)
    for lay in program.layers:
        w = (_oihw(lay) if lay.kind == "conv" else lay.kernel).astype(np.float32) * np.float32(2.0**-lay.shift)
        if lay.flatten:
            x = g.op("Flatten", [x], "flat", axis=1)
        if lay.kind == "conv":
            x = g.op("Conv", [x, g.const(w, np.float32, lay.name)], lay.name, **_conv_attrs(lay))
        else:
            x = g.op("MatMul", [x, g.const(w, np.float32, lay.name)], lay.name)
        if lay.pool:
            x = _pool(g, x)
        if not lay.requantize:
            break
        a = g.op("Round", [g.op("Mul", [g.op("Relu", [x]), g.const(1.0 / unit_A, np.float32)])])
        a = g.op("Min", [a, g.const(program.kmax_A, np.float32)], "clamp")
        x = g.op("Mul", [a, g.const(unit_A, np.float32)], "act")
    return g.model("images", x, tp.FLOAT, program, "WAGE network in float32: float logits")
