"""The WAGE layers' Flax-style options and input validation (linen and nnx)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx as fnnx
from jax import lax

import wage_jax.linen as wl
import wage_jax.nnx as wn
from wage_jax import QW, kernel_scale
from wage_jax._src.layers import conv_padding, positive_pair

X = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 7, 7, 3)), jnp.float32)


@pytest.mark.parametrize(
    ("padding", "expected"),
    [
        ("same", "SAME"),
        ("VALID", "VALID"),
        (1, ((1, 1), (1, 1))),
        ((2, 0), ((2, 2), (0, 0))),
        ([(1, 0), (0, 2)], ((1, 0), (0, 2))),
    ],
)
def test_conv_padding_forms(padding, expected):
    assert conv_padding(padding) == expected


@pytest.mark.parametrize("padding", ["CIRCULAR", "full", -1, (1, 2, 3), [(1, 2, 3), (0, 0)], 1.5, True])
def test_conv_padding_rejects(padding):
    with pytest.raises(ValueError, match="padding"):
        conv_padding(padding)


def test_kernel_size_and_strides():
    assert positive_pair(3) == (3, 3) and positive_pair([1, 5]) == (1, 5)
    for bad in (0, (3,), (3, 3, 3), 2.0, True, (1, 1.0)):
        with pytest.raises(ValueError, match="kernel_size"):
            positive_pair(bad)
        with pytest.raises(ValueError, match="^strides must be a positive int or two positive ints"):
            positive_pair(bad, "strides")


@pytest.mark.parametrize("strides", [1.0, (2, 0), "2"])
def test_linen_and_nnx_conv_refuse_bad_strides_naming_them(strides):
    with pytest.raises(ValueError, match="^strides must be"):
        wn.WAGEConv(3, 4, 3, strides=strides, rngs=fnnx.Rngs(0))
    with pytest.raises(ValueError, match="^strides must be"):
        wl.WAGEConv(4, bits_W=3, strides=strides).init(jax.random.key(0), X)


def test_an_int_stride_means_both_dimensions():
    lin = wl.WAGEConv(4, bits_W=3, strides=2)
    params = lin.init(jax.random.key(0), X)["params"]
    assert lin.apply({"params": params}, X).shape == wl.WAGEConv(4, bits_W=3, strides=(2, 2)).apply(
        {"params": params}, X).shape


@pytest.mark.parametrize("padding", ["SAME", "VALID", 1, (2, 0), [(1, 0), (0, 2)]])
def test_linen_and_nnx_conv_padding_forms_match_lax(padding):
    lin = wl.WAGEConv(4, bits_W=3, kernel_size=3, padding=padding)
    params = lin.init(jax.random.key(0), X)["params"]
    kernel = params["kernel"]
    w = QW(kernel, 3, kernel_scale(kernel.shape, 3, 2.0))
    expected = lax.conv_general_dilated(X, w, (1, 1), conv_padding(padding),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=lax.Precision.HIGHEST)
    np.testing.assert_array_equal(lin.apply({"params": params}, X), expected)
    mod = wn.WAGEConv(3, 4, bits_W=3, kernel_size=3, padding=padding, rngs=fnnx.Rngs(params=0))
    mod.kernel[...] = kernel
    np.testing.assert_array_equal(mod(X), expected)


def test_kernel_init_param_dtype_and_dtype():
    def ones(key, shape, dtype=jnp.float32):
        return jnp.full(shape, 0.25, dtype)

    lin = wl.WAGEDense(5, bits_W=8, kernel_init=ones, dtype=jnp.bfloat16)
    variables = lin.init(jax.random.key(0), jnp.ones((2, 4)))
    assert np.all(np.asarray(variables["params"]["kernel"]) == 0.25)
    y = lin.apply(variables, jnp.ones((2, 4)))
    assert y.dtype == jnp.bfloat16 and y.shape == (2, 5)
    mod = wn.WAGEDense(4, 5, bits_W=8, kernel_init=ones, dtype=jnp.bfloat16, rngs=fnnx.Rngs(params=0))
    assert np.all(np.asarray(mod.kernel[...]) == 0.25) and mod(jnp.ones((2, 4))).dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(mod(jnp.ones((2, 4))), np.float32), np.asarray(y, np.float32))
    # the scale is the WAGE initializer's whatever kernel_init is
    assert mod.scale == kernel_scale((4, 5), 8, 2.0)
    lin64 = wl.WAGEConv(2, bits_W=2, kernel_size=1, param_dtype=jnp.float32)
    assert lin64.init(jax.random.key(0), X)["params"]["kernel"].dtype == jnp.float32


def test_factor_default_is_the_documented_wage_init_and_models_pass_the_configs():
    from wage_jax.models import MLP
    from wage_spec import WAGEConfig

    assert wl.WAGEDense(3, bits_W=2).factor == 2.0 and wl.WAGEConv(3, bits_W=2).factor == 2.0
    assert "factor" in wl.WAGEDense.__doc__ and "wage_init_" in wn.WAGEConv.__doc__
    assert WAGEConfig().factor == 1.0
    model = MLP(config=WAGEConfig(), hidden=(3,))
    bound = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.ones((1, 4))))
    assert set(bound["params"]) == {"dense0", "dense1"}


def test_int_kernel_size_works_in_both():
    assert wl.WAGEConv(4, bits_W=2, kernel_size=3).init(jax.random.key(0), X)["params"]["kernel"].shape == (3, 3, 3, 4)
    assert wn.WAGEConv(3, 4, 2, kernel_size=3, rngs=fnnx.Rngs(params=0)).kernel.shape == (3, 3, 3, 4)


def test_dense_on_a_0d_input_names_the_input():
    with pytest.raises(ValueError, match="WAGEDense input x .*0-d"):
        wl.WAGEDense(3, bits_W=2).init(jax.random.key(0), jnp.float32(1.0))
    mod = wn.WAGEDense(1, 3, 2, rngs=fnnx.Rngs(params=0))
    with pytest.raises(ValueError, match="WAGEDense input x .*0-d"):
        mod(jnp.float32(1.0))


def test_dense_feature_mismatch():
    mod = wn.WAGEDense(4, 3, 2, rngs=fnnx.Rngs(params=0))
    with pytest.raises(ValueError, match="WAGEDense input x has 5 features"):
        mod(jnp.ones((2, 5)))


@pytest.mark.parametrize("shape", [(7, 7, 3), (1, 2, 7, 7, 3), (3,)])
def test_conv_wrong_rank_is_a_clear_error(shape):
    with pytest.raises(ValueError, match="WAGEConv input x must be 4-d NHWC"):
        wl.WAGEConv(4, bits_W=2).init(jax.random.key(0), jnp.ones(shape))
    mod = wn.WAGEConv(3, 4, 2, rngs=fnnx.Rngs(params=0))
    with pytest.raises(ValueError, match="WAGEConv input x must be 4-d NHWC"):
        mod(jnp.ones(shape))


def test_conv_channel_mismatch():
    mod = wn.WAGEConv(2, 4, 2, rngs=fnnx.Rngs(params=0))
    with pytest.raises(ValueError, match="WAGEConv input x has 3 channels"):
        mod(X)


@pytest.mark.parametrize("shape", [(12, 5), (3, 3, 2, 4)])
def test_wage_init_draws_jax_random_uniform_of_the_kernel_shape(shape):
    """wage_init draws flat and reshapes (a compile-time saving on XLA:CPU); the kernel is still, bit for bit,
    ``jax.random.uniform(key, shape, minval=-L, maxval=L)``, eager and under jit."""
    from wage_jax import wage_init
    from wage_spec import fan_in, wage_init_limits

    key = jax.random.key(7)
    limit = wage_init_limits(fan_in(shape, layout="flax"), 2, 1.0)[0]
    expected = np.asarray(jax.random.uniform(key, shape, jnp.float32, minval=-limit, maxval=limit))
    for kernel in (wage_init(key, shape, 2, 1.0)[0], jax.jit(lambda k: wage_init(k, shape, 2, 1.0)[0])(key)):
        assert kernel.shape == shape
        np.testing.assert_array_equal(np.asarray(kernel).view(np.uint32), expected.view(np.uint32))
