"""wage_jax's quantizers beyond parity: transformations, sharding, argument checking, dtypes, NaN/Inf.

Expected values come from the independent NumPy model of docs/contract.md §1-2 (``tests/spec_model.py``) or from
the definition of the property itself (a vmapped call equals the per-example calls, a straight-through
gradient equals the upstream gradient), never from the code under test.
"""

from __future__ import annotations

import os
import textwrap

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import wage_jax as wj
from wage_parity import spec_model
from wage_parity.testing import assert_bits_equal, f32_bits, python_env, run_python

F32 = np.float32
RNG = np.random.default_rng(0)
X = (RNG.standard_normal((4, 6)) * 0.6).astype(F32)  # some beyond [-1, 1]: clamped by QW / the forward
G = (RNG.standard_normal((4, 6)) * 3e-3).astype(F32)


# ------------------------------------------------------------------------------------------------ vmap


def test_vmap_of_shift_and_qg_reduces_each_example_on_its_own():
    # Rows of very different magnitudes: each row's shift uses its own max|x|.
    x = X * np.array([[1e-3], [1.0], [40.0], [3e-39]], F32)
    assert_bits_equal(jax.jit(jax.vmap(wj.shift))(x), np.stack([spec_model.shift(row) for row in x]), "vmap(shift)")
    assert_bits_equal(
        jax.jit(jax.vmap(lambda r: wj.QG(r, 8, 8.0)))(x),
        np.stack([spec_model.QG(row, 8, 8.0) for row in x]),
        "vmap(QG)",
    )


def test_vmap_of_elementwise_quantizers():
    assert_bits_equal(jax.vmap(lambda r: wj.QW(r, 4, 2.0))(X), spec_model.QW(X, 4, 2.0), "vmap(QW)")
    assert_bits_equal(jax.vmap(lambda r: wj.C(r, 3))(X), spec_model.C(X, 3), "vmap(C)")
    out, mask = jax.vmap(lambda r: wj.fixed_point_quantize_with_mask(r, 5, 4, symmetric=True))(X)
    ref, ref_mask = spec_model.fixed_point(X, 5, 4, clamp=True, symmetric=True)
    assert_bits_equal(out, ref, "vmap(fixed_point_quantize_with_mask)")
    np.testing.assert_array_equal(np.asarray(mask), ref_mask)


def test_vmap_of_wage_quantize_vjp_is_per_example():
    def fwd_bwd(x, g):
        y, vjp = jax.vjp(lambda v: wj.wage_quantize(v, 4, 6), x)
        return y, vjp(g)[0]

    g = G * np.array([[1.0], [1e3], [1e-20], [0.0]], F32)  # the backward's shift sees each row alone
    y, grad = jax.jit(jax.vmap(fwd_bwd))(X, g)
    for i in range(X.shape[0]):
        y_ref, mask = spec_model.wage_forward(X[i], 4)
        assert_bits_equal(y[i], y_ref, f"row {i} forward")
        assert_bits_equal(grad[i], spec_model.wage_backward(g[i], mask, 6), f"row {i} backward")


def test_vmap_with_per_example_keys():
    keys = jax.random.split(jax.random.key(0), X.shape[0])
    quantize = jax.jit(lambda r, k: wj.QW(r, 4, mode="stochastic", key=k))
    out = jax.jit(jax.vmap(quantize))(X, keys)
    for i in range(X.shape[0]):
        assert_bits_equal(out[i], quantize(X[i], keys[i]), f"row {i}")
    assert len({f32_bits(out[i]).tobytes() for i in range(4)} | {f32_bits(quantize(X[0], keys[1])).tobytes()}) > 1


# ------------------------------------------------------------------------------------------------ grad


