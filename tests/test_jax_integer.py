"""Integer execution (``wage_jax.integer``): trajectories bit-identical to the float32 path, int8/int32 HLO.

The trajectories use WAGE's update written from the functional pieces (``C(w - QG(g))``), so that they
test the layers' arithmetic only. Sizes are small; each net is one ``lax.scan`` per mode.
"""

from __future__ import annotations

import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx as fnnx
from jax import lax

import wage_jax.nnx as wn
from wage_jax import QG, C
from wage_jax._src.layers import max_pool_2x2
from wage_jax.integer import exact_in_float32, integer_conv, integer_dense, integer_plan, on_grid
from wage_jax.linen import WAGEConv, WAGEDense, WAGEQuantizer
from wage_jax.models import MLP, VGG7
from wage_parity.testing import assert_trees_bits_equal, f32_bits
from wage_spec import FULL_PRECISION, WAGEConfig

NEAREST = WAGEConfig(G_mode="nearest", E_mode="nearest")
PAPER = WAGEConfig()  # 2-8-8-8, G and E stochastic
CONFIGS = {"nearest": NEAREST, "paper": PAPER}


def _grid(rng, shape, bits, scale=1.0, nonneg=False):
    k = rng.integers(-(2 ** (bits - 1) - 1), 2 ** (bits - 1), shape)
    return jnp.asarray((np.maximum(k, 0) if nonneg else k) * 2.0 ** -(bits - 1) / scale, jnp.float32)


class LeNet5(nn.Module):
    """LeNet-5-sized: conv5 6 VALID, pool, conv5 16 VALID, pool, dense 120, 84, 10 on 32x32x1 (test-local)."""

    config: WAGEConfig
    integer: bool | str = False

    @nn.compact
    def __call__(self, x):
        c = self.config
        ints = {"integer": self.integer, "bits_A": c.bits_A, "bits_E": c.bits_E}

        def q(v, a, e):
            return WAGEQuantizer(a, e, c.A_mode, c.E_mode)(v)

        x = q(x, c.bits_A, FULL_PRECISION)
        for i, width in enumerate((6, 16)):
            x = WAGEConv(width, c.bits_W, kernel_size=5, padding="VALID", factor=c.factor, name=f"conv{i}", **ints)(x)
            x = q(nn.relu(max_pool_2x2(x)), c.bits_A, c.bits_E)
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate((120, 84)):
            x = q(nn.relu(WAGEDense(width, c.bits_W, c.factor, name=f"dense{i}", **ints)(x)), c.bits_A, c.bits_E)
        x = WAGEDense(10, c.bits_W, c.factor, name="dense2", **ints)(x)
        return q(x, FULL_PRECISION, c.bits_E)


def _trajectory(model, cfg: WAGEConfig, xs, ys, steps: int, lr: float = 8.0):
    """Params after ``steps`` WAGE updates and the per-step losses (one ``lax.scan``)."""
    params = jax.jit(model.init)(jax.random.key(0), xs[0])["params"]  # one program, not op by op
    params = jax.tree_util.tree_map(lambda w: C(w, cfg.bits_W), params)

    def step(params, inputs):
        x, y, key = inputs
        k_model, k_grad = jax.random.split(key)

        def loss_fn(p):
            logits = model.apply({"params": p}, x, rngs={"wage": k_model})
            return 0.5 * jnp.sum((logits - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        leaves, treedef = jax.tree_util.tree_flatten(grads)
        keys = jax.random.split(k_grad, len(leaves))
        upd = [QG(g, cfg.bits_G, lr, cfg.G_mode, key=k if cfg.G_mode == "stochastic" else None)
               for g, k in zip(leaves, keys, strict=True)]
        upd = jax.tree_util.tree_unflatten(treedef, upd)
        params = jax.tree_util.tree_map(lambda w, u: C(w - u, cfg.bits_W), params, upd)
        return params, loss

    n = xs.shape[0]
    idx = jnp.arange(steps) % n
    keys = jax.random.split(jax.random.key(7), steps)
    return jax.jit(lambda p: lax.scan(step, p, (xs[idx], ys[idx], keys)))(params)


def _data(shape, batches, seed=0):
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.uniform(-1, 1, (batches, *shape)), jnp.float32)
    ys = jax.nn.one_hot(rng.integers(0, 10, (batches, shape[0])), 10)
    return xs, ys


def _compare(make, cfg, xs, ys, steps, integer=True):
    p_f, loss_f = _trajectory(make(False), cfg, xs, ys, steps)
    p_i, loss_i = _trajectory(make(integer), cfg, xs, ys, steps)
    assert_trees_bits_equal(loss_f, loss_i)
    assert_trees_bits_equal(p_f, p_i)
    assert np.all(np.isfinite(np.asarray(loss_f))) and float(loss_f[-1]) != float(loss_f[0])


@pytest.mark.parametrize("mode", sorted(CONFIGS))
def test_mlp_200_steps_bit_identical(mode):
    xs, ys = _data((16, 64), 8)
    _compare(lambda integer: MLP(config=CONFIGS[mode], hidden=(32,), integer=integer), CONFIGS[mode], xs, ys, 200)


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(CONFIGS))
def test_vgg7_shaped_20_steps_bit_identical(mode):
    xs, ys = _data((4, 8, 8, 3), 4)
    _compare(lambda integer: VGG7(config=CONFIGS[mode], widths=(4, 8, 8), hidden=16, integer=integer),
             CONFIGS[mode], xs, ys, 20)


