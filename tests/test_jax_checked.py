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