@pytest.mark.parametrize(("scale", "mode"), [(1.0, "nearest"), (4.0, "nearest"), (3.0, "stochastic")])
def test_qw_gradient_is_straight_through(scale, mode):
    c = RNG.standard_normal(X.shape).astype(F32)
    key = jax.random.key(1) if mode == "stochastic" else None
    grad = jax.grad(lambda w: jnp.sum(wj.QW(w, 2, scale, mode, key=key) * c))(X)
    assert_bits_equal(grad, c, "d/dw sum(QW(w) * c)")  # including the elements QW clamps
    grad = jax.jit(jax.grad(lambda w: jnp.sum(wj.QW(w, 8, scale, mode, key=key) * c)))(X * 10)
    assert_bits_equal(grad, c, "jitted, every element clamped")


def test_wage_quantize_custom_vjp_matches_the_model():
    c = (RNG.standard_normal(X.shape) * 7.0).astype(F32)
    for bits_A, bits_E in [(2, 8), (8, 2), (-1, 8), (8, -1), (-1, -1)]:
        grad = jax.jit(jax.grad(lambda x, a=bits_A, e=bits_E: jnp.sum(wj.wage_quantize(x, a, e) * c)))(X)
        _, mask = spec_model.wage_forward(X, bits_A)
        expected = c if bits_E == -1 else spec_model.wage_backward(c, mask, bits_E)
        assert_bits_equal(grad, expected, f"bits_A={bits_A} bits_E={bits_E}")
    # The clamped elements get no gradient; the -1 passes the gradient through untouched.
    grad = jax.grad(lambda x: jnp.sum(wj.wage_quantize(x, 2, 8) * c))(X * 10)
    assert np.all(np.asarray(grad)[np.abs(X * 10) > 1] == 0)


def test_second_order_and_jvp_of_qw():
    # QW is piecewise constant with a straight-through derivative: its JVP is the identity.
    _, tangent = jax.jvp(lambda w: wj.QW(w, 4), (X,), (G,))
    assert_bits_equal(tangent, G, "jvp(QW)")


# ------------------------------------------------------------------------------------------------ jit


def test_jit_with_static_bits_and_modes():
    qw = jax.jit(wj.QW, static_argnames=("bits", "scale", "mode"))
    assert_bits_equal(qw(X, bits=3, scale=2.0, mode="nearest"), spec_model.QW(X, 3, 2.0), "jit(QW)")
    qg = jax.jit(wj.QG, static_argnums=(1, 3))
    assert_bits_equal(qg(G, 6, 0.5, "nearest"), spec_model.QG(G, 6, 0.5), "jit(QG) with a traced lr")
    wq = jax.jit(wj.wage_quantize, static_argnums=(1, 2, 3, 4))
    assert_bits_equal(wq(X, 4, 4, "nearest", "nearest"), spec_model.wage_forward(X, 4)[0], "jit(wage_quantize)")


def test_traced_bits_are_refused_with_the_argument_named():
    with pytest.raises(TypeError, match="bits must be an int"):
        jax.jit(wj.QW)(X, 4)
    with pytest.raises(TypeError, match="bits_A must be an int"):
        jax.jit(wj.wage_quantize)(X, 4, 4)


# ------------------------------------------------------------------------------------------------ sharding


def test_sharded_input_on_the_available_devices():
    devices = np.array(jax.devices())
    mesh = Mesh(devices, ("d",))
    n = len(devices) * 4
    x = jax.device_put(np.resize(X.ravel(), (n, 6)), NamedSharding(mesh, P("d")))
    host = np.asarray(x)
    assert_bits_equal(jax.jit(wj.shift)(x), spec_model.shift(host), "shift")
    assert_bits_equal(jax.jit(lambda v: wj.QG(v, 8, 8.0))(x), spec_model.QG(host, 8, 8.0), "QG")
    out = jax.jit(lambda v: wj.QW(v, 2))(x)
    assert_bits_equal(out, spec_model.QW(host, 2), "QW")
    assert out.sharding.is_equivalent_to(x.sharding, out.ndim)