@pytest.mark.slow
def test_lenet5_sized_20_steps_bit_identical_with_a_float_fallback():
    xs, ys = _data((2, 32, 32, 1), 3)
    # conv0's kernel gradient sums 2 * 28 * 28 terms: not exact in the worst case, so it takes the float path
    plan = integer_plan("conv", (2, 32, 32, 1), (5, 5, 1, 6), 8, 2, 8, 1.0, padding="VALID")
    assert plan == {"forward": True, "input_grad": True, "kernel_grad": False}
    _compare(lambda integer: LeNet5(PAPER, integer), PAPER, xs, ys, 20)


def _products(hlo: str) -> list[str]:
    return [line for line in hlo.splitlines() if re.search(r"stablehlo\.(dot_general|convolution)", line)]


@pytest.mark.parametrize("net", ["mlp", "vgg7"])
def test_hlo_of_the_integer_step_is_int8_times_int8_into_int32(net):
    if net == "mlp":
        model, x = MLP(config=PAPER, hidden=(32,), integer=True), jnp.zeros((16, 64))
        expected = 5  # 2 layers x (forward, input grad, kernel grad), less the unused input grad of the first
    else:
        model, x = VGG7(config=PAPER, widths=(4, 8, 8), hidden=16, integer=True), jnp.zeros((4, 8, 8, 3))
        expected = 23
    params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]  # lowering needs shapes only

    def loss(p, key, model=model):
        return jnp.sum(model.apply({"params": p}, x, rngs={"wage": key}) ** 2)

    hlo = jax.jit(jax.grad(loss)).lower(params, jax.random.key(1)).as_text()
    products = _products(hlo)
    assert len(products) == expected
    for line in products:
        operands, result = line.rsplit("->", 1)
        types = re.findall(r"tensor<[^>]*x(\w+)>", operands), re.findall(r"tensor<[^>]*x(\w+)>", result)[0]
        # a backward convolution convolves the integers in float32 (XLA:GPU has no int8 backward convolutions)
        assert types in ((["i8", "i8"], "i32"), (["f32", "f32"], "f32")), line
        assert types[0] == ["i8", "i8"] or "stablehlo.convolution" in line, line
    convolutions = [line for line in products if "stablehlo.convolution" in line]
    assert sum("xi8>" in line for line in convolutions) == (6 if net == "vgg7" else 0)  # the forwards
    float_loss = partial(loss, model=model.copy(integer=False))
    float_products = _products(jax.jit(jax.grad(float_loss)).lower(params, jax.random.key(1)).as_text())
    assert len(float_products) == expected and all("xi8" not in line for line in float_products)


def test_the_exactness_bound():
    assert exact_in_float32(1040, 8, 8) and not exact_in_float32(1041, 8, 8)
    assert exact_in_float32(2**23, 2, 2)
    plan = integer_plan("dense", (8, 2000), (2000, 10), 8, 8, 8, 1.0)
    assert plan == {"forward": False, "input_grad": True, "kernel_grad": True}
    # no integer grid: full precision, more than 16 bits, a scale that is not a power of two
    assert not any(integer_plan("dense", (2, 3), (3, 4), -1, 8, -1, 1.0).values())
    assert not any(integer_plan("dense", (2, 3), (3, 4), 20, 20, 20, 1.0).values())
    assert integer_plan("dense", (2, 3), (3, 4), 8, 8, 8, 3.0)["input_grad"] is False
    with pytest.raises(ValueError, match="kind"):
        integer_plan("pool", (2, 3), (3, 4), 8, 8, 8, 1.0)


