"""wage_jax.checked: NaN/Inf reported from inside jit through jax.experimental.checkify."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import wage_jax as wj
from wage_jax import checked
from wage_parity.testing import f32_bits

X = jnp.array([[0.3, -0.7, 0.1], [0.05, 2.5, -1.25]], jnp.float32)


def _poisoned(value: float) -> jax.Array:
    return X.at[1, 2].set(value)


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("shift", lambda x: checked.shift(x)),
        ("QG", lambda x: checked.QG(x, 8, 1.0)),
        ("QW", lambda x: checked.QW(x, 2, 4.0)),
        ("wage_quantize", lambda x: checked.wage_quantize(x, 8, 8)),
    ],
)
def test_jitted_check_names_the_function_and_argument(name, fn):
    jitted = jax.jit(checked.checkify(fn))
    for bad in (np.nan, np.inf, -np.inf):
        err, _ = jitted(_poisoned(bad))
        message = err.get()
        assert message is not None and f"wage_jax.checked.{name}: x contains NaN or Inf" in message
        with pytest.raises(checkify.JaxRuntimeError, match=f"checked.{name}: x contains NaN or Inf"):
            err.throw()
    err, _ = jitted(X)  # the same compiled program, finite input
    assert err.get() is None


@pytest.mark.parametrize(
    ("fn", "plain"),
    [
        (lambda x: checked.shift(x), lambda x: wj.shift(x)),
        (lambda x: checked.QG(x, 8, 1.0), lambda x: wj.QG(x, 8, 1.0)),
        (lambda x: checked.QW(x, 2, 4.0), lambda x: wj.QW(x, 2, 4.0)),
        (lambda x: checked.wage_quantize(x, 8, 8), lambda x: wj.wage_quantize(x, 8, 8)),
    ],
)
def test_finite_input_passes_and_results_are_the_unchecked_ones(fn, plain):
    err, out = jax.jit(checked.checkify(fn))(X)
    assert err.get() is None
    np.testing.assert_array_equal(f32_bits(out), f32_bits(jax.jit(plain)(X)))


def test_unchecked_jit_gives_the_documented_all_nan_that_checked_mode_reports():
    # Without checked mode the poison spreads silently: shift under jit returns all-NaN.
    out = jax.jit(wj.shift)(_poisoned(np.inf))
    assert np.all(np.isnan(np.asarray(out)))
    err, out_checked = jax.jit(checked.checkify(checked.shift))(_poisoned(np.inf))
    assert np.all(np.isnan(np.asarray(out_checked))) and "contains NaN or Inf" in err.get()


def _loss(x, upstream):
    return jnp.sum(checked.wage_quantize(x, 8, 8) * upstream)


def test_backward_checks_the_incoming_gradient():
    upstream = jnp.ones_like(X).at[0, 1].set(jnp.nan)
    err, grad = jax.jit(checked.checkify(jax.grad(_loss)))(X * 0.1, upstream)
    assert "wage_jax.checked.wage_quantize: the incoming gradient contains NaN or Inf" in err.get()
    assert np.all(np.isnan(np.asarray(grad)))  # what the unchecked backward gives: all-NaN


def test_backward_check_passes_finite_gradients_unchanged():
    upstream = jnp.arange(6, dtype=jnp.float32).reshape(2, 3) - 2.5
    x = X * 0.3
    err, grad = jax.jit(checked.checkify(jax.grad(_loss)))(x, upstream)
    assert err.get() is None
    expected = jax.jit(jax.grad(lambda x, u: jnp.sum(wj.wage_quantize(x, 8, 8) * u)))(x, upstream)
    np.testing.assert_array_equal(f32_bits(grad), f32_bits(expected))


def test_forward_check_fires_before_the_backward_one():
    upstream = jnp.full_like(X, jnp.inf)
    err, _ = jax.jit(checked.checkify(jax.grad(_loss)))(_poisoned(np.nan), upstream)
    assert "checked.wage_quantize: x contains NaN or Inf" in err.get()


def test_checks_work_inside_a_jitted_train_step_with_vmap():
    def step(w, g):
        return checked.QW(w, 2) - jax.vmap(lambda row: checked.QG(row, 8, 8.0))(g)

    w = jnp.zeros((2, 3), jnp.float32)
    err, _ = jax.jit(checked.checkify(step))(w, X)
    assert err.get() is None
    err, _ = jax.jit(checked.checkify(step))(w, _poisoned(np.nan))
    assert "wage_jax.checked.QG: x contains NaN or Inf" in err.get()


def test_eager_use_outside_checkify_raises():
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        checked.shift(_poisoned(np.nan))  # the unchecked function's own eager error
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        checked.QG(_poisoned(np.nan), 8, 1.0)
    with pytest.raises(checkify.JaxRuntimeError, match="checked.QW: x contains NaN or Inf"):
        checked.QW(_poisoned(np.nan), 8)
    assert issubclass(checkify.JaxRuntimeError, ValueError)


def test_checked_functions_validate_arguments_like_the_unchecked_ones():
    with pytest.raises(ValueError, match="bits_G"):
        checked.QG(X, 1, 1.0)
    with pytest.raises(ValueError, match="E_mode"):
        checked.wage_quantize(X, 8, 8, E_mode="up")
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        checked.shift(jnp.arange(3))
    with pytest.raises(ValueError, match="needs randomness"):
        checked.QW(X, 8, mode="stochastic")


def test_checkify_helper_uses_user_checks_only():
    # A NaN made by an ordinary operation is checkify's nan_checks, not a user check: not reported.
    fn = checked.checkify(lambda x: jnp.log(checked.shift(x) - 2.0))
    err, out = jax.jit(fn)(X)
    assert err.get() is None and np.all(np.isnan(np.asarray(out)))


@pytest.mark.parametrize("lr", [-8.0, 0.0, 1e30, float("nan"), float("inf"), 2.0**24 * 2])
def test_traced_lr_outside_its_range_gives_nan_never_plausible_weights(lr):
    """Issue 29: an lr reaching QG traced (an optax schedule's value under jit) cannot raise; outside (0, 2^24]
    the update is all NaN (ascent for -8, no update for 0 and saturation for 1e30 would pass as weights)."""
    from wage_jax import scale_by_qg

    g = jnp.array([0.5, -0.25, 0.01, 0.0], jnp.float32)
    assert np.isnan(np.asarray(jax.jit(lambda g, lr: wj.QG(g, 8, lr))(g, jnp.float32(lr)))).all()
    tx = scale_by_qg(8, lambda count: jnp.float32(lr), mode="nearest")
    update, _ = jax.jit(tx.update)({"w": g}, tx.init({"w": g}))
    assert np.isnan(np.asarray(update["w"])).all()
    with pytest.raises(ValueError, match="lr must be a finite number in"):
        wj.QG(g, 8, jnp.float32(lr))  # eagerly: the concrete value is checked


def test_traced_lr_in_range_gives_the_eager_bits():
    g = jnp.array([0.5, -0.25, 0.01, 0.0, 3e-3], jnp.float32)
    for lr in (2.0**-20, 0.125, 1.0, 8.0, 2.0**24):
        traced = jax.jit(lambda g, lr: wj.QG(g, 8, lr))(g, jnp.float32(lr))
        np.testing.assert_array_equal(f32_bits(traced), f32_bits(wj.QG(g, 8, lr)))


# ---- exactness by magnitude ---------------------------------------------------------------------------------------


def _brute_conv_bounds(x, w, e, strides, pads):
    """For each product, max over its outputs of max(P, N), the sums of its positive and of its negative terms, by
    explicit loops over the windows (integers in int64: exact)."""
    def bound(a, b, place):
        """``place(arrays, out)`` accumulates einsum products of ``a`` and ``b`` (signed and absolute)."""
        signed, absolute = place(a, b), place(np.abs(a), np.abs(b))
        return ((absolute + np.abs(signed)) // 2).max()

    kh, kw = w.shape[:2]
    ho, wo = e.shape[1:3]
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))

    def windows():
        for i in range(ho):
            for j in range(wo):
                yield i, j, (slice(None), slice(i * strides[0], i * strides[0] + kh),
                             slice(j * strides[1], j * strides[1] + kw), slice(None))

    def forward(xa, wa):
        out = np.zeros(e.shape, np.int64)
        for i, j, s in windows():
            out[:, i, j, :] = np.einsum("nabc,abco->no", xa[s], wa)
        return out

    def input_grad(ea, wa):
        out = np.zeros(xp.shape, np.int64)
        for i, j, s in windows():
            out[s] += np.einsum("no,abco->nabc", ea[:, i, j, :], wa)
        return out[:, pads[0][0]:pads[0][0] + x.shape[1], pads[1][0]:pads[1][0] + x.shape[2]]  # x's own positions

    def kernel_grad(xa, ea):
        out = np.zeros(w.shape, np.int64)
        for i, j, s in windows():
            out += np.einsum("nabc,no->abco", xa[s], ea[:, i, j, :])
        return out

    return {"forward": bound(xp, w, forward), "input_grad": bound(e, w, input_grad),
            "kernel_grad": bound(xp, e, kernel_grad)}


@pytest.mark.parametrize("strides, padding", [((1, 1), "SAME"), ((2, 1), ((1, 0), (2, 1))), ((2, 2), "VALID")])
def test_sum_bounds_are_the_largest_partial_sums_in_grid_units(strides, padding):
    rng = np.random.default_rng(5)
    kx, kw_, ke = rng.integers(-127, 128, (3, 7, 6, 2)), rng.integers(-1, 2, (3, 2, 2, 3)), None
    x, w = kx / np.float32(128), kw_ / np.float32(2)  # bits_A = 8, bits_W = 2 (scale 1)
    pads = padding if not isinstance(padding, str) else jax.lax.padtype_to_pads((7, 6), (3, 2), strides, padding)
    out = jax.eval_shape(lambda a, b: jax.lax.conv_general_dilated(a, b, strides, padding, dimension_numbers=(
        "NHWC", "HWIO", "NHWC")), x.astype(np.float32), w.astype(np.float32)).shape
    ke = rng.integers(-127, 128, out)
    bounds = checked.sum_bounds("conv", jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32),
                                jnp.asarray(ke / 128, jnp.float32), 8, 2, 8, 1.0, strides=strides, padding=padding)
    expected = _brute_conv_bounds(kx, kw_, ke, strides, [tuple(p) for p in pads])
    assert {k: float(v) for k, v in bounds.items()} == {k: float(v) for k, v in expected.items()}


def test_a_sum_past_2_to_the_24_is_reported_and_does_round_in_float32():
    """1100 examples of 127 x 127 units: the dense kernel gradient's sums reach 1100 * 16129 > 2^24; the float32
    sum in one order is no longer the exact integer, and checked mode names the layer and the product."""
    n = 1100
    x = jnp.full((n, 3), 127 / 128, jnp.float32)  # bits_A = 8: 127 units
    e = jnp.full((n, 2), -127 / 128, jnp.float32)  # bits_E = 8
    w = jnp.full((3, 2), 0.5, jnp.float32)  # bits_W = 2: 1 unit
    bounds = checked.sum_bounds("dense", x, w, e, 8, 2, 8, 1.0)
    # the bound itself is a float32 sum: past 2^24 it rounds too, by a few ulp
    assert float(bounds["kernel_grad"]) == pytest.approx(n * 127 * 127, rel=1e-5)
    assert n * 127 * 127 > checked.EXACT_SUM_LIMIT
    assert float(bounds["forward"]) == 3 * 127 and float(bounds["input_grad"]) == 2 * 127
    terms = np.full(n, 127 * 127, np.float32)
    assert int(np.cumsum(terms, dtype=np.float32)[-1]) != n * 127 * 127  # sequential float32 rounds past 2^24

    err, _ = jax.jit(checked.checkify(lambda b: checked.check_exact_sums({"dense0": b})))(bounds)
    assert err.get().startswith("dense0 kernel_grad: a partial sum reaches 1.05")
    err, _ = jax.jit(checked.checkify(lambda b: checked.check_exact_sums({"dense0": b})))(
        {k: v for k, v in bounds.items() if k != "kernel_grad"})
    assert err.get() is None


def test_layer_sum_bounds_measure_each_wage_layer_of_a_model_in_a_step():
    from wage_jax.models import MLP
    from wage_spec import WAGEConfig

    cfg = WAGEConfig()
    model = MLP(config=cfg, hidden=(16,))
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (8, 12)), jnp.float32)
    y = jnp.arange(8) % 10
    params = wj.clip_params(model.init(jax.random.key(0), x)["params"], cfg.bits_W)

    def probe(p, key):
        bounds = checked.layer_sum_bounds(model, p, x, y, rngs={"wage": key})
        checked.check_exact_sums(bounds)
        return bounds

    err, bounds = jax.jit(checked.checkify(probe))(params, jax.random.key(1))
    assert err.get() is None and list(bounds) == ["dense0", "dense1"]
    assert all(set(b) == {"forward", "input_grad", "kernel_grad"} and all(float(v) > 0 for v in b.values())
               for b in bounds.values())
    # dense0's forward, by hand: |Q_A(x)| |QW(w)| in units of 2^-7 and of the layer's weight grid
    w = params["dense0"]["kernel"]
    scale = wj.kernel_scale(w.shape, cfg.bits_W, cfg.factor)
    qx, qw = wj.wage_quantize(x, cfg.bits_A, -1), wj.QW(w, cfg.bits_W, scale)
    kx, kw = np.asarray(qx, np.float64) * 128, np.asarray(qw, np.float64) * 2 * scale
    by_hand = np.max((np.abs(kx) @ np.abs(kw) + np.abs(kx @ kw)) / 2)
    assert float(bounds["dense0"]["forward"]) == by_hand


def test_bounds_need_grids_and_repeatable_weights():
    z = jnp.zeros((2, 3), jnp.float32)
    with pytest.raises(ValueError, match="bits_A=-1 .* has no fixed-point grid"):
        checked.sum_bounds("dense", z, jnp.zeros((3, 2)), z[:, :2], -1, 2, 8, 1.0)
    with pytest.raises(ValueError, match="kind must be 'dense' or 'conv'"):
        checked.sum_bounds("pool", z, z, z, 8, 2, 8, 1.0)
    from wage_jax.models import MLP
    from wage_spec import WAGEConfig

    model = MLP(config=WAGEConfig(W_mode="stochastic"), hidden=(4,))
    params = model.init({"params": jax.random.key(0), "wage": jax.random.key(1)}, z)["params"]
    with pytest.raises(ValueError, match="layer dense0 has W_mode='stochastic'"):
        checked.layer_sum_bounds(model, params, z, jnp.zeros(2, jnp.int32), rngs={"wage": jax.random.key(2)})