_SHARDED_SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import wage_jax as wj
    from wage_parity import spec_model
    from wage_parity.testing import f32_bits as bits
    assert len(jax.devices()) == 4
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((8, 5)) * np.array([[1e-3], [1], [2], [3], [4], [5], [1e2], [6]])).astype(np.float32)
    g = (rng.standard_normal((8, 5)) * 1e-4).astype(np.float32)
    g[5, 3] = 0.75  # the global max|g| lives on one shard only
    mesh = Mesh(np.array(jax.devices()), ("d",))
    xs, gs = (jax.device_put(a, NamedSharding(mesh, P("d"))) for a in (x, g))
    def fwd_bwd(x, g):
        y, vjp = jax.vjp(lambda v: wj.wage_quantize(v, 4, 6), x)
        return y, vjp(g)[0]
    y, dx = jax.jit(fwd_bwd)(xs, gs)
    y_ref, mask = spec_model.wage_forward(x, 4)
    assert (bits(y) == bits(y_ref)).all() and (bits(dx) == bits(spec_model.wage_backward(g, mask, 6))).all()
    assert (bits(jax.jit(wj.shift)(gs)) == bits(spec_model.shift(g))).all()
    assert (bits(jax.jit(lambda v: wj.QG(v, 8, 8.0))(gs)) == bits(spec_model.QG(g, 8, 8.0))).all()
    print("OK", len(y.sharding.device_set))
    """
)


def test_sharded_over_four_devices_reduces_across_shards():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = run_python(["-c", _SHARDED_SCRIPT], cwd=root, env=python_env(devices=4, JAX_PLATFORMS="cpu"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "OK 4"


# ------------------------------------------------------------------------------------------------ errors


def test_stochastic_without_key_is_a_clear_value_error():
    with pytest.raises(ValueError, match="stochastic rounding needs randomness: pass key"):
        wj.QW(X, 4, mode="stochastic")
    with pytest.raises(ValueError, match="stochastic rounding needs randomness: pass key"):
        wj.QG(X, 4, 1.0, "stochastic")
    with pytest.raises(ValueError, match="stochastic rounding needs randomness"):
        wj.fixed_point_quantize(X, 4, 3, rounding="stochastic")
    with pytest.raises(ValueError, match="A_mode='stochastic' needs randomness"):
        wj.wage_quantize(X, 4, 4, "stochastic")
    # E draws in the backward: the forward (evaluation) runs without a key, a gradient names the missing key.
    np.testing.assert_array_equal(wj.wage_quantize(X, 4, 4, "nearest", "stochastic"), wj.wage_quantize(X, 4, 4))
    with pytest.raises(ValueError, match="E_mode='stochastic' draws in the backward pass: give a key"):
        jax.grad(lambda x: wj.wage_quantize(x, 4, 4, "nearest", "stochastic").sum())(X)
    with pytest.raises(ValueError, match="stochastic rounding needs randomness"):
        jax.jit(lambda x: wj.QW(x, 4, mode="stochastic"))(X)  # at trace time, under jit too


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda: wj.QW(X, 1), ValueError, "bits must be an int in \\[2, 24\\], got 1"),
        (lambda: wj.QW(X, 25), ValueError, "bits must be an int in \\[2, 24\\], got 25"),
        (lambda: wj.QW(X, 4.0), TypeError, "bits must be an int"),
        (lambda: wj.QW(X, True), TypeError, "bits must be an int"),
        (lambda: wj.QG(X, 0, 1.0), ValueError, "bits_G must be"),
        (lambda: wj.wage_quantize(X, 0, 8), ValueError, "bits_A must be an int in \\[2, 24\\] or -1"),
        (lambda: wj.wage_quantize(X, 8, -2), ValueError, "bits_E must be"),
        (lambda: wj.C(X, 0), ValueError, "bits must be an int >= 1"),
        (lambda: wj.QW(X, 4, mode="round"), ValueError, "mode must be one of \\('nearest', 'stochastic'\\)"),
        (lambda: wj.QG(X, 4, 1.0, mode=None), TypeError, "mode must be one of"),
        (lambda: wj.wage_quantize(X, 4, 4, A_mode="up"), ValueError, "A_mode must be one of"),
        (lambda: wj.wage_quantize(X, 4, 4, E_mode="Nearest"), ValueError, "E_mode must be one of"),
        (lambda: wj.fixed_point_quantize(X, 4, 3, rounding="floor"), ValueError, "rounding must be one of"),
        (lambda: wj.fixed_point_quantize(X, 1, 0), ValueError, "wl must be an int in \\[2, 24\\]"),
        (lambda: wj.QW(X, 4, scale=0.0), ValueError, "scale must be a positive finite number"),
        (lambda: wj.QW(X, 4, scale=float("inf")), ValueError, "scale must be a positive finite number"),
        (lambda: wj.QG(X, 4, float("nan")), ValueError, "lr must be a finite number"),
        (lambda: wj.QG(X, 4, "1"), TypeError, "lr must be a finite number"),
        (lambda: wj.QG(X, 4, jnp.int32(1)), TypeError, "lr must be a finite number or a floating-point scalar"),
        (lambda: wj.QG(X, 4, jnp.float32(np.inf)), ValueError, "lr must be a finite number"),
        (lambda: wj.shift(jnp.arange(4)), TypeError, "x must be a floating-point array"),
        (lambda: wj.QW(np.ones(3, np.int8), 4), TypeError, "x must be a floating-point array"),
        (lambda: wj.QG(jnp.ones(3, bool), 4, 1.0), TypeError, "x must be a floating-point array"),
        (lambda: wj.C([0.5, 2.0], 4), TypeError, "x must be a floating-point array"),
        (lambda: wj.wage_quantize(jnp.ones(3, jnp.int32), 4, 4), TypeError, "x must be a floating-point array"),
        (lambda: wj.QW(X, 4, mode="stochastic", noise=np.zeros(3, F32)), ValueError, "noise must have x's shape"),
        (lambda: wj.QW(X, 4, key=jax.random.key(0)), ValueError, "only used with rounding='stochastic'"),
        (
            lambda: wj.wage_quantize(X, 4, 4, "nearest", "stochastic", key=jax.random.key(0), noise_E=X),
            ValueError,
            "either key or noise",
        ),
    ],
)
def test_arguments_are_validated_eagerly_naming_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()


# ------------------------------------------------------------------------------------------------ dtypes


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_any_float_dtype_is_computed_in_float32_and_returned_in_its_own(dtype):
    x = jnp.asarray(X * 1.5, dtype)
    x32 = np.asarray(x.astype(jnp.float32))  # the float32 values the input stands for
    g = jnp.asarray(G, dtype)
    cases = {
        "shift": (wj.shift(x), spec_model.shift(x32)),
        "C": (wj.C(x, 3), spec_model.C(x32, 3)),
        "QW": (wj.QW(x, 4, 2.0), spec_model.QW(x32, 4, 2.0)),
        "QG": (wj.QG(g, 8, 8.0), spec_model.QG(np.asarray(g.astype(jnp.float32)), 8, 8.0)),
        "fixed_point_quantize": (wj.fixed_point_quantize(x, 6, 5), spec_model.fixed_point(x32, 6, 5, True, False)[0]),
        "wage_quantize": (wj.wage_quantize(x, 4, 4), spec_model.wage_forward(x32, 4)[0]),
    }
    for name, (out, ref32) in cases.items():
        assert out.dtype == dtype, f"{name} returned {out.dtype}"
        expected = np.asarray(ref32).astype(ml_dtypes.bfloat16 if dtype == jnp.bfloat16 else dtype)
        np.testing.assert_array_equal(
            np.asarray(out).view(np.uint16 if dtype != jnp.float32 else np.uint32),
            expected.view(np.uint16 if dtype != jnp.float32 else np.uint32),
            err_msg=name,
        )
    grad = jax.grad(lambda v: jnp.sum(wj.wage_quantize(v, 4, 4).astype(jnp.float32)))(x)
    assert grad.dtype == dtype


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64")  # jax without x64 returns float32
def test_numpy_float64_input_is_computed_in_float32():
    x64 = (X * 1.5).astype(np.float64)
    out = wj.QW(x64, 4)
    assert jnp.issubdtype(out.dtype, jnp.floating)
    assert_bits_equal(np.asarray(out, F32), spec_model.QW(x64.astype(F32), 4), "QW of float64")


# ------------------------------------------------------------------------------------------------ NaN/Inf


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_raise_eagerly_in_shift_and_qg(bad):
    x = X.copy()
    x[2, 3] = bad
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        wj.shift(x)
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        wj.QG(x, 8, 1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_under_jit_give_the_documented_all_nan(bad):
    x = X.copy()
    x[2, 3] = bad
    assert np.all(np.isnan(np.asarray(jax.jit(wj.shift)(x))))
    assert np.all(np.isnan(np.asarray(jax.jit(lambda v: wj.QG(v, 8, 1.0))(x))))


def test_nan_passes_through_the_elementwise_quantizers():
    x = X.copy()
    x[0, 0], x[0, 1], x[0, 2] = np.nan, np.inf, -np.inf
    for out in (wj.QW(x, 4), jax.jit(lambda v: wj.QW(v, 4))(x), wj.C(x, 4), wj.wage_quantize(x, 4, 4)):
        out = np.asarray(out)
        assert np.isnan(out[0, 0]) and out[0, 1] == F32(1 - 2**-3) and out[0, 2] == F32(-1 + 2**-3)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(x))


# ------------------------------------------------------------------------------------------------ regressions


def test_gradient_whose_max_is_the_smallest_subnormal():
    # shift scales by 2^149 here: the fast (flush-to-zero) shift used by QG and the error quantizer once
    # stopped at 2^148 and returned 0.5 instead of 1 (found by the Hypothesis parity tests).
    sub = np.finfo(F32).smallest_subnormal
    g = np.zeros(24, F32)
    g[5], g[7] = sub, -sub
    qg = jax.jit(lambda v: wj.QG(v, 2, 8.0))
    assert_bits_equal(qg(g), spec_model.QG(g, 2, 8.0), "QG")
    assert float(qg(g)[5]) == 4.0
    x = np.linspace(-0.5, 0.5, 24).astype(F32)
    grad = jax.jit(jax.grad(lambda v, u: jnp.sum(wj.wage_quantize(v, 8, 8) * u)))(x, g)
    assert_bits_equal(grad, spec_model.wage_backward(g, np.zeros(24, bool), 8), "wage_quantize backward")


# ------------------------------------------------------------------------------------------------ tracing


def test_closed_over_and_partial_arrays_do_not_raise_under_transformations():
    """The eager/traced decision is made on the value evaluated: closed-over concrete arrays under jit,
    vmap, grad and functools.partial are traced there, so nothing raises or reads a tracer."""
    import functools

    g = jnp.ones(3)
    expected = np.asarray(wj.QG(g, 8, 1.0))
    assert np.array_equal(np.asarray(jax.jit(lambda: wj.QG(g, 8, 1.0))()), expected)
    assert np.array_equal(np.asarray(jax.jit(functools.partial(wj.QG, g, 8, 1.0))()), expected)
    assert np.array_equal(np.asarray(jax.jit(functools.partial(wj.QG, g, 8, jnp.float32(1.0)))()), expected)
    assert np.array_equal(np.asarray(jax.vmap(lambda _: wj.QG(g, 8, 1.0))(jnp.zeros(2)))[1], expected)
    bad = jnp.array([1.0, jnp.nan])
    assert np.isnan(np.asarray(jax.jit(lambda: wj.shift(bad))())).all()  # documented all-NaN under jit
    assert np.isnan(np.asarray(jax.jit(lambda: wj.QG(bad, 8, 1.0))())).all()
    grad = jax.grad(lambda x: (wj.wage_quantize(x, 8, 8) * jnp.arange(4.0)).sum())
    assert np.asarray(jax.jit(lambda: grad(jnp.full(4, 0.25)))()).shape == (4,)
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        wj.QG(bad, 8, 1.0)  # eagerly it raises


def test_nan_incoming_gradient_raises_eagerly_and_is_all_nan_under_jit():
    x = jnp.array([0.25, -0.5, 0.125])

    def loss(x):
        return (wj.wage_quantize(x, 8, 8) * jnp.array([1.0, jnp.inf, 0.0])).sum()

    with pytest.raises(ValueError, match="incoming gradient contains NaN or Inf"):
        jax.grad(loss)(x)
    assert np.isnan(np.asarray(jax.jit(jax.grad(loss))(x))).all()
    err, _ = jax.jit(wj.checked.checkify(jax.grad(lambda x: (wj.checked.wage_quantize(x, 8, 8)
                                                                * jnp.array([1.0, jnp.inf, 0.0])).sum())))(x)
    assert "incoming gradient" in err.get()
    # bits_E = -1 passes the gradient on unchanged, NaN included, as qtorch's quantizer does.
    assert np.isnan(np.asarray(jax.grad(lambda x: (wj.wage_quantize(x, 8, -1) * jnp.nan).sum())(x))).all()


@pytest.mark.parametrize("bad_key", [0, 1.5, np.zeros(2, np.float32), "key"])
def test_keys_must_be_prng_keys(bad_key):
    for call in (
        lambda: wj.QW(X, 4, mode="stochastic", key=bad_key),
        lambda: wj.QG(X, 4, 1.0, "stochastic", key=bad_key),
        lambda: wj.fixed_point_quantize(X, 4, 3, rounding="stochastic", key=bad_key),
        lambda: wj.wage_quantize(X, 4, 4, "nearest", "stochastic", key=bad_key),
    ):
        with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
            call()
    assert wj.QW(X, 4, mode="stochastic", key=jax.random.PRNGKey(0)).shape == X.shape  # raw uint32 keys too


@pytest.mark.parametrize("lr", [0.0, -1.0, 2.0**25, float("inf")])
def test_lr_must_be_positive_finite_and_not_absurd(lr):
    with pytest.raises(ValueError, match="lr must be a finite number in \\(0, 2\\^24\\]"):
        wj.QG(X, 8, lr)
    with pytest.raises(ValueError, match="lr must be a finite number in"):
        wj.QG(X, 8, jnp.float32(lr))


def test_e_noise_is_drawn_in_the_backward_with_the_same_bits_as_explicit_noise():
    """With a key, the error's draws come from the second half of ``split(key)`` in the backward: the same
    bits as passing ``noise_E = uniform(split(key)[1])``; the forward keeps only the key for them."""
    key = jax.random.key(5)
    x = jnp.asarray(X)
    g = jnp.asarray(RNG.standard_normal(X.shape).astype(F32))
    noise_E = jax.random.uniform(jax.random.split(key)[1], X.shape)

    def vjp(**kw):
        out, f = jax.vjp(lambda t: wj.wage_quantize(t, 4, 6, "nearest", "stochastic", **kw), x)
        return np.asarray(out), np.asarray(f(g)[0])

    by_key, by_noise = vjp(key=key), vjp(noise_E=noise_E)
    assert np.array_equal(f32_bits(by_key[0]), f32_bits(by_noise[0]))
    assert np.array_equal(f32_bits(by_key[1]), f32_bits(by_noise[1]))
    # What the forward keeps for the backward: the bool clamp mask and the key (no float32 noise array).
    _, f = jax.vjp(lambda t: wj.wage_quantize(t, 4, 6, "nearest", "stochastic", key=key), x)
    kept = [(str(leaf.dtype), leaf.shape) for leaf in jax.tree_util.tree_leaves(f)]
    assert kept == [("bool", X.shape), ("key<fry>", ())], kept