@pytest.mark.parametrize("bits", [(8, 2, 8), (10, 2, 9)])  # int8, and int16 grids
def test_products_and_gradients_equal_the_float_path(bits):
    bits_A, bits_W, bits_E = bits
    rng = np.random.default_rng(1)
    x, w = _grid(rng, (3, 6, 6, 4), bits_A, nonneg=True), _grid(rng, (3, 3, 4, 5), bits_W, 4.0)
    assert all(integer_plan("conv", x.shape, w.shape, bits_A, bits_W, bits_E, 4.0).values())
    for st, pad in [((1, 1), "SAME"), ((2, 2), "VALID"), ((1, 1), ((2, 0), (1, 1)))]:
        def f_int(a, b, st=st, pad=pad):
            return integer_conv(a, b, bits_A, bits_W, bits_E, 4.0, strides=st, padding=pad)

        def f_float(a, b, st=st, pad=pad):
            return lax.conv_general_dilated(a, b, st, pad, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            precision=lax.Precision.HIGHEST)

        y_i, vjp_i = jax.vjp(f_int, x, w)
        y_f, vjp_f = jax.vjp(f_float, x, w)
        g = _grid(rng, y_f.shape, bits_E)
        assert_trees_bits_equal((y_i, *vjp_i(g)), (y_f, *vjp_f(g)))
    x2, w2 = _grid(rng, (5, 2, 7), bits_A), _grid(rng, (7, 3), bits_W, 2.0)
    y_i, vjp_i = jax.vjp(lambda a, b: integer_dense(a, b, bits_A, bits_W, bits_E, 2.0), x2, w2)
    y_f, vjp_f = jax.vjp(lambda a, b: jnp.matmul(a, b, precision=lax.Precision.HIGHEST), x2, w2)
    g = _grid(rng, y_f.shape, bits_E)
    assert_trees_bits_equal((y_i, *vjp_i(g)), (y_f, *vjp_f(g)))


def test_on_grid():
    assert bool(on_grid(jnp.array([0.5, -0.25, 127 / 128]), 8))
    assert not bool(on_grid(jnp.array([1.0]), 8))  # |k| = 128 > 127
    assert not bool(on_grid(jnp.array([0.5 + 2**-9]), 8))
    assert bool(on_grid(jnp.array([0.125]), 2, scale=4.0))  # 2-bit weights divided by scale 4
    with pytest.raises(ValueError, match="grid"):
        on_grid(jnp.zeros(2), -1)


def test_nnx_layers_integer_mode_matches_float():
    rng = np.random.default_rng(3)
    x = _grid(rng, (2, 6, 6, 3), 8, nonneg=True)
    outs = {}
    for integer in (False, True, "int32"):
        conv = wn.WAGEConv(3, 4, 2, kernel_size=3, integer=integer, bits_A=8, bits_E=8, rngs=fnnx.Rngs(params=0))
        dense = wn.WAGEDense(6 * 6 * 4, 5, 2, integer=integer, bits_A=8, bits_E=8, rngs=fnnx.Rngs(params=1))
        q = wn.WAGEQuantizer(8, 8)
        qe = wn.WAGEQuantizer(FULL_PRECISION, 8)

        def loss(conv, dense, q=q, qe=qe):
            h = q(jax.nn.relu(conv(x))).reshape(2, -1)
            return jnp.sum(qe(dense(h)) ** 2)

        outs[integer] = fnnx.value_and_grad(loss, argnums=(0, 1))(conv, dense)
    assert_trees_bits_equal(jax.tree_util.tree_leaves(outs[False]), jax.tree_util.tree_leaves(outs[True]))
    assert_trees_bits_equal(jax.tree_util.tree_leaves(outs[False]), jax.tree_util.tree_leaves(outs["int32"]))


# strides (1,1) (2,2) (2,1); SAME, VALID and explicit pads (one larger than the kernel); odd and even sizes;
# kernels 1, 3, 5 and a non-square one
_TRANSPOSE_CASES = [
    ((7, 8), (1, 1), "SAME", (3, 3)), ((7, 8), (2, 2), "SAME", (3, 3)), ((8, 5), (2, 1), "VALID", (5, 5)),
    ((7, 8), (2, 2), ((1, 2), (0, 1)), (1, 1)), ((8, 5), (1, 1), ((2, 0), (3, 1)), (3, 5)),
    ((8, 5), (2, 2), "SAME", (5, 5)), ((7, 8), (1, 1), "VALID", (1, 1)), ((7, 6), (2, 2), "VALID", (3, 3)),
    ((7, 8), (2, 1), "SAME", (1, 1)), ((8, 5), (2, 2), ((2, 0), (3, 1)), (3, 3)),
    ((7, 8), (1, 1), ((1, 2), (0, 1)), (5, 5)), ((6, 8), (2, 2), ((0, 0), (1, 1)), (5, 3)),
]


