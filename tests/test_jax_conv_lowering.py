"""The WAGE convolutions' lowerings (``lowering="conv" | "patches" | "int8_f32"``): the same bits as today's
convolution, on trajectories of the paper's models (float and integer mode), and the products each puts in
the step's HLO (``"patches"``: no convolution in the forward or the backward)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx as fnnx
from jax import lax

import wage_jax.nnx as wn
from tests.test_jax_integer import _TRANSPOSE_CASES, NEAREST, PAPER, _data, _trajectory, _transpose_case_data
from wage_jax import max_pool_2x2, wage_conv_general_dilated
from wage_jax._src.conv_lowering import conv_patches, patches_dot
from wage_jax._src.integer import _conv_transpose_lhs, _conv_transpose_rhs
from wage_jax.integer import integer_plan
from wage_jax.linen import WAGEConv, WAGEDense, WAGEQuantizer
from wage_jax.models import VGG7
from wage_parity.testing import assert_trees_bits_equal, f32_bits

# (integer, lowering) pairs besides today's (False, "conv"), which every trajectory is compared with
VARIANTS = [(False, "patches"), (True, "conv"), (True, "patches"), (True, "int8_f32")]


def _check_trajectories(make, cfg, xs, ys, steps):
    p_ref, loss_ref = _trajectory(make(False, "conv"), cfg, xs, ys, steps)
    assert np.all(np.isfinite(np.asarray(loss_ref))) and float(loss_ref[-1]) != float(loss_ref[0])
    for integer, lowering in VARIANTS:
        p, loss = _trajectory(make(integer, lowering), cfg, xs, ys, steps)
        assert_trees_bits_equal(loss_ref, loss)
        assert_trees_bits_equal(p_ref, p)


class TwoConvs(nn.Module):
    """Two WAGE convolutions, as small as the MLP: 5x5 VALID, then 3x3 SAME with stride 2, max-pool, dense;
    quantizers between them and on the logits' error (the integer mode's contract). Test-local."""

    integer: bool
    lowering: str

    @nn.compact
    def __call__(self, x):
        c = NEAREST
        opts = {"integer": self.integer, "bits_A": c.bits_A, "bits_E": c.bits_E, "lowering": self.lowering,
                "factor": c.factor}
        x = WAGEQuantizer(c.bits_A, -1, c.A_mode, c.E_mode)(x)
        x = WAGEConv(3, c.bits_W, kernel_size=5, padding="VALID", name="conv0", **opts)(x)
        x = WAGEQuantizer(c.bits_A, c.bits_E, c.A_mode, c.E_mode)(nn.relu(x))
        x = WAGEConv(4, c.bits_W, kernel_size=3, strides=(2, 2), name="conv1", **opts)(x)
        x = WAGEQuantizer(c.bits_A, c.bits_E, c.A_mode, c.E_mode)(max_pool_2x2(nn.relu(x)))
        x = x.reshape(x.shape[0], -1)
        x = WAGEDense(10, c.bits_W, factor=c.factor, integer=self.integer, bits_A=c.bits_A, bits_E=c.bits_E)(x)
        return WAGEQuantizer(-1, c.bits_E, c.A_mode, c.E_mode)(x)  # the integer mode's errors on the E grid


@pytest.mark.slow
def test_trajectories_are_bit_identical_for_every_lowering_with_a_float_fallback():
    """Every (integer, lowering) against today's float convolution, 4 steps, every mode nearest (a lowering is
    the same code in any rounding mode; the paper's modes and models are compared on a GPU by
    ``python -m benchmarks``); five compilations of a model as small as the MLP. With a batch of 8, conv0's
    kernel gradient (8 * 12 * 12 terms) exceeds the integer plan and takes the float path, lowered as the layer
    says."""
    xs, ys = _data((8, 16, 16, 1), 2)
    plan = integer_plan("conv", (8, 16, 16, 1), (5, 5, 1, 3), 8, 2, 8, 1.0, padding="VALID")
    assert plan == {"forward": True, "input_grad": True, "kernel_grad": False}
    _check_trajectories(lambda integer, lowering: TwoConvs(integer, lowering), NEAREST, xs, ys, 4)


@pytest.mark.slow
def test_patches_and_its_derivative_equal_the_convolution_and_its_transposes():
    """Strides, odd sizes, explicit and SAME/VALID pads, 1x1 to 5x5 kernels: ``conv_patches``'s value and VJP,
    and the integer transposes of each lowering, give the float32 convolution's bits on grid values."""
    dn = ("NHWC", "HWIO", "NHWC")
    data = _transpose_case_data(5)

    def all_cases(arrays):
        out = []
        for (hw, st, _, k), (x, w, g), (*_, pads) in zip(_TRANSPOSE_CASES, arrays, data, strict=True):
            xf, wf, gf = (a.astype(jnp.float32) for a in (x, w, g))

            def conv(a, b, st=st, pads=pads):
                return lax.conv_general_dilated(a, b, st, pads, dimension_numbers=dn, precision=lax.Precision.HIGHEST)

            y, vjp = jax.vjp(conv, xf, wf)
            y_p, vjp_p = jax.vjp(lambda a, b, st=st, pads=pads: conv_patches(a, b, st, pads), xf, wf)
            ints = [(_conv_transpose_lhs(g, w, hw, st, pads, lo), _conv_transpose_rhs(g, x, k, st, pads, lo))
                    for lo in ("conv", "patches", "int8_f32")]
            out.append(((y, *vjp(gf)), (y_p, *vjp_p(gf)), ints))
        return out

    compiled = jax.jit(all_cases).lower([d[:3] for d in data]).compile(
        {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
    for reference, by_patches, ints in compiled([d[:3] for d in data]):
        for a, b in zip(reference, by_patches, strict=True):
            np.testing.assert_array_equal(f32_bits(b), f32_bits(a))
        for (dx, dw), dtype in zip(ints, (jnp.float32, jnp.int32, jnp.float32), strict=True):
            assert dx.dtype == dw.dtype == dtype
            np.testing.assert_array_equal(f32_bits(np.asarray(dx, np.float32)), f32_bits(reference[1]))
            np.testing.assert_array_equal(f32_bits(np.asarray(dw, np.float32)), f32_bits(reference[2]))


def _step_hlo(integer: bool, lowering: str) -> str:
    model = VGG7(config=PAPER, widths=(4, 8, 8), hidden=16, integer=integer, lowering=lowering)
    x = jnp.zeros((4, 8, 8, 3))
    params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]  # lowering needs shapes only

    def loss(p, key):
        return jnp.sum(model.apply({"params": p}, x, rngs={"wage": key}) ** 2)

    return jax.jit(jax.grad(loss)).lower(params, jax.random.key(1)).as_text()


@pytest.mark.parametrize("integer", [False, True])
def test_patches_leaves_no_convolution_in_the_training_step(integer):
    conv_hlo, patches_hlo = _step_hlo(integer, "conv"), _step_hlo(integer, "patches")
    assert len(re.findall(r"stablehlo\.convolution", conv_hlo)) == 6 * 3 - 1  # fwd, dx, dw; no dx for conv0
    assert "convolution" not in patches_hlo
    dots = [line for line in patches_hlo.splitlines() if "stablehlo.dot_general" in line]
    assert len(dots) == 8 * 3 - 1  # 6 convolutions and 2 dense layers, each fwd, dx and dw
    if integer:
        assert all(re.search(r"xi8>.*xi8>.*->.*xi32>", line) for line in dots)


def _convolutions(hlo: str) -> list[tuple[list[str], str]]:
    """Each ``stablehlo.convolution``'s operand element types and its result's."""
    out = []
    for line in hlo.splitlines():
        if "stablehlo.convolution" in line:
            operands, result = line.rsplit("->", 1)
            out.append((re.findall(r"tensor<[^>]*x(\w+)>", operands), re.findall(r"tensor<[^>]*x(\w+)>", result)[0]))
    return out


@pytest.mark.parametrize("lowering, forward", [("conv", (["i8", "i8"], "i32")), ("int8_f32", (["i8", "i8"], "f32"))])
def test_integer_convolutions_are_the_forwards_alone(lowering, forward):
    """XLA:GPU rewrites a backward convolution into cuDNN's backward-data / backward-filter calls, which have no
    int8 engines: in the integer mode's step only the 6 forward convolutions take integers; the 11 backward
    ones (no input gradient for conv0) take and give float32. The forward pass alone has the 6 integer ones."""
    step = _convolutions(_step_hlo(True, lowering))
    assert len(step) == 6 * 3 - 1
    assert step.count(forward) == 6 and step.count((["f32", "f32"], "f32")) == 11
    model = VGG7(config=PAPER, widths=(4, 8, 8), hidden=16, integer=True, lowering=lowering)
    x = jnp.zeros((4, 8, 8, 3))
    params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    fwd = jax.jit(lambda p: model.apply({"params": p}, x)).lower(params).as_text()
    assert _convolutions(fwd) == [forward] * 6


@pytest.mark.parametrize("kwargs,message", [
    ({"lowering": "winograd"}, "lowering must be one of 'conv', 'patches', 'int8_f32', got 'winograd'"),
    ({"lowering": "int8_f32"}, "lowering='int8_f32' lowers the integer mode's products: it needs integer=True"),
])
def test_a_bad_lowering_is_refused_by_every_entry_point(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        wage_conv_general_dilated(2, **kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        wn.WAGEConv(3, 4, 2, **kwargs, rngs=fnnx.Rngs(0))
    with pytest.raises(ValueError, match=re.escape(message)):
        wn.WAGEConvGeneralDilated(2, **kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        WAGEConv(4, 2, **kwargs).init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match=re.escape(message)):
        VGG7(widths=(4, 4, 4), hidden=8, **kwargs).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_patches_refuses_dilation_naming_the_lowering():
    conv = wage_conv_general_dilated(2, lowering="patches")
    with pytest.raises(ValueError, match=r"lowering='patches'\) computes 2-D NHWC/HWIO convolutions without dilation"):
        conv(jnp.zeros((1, 6, 6, 3)), jnp.zeros((3, 3, 3, 4)), (1, 1), "SAME", rhs_dilation=(2, 2),
             dimension_numbers=("NHWC", "HWIO", "NHWC"))


# (x shape, kernel (kh, kw), strides, padding): kernels longer than the (padded) input in one or both
# dimensions, strides longer than the input, and ordinary cases beside them
_EDGE_CASES = [
    ((2, 3, 3, 1), (5, 5), (1, 1), "VALID"),
    ((2, 3, 5, 2), (5, 3), (1, 1), "VALID"),
    ((2, 5, 3, 1), (2, 4), (1, 2), "VALID"),
    ((2, 2, 2, 1), (5, 5), (1, 1), ((1, 0), (0, 1))),
    ((1, 1, 1, 1), (3, 3), (1, 1), "VALID"),
    ((3, 1, 1, 1), (3, 3), (1, 1), "SAME"),
    ((2, 2, 3, 1), (1, 1), (3, 4), "VALID"),
    ((2, 3, 3, 2), (3, 3), (2, 2), "SAME"),
    ((2, 4, 4, 1), (4, 4), (1, 1), "VALID"),
]


def test_patches_returns_what_the_convolution_returns_for_every_shape_it_accepts():
    """Kernels longer than the input (VALID, or too little padding) give the convolution's empty result and zero
    gradients, in the float lowering and every integer lowering, as the backend's convolution does."""
    dn = ("NHWC", "HWIO", "NHWC")
    rng = np.random.default_rng(3)
    data = []
    for shape, k, st, pad in _EDGE_CASES:
        x = (rng.integers(-127, 128, shape) / 128).astype(np.float32)
        w = (rng.integers(-1, 2, (*k, shape[3], 2)) / 2).astype(np.float32)
        out = jax.eval_shape(lambda a, b, st=st, pad=pad: lax.conv_general_dilated(a, b, st, pad, dimension_numbers=dn),
                             x, w).shape
        data.append((x, w, (rng.integers(-127, 128, out) / 128).astype(np.float32)))

    def all_cases(arrays):
        out = []
        for (_, _, st, pad), (x, w, g) in zip(_EDGE_CASES, arrays, strict=True):
            fns = [wage_conv_general_dilated(2, lowering=lo) for lo in ("conv", "patches")]
            fns += [wage_conv_general_dilated(2, integer=True, bits_A=8, bits_E=8, lowering=lo)
                    for lo in ("conv", "patches", "int8_f32")]
            results = []
            for f in fns:
                y, vjp = jax.vjp(lambda a, b, f=f, st=st, pad=pad: f(a, b, st, pad, dimension_numbers=dn), x, w)
                results.append((y, *vjp(g)))
            out.append(results)
        return out

    compiled = jax.jit(all_cases).lower(data).compile(
        {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
    empty = 0
    for (shape, k, st, pad), (reference, *lowered) in zip(_EDGE_CASES, compiled(data), strict=True):
        for i, results in enumerate(lowered):  # float patches, the three integer lowerings: against the conv
            for a, b in zip(reference, results, strict=True):
                assert a.shape == b.shape and a.dtype == b.dtype == np.float32
                np.testing.assert_array_equal(f32_bits(b), f32_bits(a), err_msg=f"{i} {shape} {k} {st} {pad}")
        y, dx, dw = reference
        assert dx.shape == shape and dw.shape == (*k, shape[3], 2)
        if y.size == 0:
            empty += 1
            assert not np.any(np.asarray(dx)) and not np.any(np.asarray(dw))
        else:
            assert np.any(np.asarray(dw))
    assert empty == 5


@pytest.mark.parametrize("shape, k", [((1, 3, 3, 1), (3, 3)), ((1, 2, 2, 1), (1, 1))])
def test_patches_gives_the_convolutions_positive_zeros(shape, k):
    """A sum of one term (batch 1 and a 1x1 output: the kernel gradient; one input channel and a 1x1 kernel: the
    output) is ``0 * -e``, ``-0.0`` from a plain dot; the convolution's sum starts at ``+0.0``."""
    dn = ("NHWC", "HWIO", "NHWC")
    x = np.zeros(shape, np.float32)
    x[0, 0, 0, 0] = 0.5
    w = np.full((*k, 1, 2), -0.5, np.float32)
    out = jax.eval_shape(lambda a, b: lax.conv_general_dilated(a, b, (1, 1), "VALID", dimension_numbers=dn), x, w)
    g = np.full(out.shape, -0.25, np.float32)
    plain = jax.vjp(lambda a, b: patches_dot(a, b, (1, 1), ((0, 0), (0, 0))), x, w)
    assert np.signbit(np.asarray(plain[0])).all() and np.signbit(np.asarray(plain[1](g)[1])).any()  # -0.0 there
    results = []
    for lowering in ("conv", "patches"):
        f = wage_conv_general_dilated(2, lowering=lowering)  # QW keeps the kernel negative
        y, vjp = jax.vjp(lambda a, b, f=f: f(a, b, (1, 1), "VALID", dimension_numbers=dn), x, w)
        results.append((y, *vjp(g)))
    assert_trees_bits_equal(results[0], results[1])
    assert not np.signbit(np.asarray(results[0][2])[np.asarray(results[0][2]) == 0]).any()
