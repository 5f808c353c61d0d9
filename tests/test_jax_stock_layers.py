"""WAGE on Flax's stock layers: ``nn.Dense``/``nn.Conv``/``nnx.Linear``/``nnx.Conv`` given the WAGE hooks train
bit for bit as the project's WAGE layers (MLP, LeNet-5, VGG7; float and integer products)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import wage_jax
import wage_jax.linen as wl
import wage_jax.nnx as wn
from wage_jax import make_train_step, wage_conv_general_dilated, wage_dot_general, wage_kernel_init, wage_sgd
from wage_jax.models import MLP, VGG7, LeNet5
from wage_parity.testing import f32_bits
from wage_spec import WAGEConfig


def _stock(model_cls):
    """``model_cls`` whose WAGE layers are stock Flax layers with the WAGE hooks (same names, same params)."""

    class Stock(model_cls):
        def dense(self, features, name):
            c = self.config
            return nn.Dense(features, use_bias=False, kernel_init=wage_kernel_init(c.bits_W, c.factor), name=name,
                            dot_general=wage_dot_general(c.bits_W, c.factor, **self._integer()))

        def conv(self, features, name, kernel_size=(3, 3), padding="SAME"):
            c = self.config
            hook = wage_conv_general_dilated(c.bits_W, c.factor, **self._integer())
            return nn.Conv(features, kernel_size, padding=padding, use_bias=False, name=name,
                           kernel_init=wage_kernel_init(c.bits_W, c.factor), conv_general_dilated=hook)

    return Stock


def _trajectory(model, x, y, config, steps):
    params = jax.jit(model.init)({"params": jax.random.key(0), "wage": jax.random.key(1)}, x[:1])["params"]
    tx = wage_sgd(config.bits_W, config.bits_G, 8.0, config.G_mode, key=jax.random.key(2))
    params = wage_jax.clip_params(params, config.bits_W)
    opt_state = tx.init(params)
    step = make_train_step(lambda p, xb, k: model.apply({"params": p}, xb, rngs={"wage": k}), tx)
    out = []
    for i in range(steps):
        params, opt_state, loss, logits = step(params, opt_state, x, y, jax.random.fold_in(jax.random.key(3), i))
        out.append((jax.tree_util.tree_map(np.asarray, params), np.asarray(logits)))
    return out


CASES = {
    "mlp": (MLP, {"hidden": (32,)}, (16, 8, 8)),
    "lenet5": (LeNet5, {"widths": (4, 8), "hidden": 16}, (8, 28, 28, 1)),
    "vgg7": (VGG7, {"widths": (4, 8, 8), "hidden": 16}, (8, 32, 32, 3)),
}


_SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("name", "modes", "integer"),
    [("mlp", "nearest", False), ("mlp", "paper", False), ("mlp", "nearest", True), ("mlp", "paper", True),
     # The conv hook: LeNet-5 (5x5 VALID) on the integer path, VGG7 (3x3 SAME) with stochastic draws.
     pytest.param("lenet5", "nearest", True, marks=_SLOW), pytest.param("vgg7", "paper", False, marks=_SLOW)],
)
def test_stock_layers_train_bit_for_bit_as_the_wage_layers(name, modes, integer):
    cls, kwargs, shape = CASES[name]
    config = WAGEConfig.nearest() if modes == "nearest" else WAGEConfig()  # paper: G and E stochastic
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, shape).astype(np.float32))
    y = jnp.asarray(np.arange(shape[0]) % 10)
    ours = _trajectory(cls(config=config, integer=integer, **kwargs), x, y, config, 2)
    stock = _trajectory(_stock(cls)(config=config, integer=integer, **kwargs), x, y, config, 2)
    for (p_ours, l_ours), (p_stock, l_stock) in zip(ours, stock, strict=True):
        np.testing.assert_array_equal(f32_bits(l_stock), f32_bits(l_ours))
        for a, b in zip(jax.tree_util.tree_leaves(p_stock), jax.tree_util.tree_leaves(p_ours), strict=True):
            np.testing.assert_array_equal(f32_bits(a), f32_bits(b))
    assert not np.array_equal(ours[0][0]["dense0"]["kernel"], ours[-1][0]["dense0"]["kernel"])  # it trained


def test_nnx_stock_layers_equal_the_nnx_wage_layers_with_gradients():
    rngs = nnx.Rngs(params=0)
    ours = wn.WAGEDense(12, 5, 2, rngs=rngs)
    stock = nnx.Linear(12, 5, use_bias=False, kernel_init=wage_kernel_init(2), dot_general=wage_dot_general(2),
                       rngs=nnx.Rngs(params=1))
    stock.kernel[...] = ours.kernel[...]
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (3, 12)).astype(np.float32))
    np.testing.assert_array_equal(f32_bits(stock(x)), f32_bits(ours(x)))
    g_ours = nnx.grad(lambda m: (m(x) ** 2).sum())(ours)
    g_stock = nnx.grad(lambda m: (m(x) ** 2).sum())(stock)
    np.testing.assert_array_equal(f32_bits(g_stock.kernel[...]), f32_bits(g_ours.kernel[...]))

    conv = wn.WAGEConv(3, 4, 2, rngs=nnx.Rngs(params=0))
    stock_conv = nnx.Conv(3, 4, (3, 3), use_bias=False, conv_general_dilated=wage_conv_general_dilated(2),
                          rngs=nnx.Rngs(params=0))
    stock_conv.kernel[...] = conv.kernel[...]
    img = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (2, 6, 6, 3)).astype(np.float32))
    np.testing.assert_array_equal(f32_bits(stock_conv(img)), f32_bits(conv(img)))


def test_stochastic_w_through_the_hook_modules_draws_from_the_wage_stream():
    x = jnp.ones((2, 6), jnp.float32)
    dense = nn.Dense(4, use_bias=False, kernel_init=wage_kernel_init(4),
                     dot_general_cls=functools.partial(wl.WAGEDotGeneral, 4, 2.0, "stochastic"))
    params = dense.init({"params": jax.random.key(0), "wage": jax.random.key(1)}, x)
    assert set(params) == {"params"} and set(params["params"]) == {"kernel"}
    outs = {np.asarray(dense.apply(params, x, rngs={"wage": jax.random.key(k)})).tobytes() for k in range(6)}
    assert len(outs) > 1  # fresh draws per key
    with pytest.raises(Exception, match="wage"):
        dense.apply(params, x)  # no stream: the missing rng is named

    layer = nnx.Linear(6, 4, use_bias=False, kernel_init=wage_kernel_init(4), rngs=nnx.Rngs(params=0),
                       dot_general=wn.WAGEDotGeneral(4, 2.0, "stochastic", rngs=nnx.Rngs(wage=1)))

    @nnx.jit
    def run(m):
        return m(x)

    a, b = run(layer), run(layer)
    assert a.shape == (2, 4) and not np.array_equal(a, b)  # the stream advances under nnx.jit


def test_plain_hook_refuses_stochastic_w_without_a_key():
    with pytest.raises(ValueError, match="W_mode='stochastic' needs a key"):
        wage_dot_general(4, W_mode="stochastic")(jnp.ones((1, 3)), jnp.ones((3, 2)), (((1,), (0,)), ((), ())))


@pytest.mark.parametrize("bad", [{"bits_W": 1}, {"W_mode": "round"}, {"factor": 0.0}, {"integer": "yes"}])
def test_hooks_validate_their_arguments(bad):
    args = {"bits_W": 2, **bad}
    for hook in (wage_dot_general, wage_conv_general_dilated):
        with pytest.raises((TypeError, ValueError)):
            hook(**args)


def test_integer_hook_refuses_contractions_it_cannot_compute():
    conv = wage_conv_general_dilated(2, integer=True, bits_A=8, bits_E=8)
    with pytest.raises(ValueError, match="without dilation or feature groups"):
        conv(jnp.zeros((1, 6, 6, 2)), jnp.zeros((3, 3, 1, 4)), (1, 1), "SAME", feature_group_count=2,
             dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_evaluation_needs_no_key_when_only_e_is_stochastic():
    config = WAGEConfig()  # the paper's: E stochastic, A and W nearest
    model = MLP(hidden=(16,), config=config)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 8, 8)).astype(np.float32))
    params = model.init({"params": jax.random.key(0), "wage": jax.random.key(1)}, x)["params"]
    without = model.apply({"params": params}, x)
    for k in range(3):
        np.testing.assert_array_equal(without, model.apply({"params": params}, x, rngs={"wage": jax.random.key(k)}))
    with pytest.raises(ValueError, match="E_mode='stochastic' draws in the backward pass"):
        jax.grad(lambda p: model.apply({"params": p}, x).sum())(params)
    # NNX: the same without rngs
    q = wn.WAGEQuantizer(8, 8, "nearest", "stochastic")
    np.testing.assert_array_equal(q(x), wage_jax.wage_quantize(x, 8, 8))