def _transpose_case_data(seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple]]:
    """Per ``_TRANSPOSE_CASES`` entry: int8 input, kernel and output cotangent, and the explicit pads."""
    from wage_jax._src.conv_lowering import explicit_pads

    rng = np.random.default_rng(seed)
    data = []
    for hw, st, pad, k in _TRANSPOSE_CASES:
        x = rng.integers(-127, 128, (2, *hw, 3)).astype(np.int8)
        w = rng.integers(-127, 128, (*k, 3, 4)).astype(np.int8)
        pads = explicit_pads(pad, x.shape, w.shape, st)
        out_hw = [(hw[i] + sum(pads[i]) - k[i]) // st[i] + 1 for i in range(2)]
        data.append((x, w, rng.integers(-127, 128, (2, *out_hw, 4)).astype(np.int8), pads))
    return data


def test_conv_transposes_on_public_lax_equal_the_float_vjp():
    """``wage_jax.integer``'s input- and kernel-gradient convolutions (public ``lax.conv_general_dilated``
    only) give, on int8 operands (convolved in float32: no integer convolution in a backward pass), the bits of
    ``jax.vjp`` of the float32 convolution."""
    from wage_jax._src.integer import _conv_transpose_lhs, _conv_transpose_rhs

    dn = ("NHWC", "HWIO", "NHWC")
    data = _transpose_case_data(4)

    def all_cases(arrays):
        out = []
        for (hw, st, _, k), (x, w, g), (*_, pads) in zip(_TRANSPOSE_CASES, arrays, data, strict=True):
            def conv(a, b, st=st, pads=pads):
                return lax.conv_general_dilated(a, b, st, pads, dimension_numbers=dn, precision=lax.Precision.HIGHEST)

            dx, dw = jax.vjp(conv, x.astype(jnp.float32), w.astype(jnp.float32))[1](g.astype(jnp.float32))
            out.append((dx, dw, _conv_transpose_lhs(g, w, hw, st, pads), _conv_transpose_rhs(g, x, k, st, pads)))
        return out

    # one program for every case; XLA's cheapest optimization level keeps its compilation to seconds
    compiled = jax.jit(all_cases).lower([d[:3] for d in data]).compile(
        {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
    for (dx, dw, dx_int, dw_int), (x, w, *_) in zip(compiled([d[:3] for d in data]), data, strict=True):
        assert dx_int.dtype == dw_int.dtype == jnp.float32
        assert dx_int.shape == x.shape and dw_int.shape == w.shape
        # every sum is below 2^24 here (at most 5*5*4 or 2*8*8 terms of 127*127): exact in float32
        assert int(jnp.max(jnp.abs(dx_int))) < 2**24 and int(jnp.max(jnp.abs(dw_int))) < 2**24
        np.testing.assert_array_equal(f32_bits(np.asarray(dx_int, np.float32)), f32_bits(dx))
        np.testing.assert_array_equal(f32_bits(np.asarray(dw_int, np.float32)), f32_bits(dw))


def test_no_private_jax_api():
    """``wage_jax``'s integer products import only public JAX modules (no ``jax._src``), read no private attribute."""
    import ast
    from pathlib import Path

    import wage_jax._src.integer as integer

    tree = ast.parse(Path(integer.__file__).read_text())
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    outside = [m for m in modules if m != "__future__" and not m.startswith("wage_jax._src.")]
    assert outside and not [m for m in outside if any(p.startswith("_") for p in m.split("."))]
    private = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("_")
               and isinstance(n.value, ast.Name) and n.value.id in ("jax", "lax", "jnp")]
    assert not private, private


# ------------------------------------------------------------------ arguments and operands are checked

_X = np.array([[0.5, -0.25, 0.0078125]], np.float32)  # on the 8-bit grid (multiples of 2^-7)
_W = np.array([[0.5], [-0.5], [0.0]], np.float32)  # on the 2-bit grid (multiples of 0.5)


@pytest.mark.parametrize("fn", ["dense", "conv"])
@pytest.mark.parametrize("arg,value,error", [
    ("bits_A", 0, ValueError), ("bits_A", 1, ValueError), ("bits_A", True, TypeError), ("bits_A", 8.5, TypeError),
    ("bits_W", -1, ValueError), ("bits_E", 25, ValueError), ("scale", 0.0, ValueError), ("scale", np.nan, ValueError),
])
def test_bad_bits_and_scale_are_refused_naming_the_argument(fn, arg, value, error):
    kwargs = {"bits_A": 8, "bits_W": 2, "bits_E": 8, "scale": 1.0, arg: value}
    if fn == "dense":
        call = lambda: integer_dense(jnp.asarray(_X), jnp.asarray(_W), **kwargs)  # noqa: E731
    else:
        x, w = jnp.asarray(_X).reshape(1, 1, 1, 3), jnp.asarray(_W).reshape(1, 1, 3, 1)
        call = lambda: integer_conv(x, w, **kwargs)  # noqa: E731
    with pytest.raises(error, match=arg):
        call()


@pytest.mark.parametrize("bad", [np.nan, np.inf, 2.0, 0.5 + 2**-9])
def test_nan_inf_and_off_grid_operands_raise_eagerly_and_give_nan_under_jit(bad):
    x = _X.copy()
    x[0, 0] = bad
    f = lambda a, b: integer_dense(a, b, 8, 2, 8, 1.0)  # noqa: E731
    with pytest.raises(ValueError, match="^x holds"):
        f(jnp.asarray(x), jnp.asarray(_W))
    assert np.isnan(np.asarray(jax.jit(f)(jnp.asarray(x), jnp.asarray(_W)))).all()
    w = _W.copy()
    w[1, 0] = bad
    with pytest.raises(ValueError, match="^w holds"):
        f(jnp.asarray(_X), jnp.asarray(w))
    xc, wc = jnp.asarray(x).reshape(1, 1, 1, 3), jnp.asarray(_W).reshape(1, 1, 3, 1)
    conv = lambda a, b: integer_conv(a, b, 8, 2, 8, 1.0)  # noqa: E731
    with pytest.raises(ValueError, match="^x holds"):
        conv(xc, wc)
    assert np.isnan(np.asarray(jax.jit(conv)(xc, wc))).all()


def test_off_grid_error_gives_nan_gradients_never_a_wrong_one():
    """An error of 0.5 + 2^-9 on the 8-bit E grid would be truncated (the kernel gradient 0.496 for 0.5)."""
    loss = lambda a, b: (integer_dense(a, b, 8, 2, 8, 1.0) * jnp.float32(0.5 + 2**-9)).sum()  # noqa: E731
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(_X), jnp.asarray(_W))
    assert all(np.isnan(np.asarray(g)).all() for g in grads)
    with pytest.raises(ValueError, match="^the error holds values off its integer grid"):
        jax.grad(loss, argnums=1)(jnp.asarray(_X), jnp.asarray(_W))
    on_grid = lambda a, b: (integer_dense(a, b, 8, 2, 8, 1.0) * jnp.float32(0.5)).sum()  # noqa: E731
    dw = jax.jit(jax.grad(on_grid, argnums=1))(jnp.asarray(_X), jnp.asarray(_W))
    np.testing.assert_array_equal(np.asarray(dw), 0.5 * _X.T)


def _past_2_24(rng, shape):
    """Activations and errors (8-bit grids) whose kernel-gradient sum is past 2^24 but within int32: their
    integers, and the exact sum (NumPy int64)."""
    kx, ke = rng.integers(0, 128, shape), rng.integers(1, 128, shape)
    exact = int(np.sum(kx.astype(np.int64) * ke))
    assert 2**24 < exact < 2**31
    return jnp.asarray(kx * 2.0**-7, jnp.float32), jnp.asarray(ke * 2.0**-7, jnp.float32), exact


def test_int32_sums_give_the_exact_kernel_gradient_where_float32_rounds():
    rng = np.random.default_rng(3)
    x, g, exact = _past_2_24(rng, (8, 32, 32, 1))  # a 1x1 convolution: the kernel gradient sums 8192 terms
    w = _grid(rng, (1, 1, 1, 1), 2)
    expected = f32_bits(np.float32(exact) * np.float32(2.0**-14))  # the exact sum rounded once to float32

    def kernel_grad(sums, lowering="conv"):
        return jax.vjp(lambda b: integer_conv(x, b, 8, 2, 8, 1.0, lowering=lowering, sums=sums), w)[1](g)[0]

    assert not integer_plan("conv", x.shape, w.shape, 8, 2, 8, 1.0)["kernel_grad"]
    assert integer_plan("conv", x.shape, w.shape, 8, 2, 8, 1.0, sums="int32")["kernel_grad"]
    assert f32_bits(kernel_grad("float32")) != expected  # the float32 path rounds on the way
    for lowering in ("conv", "patches"):
        assert f32_bits(kernel_grad("int32", lowering)) == expected
    x2, g2 = x.reshape(-1, 1), g.reshape(-1, 1)  # the same sum as a dense layer's kernel gradient
    dw = jax.vjp(lambda b: integer_dense(x2, b, 8, 2, 8, 1.0, sums="int32"), w.reshape(1, 1))[1](g2)[0]
    assert f32_bits(dw) == expected


def test_int32_sums_fall_back_to_float32_past_2_31_and_say_so():
    limit = 2**31 // 127**2  # the longest reduction of two 8-bit grids that int32 holds in the worst case
    fits = integer_plan("dense", (limit, 10), (10, 4), 8, 8, 8, 1.0, sums="int32")
    past = integer_plan("dense", (limit + 1, 10), (10, 4), 8, 8, 8, 1.0, sums="int32")
    assert fits == {"forward": True, "input_grad": True, "kernel_grad": True}
    assert past == {"forward": True, "input_grad": True, "kernel_grad": False}
    conv = integer_plan("conv", (8, 64, 64, 3), (3, 3, 3, 4), 8, 8, 8, 1.0, sums="int32")  # 32768 terms: fits
    assert conv["kernel_grad"] and not integer_plan("conv", (40, 64, 64, 3), (3, 3, 3, 4), 8, 8, 8, 1.0,
                                                    sums="int32")["kernel_grad"]
    # the fallback computes what the float32 path computes
    rng = np.random.default_rng(4)
    x, w = _grid(rng, (limit + 1, 2), 8), _grid(rng, (2, 3), 8)
    g = _grid(rng, (limit + 1, 3), 8)
    dw_i = jax.vjp(lambda b: integer_dense(x, b, 8, 8, 8, 1.0, sums="int32"), w)[1](g)[0]
    dw_f = jax.vjp(lambda b: jnp.matmul(x, b, precision=lax.Precision.HIGHEST), w)[1](g)[0]
    assert_trees_bits_equal(dw_i, dw_f)


@pytest.mark.parametrize("kwargs, message", [
    ({"sums": "int64"}, "sums must be one of 'float32', 'int32', got 'int64'"),
    ({"sums": "int32", "lowering": "int8_f32"}, "lowering='int8_f32' sums in float32"),
])
def test_a_bad_sums_is_refused_naming_it(kwargs, message):
    x, w = jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 2))
    with pytest.raises(ValueError, match=re.escape(message)):
        integer_conv(x, w, 8, 2, 8, 1.0, **kwargs)
    if kwargs.get("lowering") == "int8_f32":  # refused when the layer is built
        with pytest.raises(ValueError, match=re.escape(message)):
            WAGEConv(2, 2, integer="int32", lowering="int8_f32").init(jax.random.key(0), x)
        with pytest.raises(ValueError, match=re.escape(message)):
            wn.WAGEConv(1, 2, 2, 3, integer="int32", lowering="int8_f32", rngs=fnnx.Rngs(0))
    with pytest.raises(TypeError, match="integer must be a bool or 'int32', got 'int64'"):
        WAGEConv(2, 2, integer="int64").init(jax.random.key(0), x)


@pytest.mark.slow
@pytest.mark.parametrize("net", ["vgg7", "lenet5"])
def test_int32_sums_equal_the_float_path_where_its_sums_are_exact(net):
    """VGG7 (every product on integers either way) and LeNet-5 at batch 2 (conv0's kernel gradient is past 2^24
    in the worst case: float32 with ``integer=True``, int32 sums with ``"int32"``; its actual sums are far below)."""
    if net == "vgg7":
        xs, ys = _data((4, 8, 8, 3), 4)
        _compare(lambda integer: VGG7(config=PAPER, widths=(4, 8, 8), hidden=16, integer=integer), PAPER, xs, ys,
                 20, integer="int32")
    else:
        assert integer_plan("conv", (2, 32, 32, 1), (5, 5, 1, 6), 8, 2, 8, 1.0, padding="VALID",
                            sums="int32")["kernel_grad"]
        xs, ys = _data((2, 32, 32, 1), 3)
        _compare(lambda integer: LeNet5(PAPER, integer), PAPER, xs, ys, 20, integer="int32")
