"""wage_jax's Flax modules (linen and nnx), initializer, optax transform and train step."""

from __future__ import annotations

import inspect
import math
import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import linen as nn
from flax import nnx as fnnx

import wage_jax
import wage_jax.linen as wl
import wage_jax.nnx as wn
from wage_jax import (
    clip_params,
    keep_params_clipped,
    kernel_scale,
    make_train_step,
    scale_by_qg,
    wage_init,
    wage_kernel_init,
    wage_sgd,
)
from wage_jax.models import MLP
from wage_parity.testing import digits, f32_bits
from wage_spec import WAGEConfig
from wage_torch import wage_init_


def _expected_limit_and_scale(fan_in: int, bits_W: int, factor: float) -> tuple[float, float]:
    # docs/contract.md §3, written out independently of wage_spec.
    float_limit = math.sqrt(3 * factor / fan_in)
    wm = 1.5 / 2 ** (bits_W - 1)
    return max(wm, float_limit), max(2.0 ** np.round(np.log2(wm / float_limit)), 1.0)


# ---------------------------------------------------------------- initializer


@pytest.mark.parametrize("bits_W", [2, 4, 8])
@pytest.mark.parametrize("shape", [(64, 32), (784, 1024), (3, 3, 16, 8), (3, 3, 512, 512)])
def test_wage_init_limit_and_scale(bits_W, shape):
    fan = math.prod(shape[:-1])
    limit, scale = _expected_limit_and_scale(fan, bits_W, 1.0)
    kernel, got_scale = wage_init(jax.random.key(0), shape, bits_W, 1.0)
    assert got_scale == scale == kernel_scale(shape, bits_W, 1.0)
    k = np.asarray(kernel)
    assert k.shape == shape and k.dtype == np.float32
    assert np.abs(k).max() <= limit and np.abs(k).max() > 0.9 * limit


@pytest.mark.parametrize("bits_W", [2, 3, 8])
def test_jax_and_torch_initializers_agree_on_scale(bits_W):
    """The same layer gets the same scale from wage_init_ (torch layout) and kernel_scale (Flax layout)."""
    for torch_shape, flax_shape in [((10, 64), (64, 10)), ((8, 4, 3, 3), (3, 3, 4, 8))]:
        t = torch.empty(torch_shape)
        assert wage_init_(t, bits_W, factor=2.0) == kernel_scale(flax_shape, bits_W, 2.0)


def _jax_layer_factors(model, shape: tuple[int, ...]) -> list[float]:
    """The ``factor`` of every WAGE layer ``model.init`` calls (shapes only: nothing is computed)."""
    seen: list[float] = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, (wl.WAGEDense, wl.WAGEConv)) and context.method_name == "__call__":
            seen.append(context.module.factor)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))
    return seen


def test_factor_defaults_layers_two_config_one_and_the_models_pass_the_config():
    """docs/contract.md §3: the layers and initializers on their own default to factor 2.0 (the documented
    ``wage_init_``), ``WAGEConfig`` to the paper's 1.0, and the models of both packages give every layer
    ``config.factor``, so a model built from the default config is initialized with 1.0."""
    import wage_jax.models as jm
    import wage_torch.models as tm
    from wage_spec import wage_init_limits

    def default(fn) -> object:
        return inspect.signature(fn).parameters["factor"].default

    assert WAGEConfig().factor == 1.0
    documented = typing.get_overloads(wage_init_)[0]  # the documented form; QPyTorch's is the second
    assert default(documented) == default(wage_init) == default(kernel_scale) == default(wage_kernel_init) == 2.0
    assert wl.WAGEDense(3, bits_W=2).factor == wl.WAGEConv(3, bits_W=2).factor == 2.0
    assert default(wn.WAGEDense.__init__) == default(wn.WAGEConv.__init__) == 2.0

    models = [  # (wage_jax model, its input shape, the wage_torch model with those layers) per config
        (lambda c: jm.MLP(hidden=(64,), config=c), (1, 8, 8), lambda c: tm.MLP(64, hidden=(64,), config=c)),
        (lambda c: jm.VGG7(widths=(4, 8), hidden=16, config=c), (1, 8, 8, 1),
         lambda c: tm.VGG7(1, widths=(4, 8), hidden=16, image_size=8, config=c)),
        (lambda c: jm.LeNet5(widths=(4, 8), hidden=16, config=c), (1, 28, 28, 1),
         lambda c: tm.LeNet5(widths=(4, 8), hidden=16, config=c)),
    ]
    differs = False  # some layer's scale depends on the factor (else the torch check could not fail)
    for cfg in (WAGEConfig(), WAGEConfig(factor=3.0)):
        for jax_model, shape, torch_model in models:
            factors = _jax_layer_factors(jax_model(cfg), shape)
            assert len(factors) >= 2 and set(factors) == {cfg.factor}, factors
            layers = (torch.nn.Linear, torch.nn.Conv2d)
            for w in [m.weight for m in torch_model(cfg).modules() if isinstance(m, layers)]:
                fan = w[0].numel()
                assert w.weight_scale == wage_init_limits(fan, cfg.bits_W, cfg.factor)[1], (fan, w.weight_scale)
                differs |= w.weight_scale != wage_init_limits(fan, cfg.bits_W, 2.0)[1]
    assert differs


# ---------------------------------------------------------------- layers


def test_linen_and_nnx_dense_match_the_functional_core():
    x = jax.random.uniform(jax.random.key(1), (5, 12), minval=-1, maxval=1)
    lin = wl.WAGEDense(7, bits_W=2, factor=1.0)
    params = lin.init(jax.random.key(2), x)["params"]
    kernel = params["kernel"]
    expected = x @ wage_jax.QW(kernel, 2, kernel_scale((12, 7), 2, 1.0))
    assert np.array_equal(f32_bits(lin.apply({"params": params}, x)), f32_bits(expected))
    mod = wn.WAGEDense(12, 7, bits_W=2, factor=1.0, rngs=fnnx.Rngs(params=0))
    mod.kernel[...] = kernel
    assert np.array_equal(f32_bits(mod(x)), f32_bits(expected))
    assert mod.scale == kernel_scale((12, 7), 2, 1.0)


def test_linen_and_nnx_conv_match_each_other_and_lax():
    x = jax.random.uniform(jax.random.key(3), (2, 6, 6, 3), minval=-1, maxval=1)
    lin = wl.WAGEConv(4, bits_W=3)
    params = lin.init(jax.random.key(4), x)["params"]
    mod = wn.WAGEConv(3, 4, bits_W=3, rngs=fnnx.Rngs(params=0))
    mod.kernel[...] = params["kernel"]
    w = wage_jax.QW(params["kernel"], 3, kernel_scale((3, 3, 3, 4), 3, 2.0))
    expected = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    out_lin, out_nnx = lin.apply({"params": params}, x), mod(x)
    assert out_lin.shape == (2, 6, 6, 4)
    assert np.array_equal(f32_bits(out_lin), f32_bits(out_nnx))
    np.testing.assert_allclose(out_lin, expected, rtol=1e-6, atol=1e-6)


def test_dense_gradient_reaches_the_accumulator_straight_through():
    x = jnp.ones((1, 3))
    lin = wl.WAGEDense(2, bits_W=2, factor=1.0)
    params = lin.init(jax.random.key(0), x)["params"]
    g = jax.grad(lambda p: lin.apply({"params": p}, x).sum())(params)
    assert np.array_equal(np.asarray(g["kernel"]), np.ones((3, 2), np.float32))


@pytest.mark.parametrize("bits_A,bits_E", [(8, 8), (-1, 8), (8, -1), (4, 6)])
def test_quantizer_modules_equal_wage_quantize(bits_A, bits_E):
    x = jax.random.normal(jax.random.key(5), (4, 9)) * 2
    g = jax.random.normal(jax.random.key(6), (4, 9))
    expected, vjp = jax.vjp(lambda v: wage_jax.wage_quantize(v, bits_A, bits_E), x)
    for module, call in [
        (wl.WAGEQuantizer(bits_A, bits_E), lambda m, v: m.apply({}, v)),
        (wn.WAGEQuantizer(bits_A, bits_E), lambda m, v: m(v)),
    ]:
        out, vjp_m = jax.vjp(lambda v, m=module, c=call: c(m, v), x)
        assert np.array_equal(f32_bits(out), f32_bits(expected))
        assert np.array_equal(f32_bits(vjp_m(g)[0]), f32_bits(vjp(g)[0]))


def test_stochastic_quantizer_draws_from_the_wage_stream():
    x = jax.random.normal(jax.random.key(7), (64,))
    lin = wl.WAGEQuantizer(4, 8, A_mode="stochastic")
    a = lin.apply({}, x, rngs={"wage": jax.random.key(1)})
    b = lin.apply({}, x, rngs={"wage": jax.random.key(1)})
    c = lin.apply({}, x, rngs={"wage": jax.random.key(2)})
    assert np.array_equal(f32_bits(a), f32_bits(b)) and not np.array_equal(f32_bits(a), f32_bits(c))
    with pytest.raises(Exception, match="wage"):
        lin.apply({}, x)
    mod = wn.WAGEQuantizer(4, 8, A_mode="stochastic")
    with pytest.raises(ValueError, match="wage"):
        mod(x)
    mod = wn.WAGEQuantizer(4, 8, A_mode="stochastic", rngs=fnnx.Rngs(wage=3))
    assert not np.array_equal(f32_bits(mod(x)), f32_bits(mod(x)))  # the stream advances


def test_modules_validate_their_arguments():
    with pytest.raises(ValueError, match="bits_A"):
        wn.WAGEQuantizer(1, 8)
    with pytest.raises(ValueError, match="E_mode"):
        wn.WAGEQuantizer(8, 8, E_mode="up")
    with pytest.raises(ValueError, match="bits_W"):
        wl.WAGEDense(3, bits_W=30).init(jax.random.key(0), jnp.ones((1, 2)))


# ---------------------------------------------------------------- optax


def test_scale_by_qg_maps_every_leaf_to_minus_QG_and_zero_stays_zero():
    grads = {"a": jax.random.normal(jax.random.key(0), (5, 4)), "b": jnp.zeros((3,))}
    tx = optax.chain(scale_by_qg(8, 8.0, mode="nearest"), optax.identity())
    updates, _ = tx.update(grads, tx.init(grads))
    assert np.array_equal(f32_bits(updates["a"]), f32_bits(-wage_jax.QG(grads["a"], 8, 8.0)))
    assert not np.any(np.asarray(updates["b"]))


def test_scale_by_qg_schedule_and_key_state():
    grads = {"w": jax.random.normal(jax.random.key(0), (200,))}
    sched = optax.piecewise_constant_schedule(8.0, {2: 0.125})
    tx = scale_by_qg(8, sched, mode="nearest")
    state = tx.init(grads)
    for lr in (8.0, 8.0, 1.0, 1.0):  # the schedule (boundaries scale: 8 * 0.125) at count 0..3
        u, state = tx.update(grads, state)
        assert np.array_equal(f32_bits(u["w"]), f32_bits(-wage_jax.QG(grads["w"], 8, lr)))
    assert int(state.count) == 4
    stoch = scale_by_qg(8, 1.0, mode="stochastic", key=jax.random.key(4))
    s0 = stoch.init(grads)
    u1, s1 = stoch.update(grads, s0)
    u1b, _ = stoch.update(grads, s0)
    u2, _ = stoch.update(grads, s1)
    assert np.array_equal(f32_bits(u1["w"]), f32_bits(u1b["w"]))
    assert not np.array_equal(f32_bits(u1["w"]), f32_bits(u2["w"]))
    with pytest.raises(ValueError, match="key"):
        scale_by_qg(8, 1.0, mode="stochastic")


def test_clipped_update_is_the_reference_clip_then_subtract():
    """With clipped accumulators, C(w + (-q)) == C(C(w) - q) and w + (-q) == C(w) - q, bit for bit."""
    rng = np.random.default_rng(0)
    w_ref = rng.uniform(-0.75, 0.75, 10_000).astype(np.float32)  # the reference's unclipped accumulators
    q = np.asarray(wage_jax.QG(jnp.asarray(rng.standard_normal(10_000), jnp.float32), 8, 8.0))
    w = np.asarray(clip_params(jnp.asarray(w_ref), 2))  # ours: clipped once at init
    ours = np.asarray(optax.apply_updates(jnp.asarray(w), jnp.asarray(-q)))
    reference = np.asarray(wage_jax.C(jnp.asarray(w_ref), 2)) - q
    assert np.array_equal(f32_bits(ours), f32_bits(reference))
    assert np.array_equal(f32_bits(clip_params(jnp.asarray(ours), 2)), f32_bits(wage_jax.C(jnp.asarray(reference), 2)))


# ---------------------------------------------------------------- training


def _train(cfg: WAGEConfig, seed: int, steps: int, batch: int = 64):
    x, y = digits(np.int32)
    model = MLP(hidden=(128,), config=cfg)
    key = jax.random.key(seed)
    params = model.init(key, jnp.zeros((1, 8, 8)))["params"]
    opt = wage_sgd(cfg.bits_W, cfg.bits_G, 8.0, cfg.G_mode, key=jax.random.fold_in(key, 1))
    params = clip_params(params, cfg.bits_W)
    state = opt.init(params)
    step = make_train_step(lambda p, xb, k: model.apply({"params": p}, xb, rngs={"wage": k}), opt)
    order = np.random.default_rng(seed).permutation(1400)
    for i in range(steps):
        idx = order[(i * batch) % 1344 : (i * batch) % 1344 + batch]
        params, state, _, _ = step(params, state, x[idx], y[idx], jax.random.fold_in(key, 100 + i))
    logits = model.apply({"params": params}, x[1400:], rngs={"wage": key})
    acc = float((np.asarray(logits).argmax(-1) == y[1400:]).mean())
    return params, acc


def test_stochastic_training_is_reproducible_and_learns():
    cfg = WAGEConfig()  # the paper's setting: G and E stochastic
    assert cfg.stochastic
    p1, acc1 = _train(cfg, seed=0, steps=120)
    p2, acc2 = _train(cfg, seed=0, steps=120)
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2), strict=True):
        assert np.array_equal(f32_bits(a), f32_bits(b))
    assert acc1 == acc2
    assert acc1 > 0.8, f"WAGE 2-8-8-8 with stochastic G/E should learn digits, got {acc1:.3f}"


def test_float_baseline_model_has_the_same_parameter_names():
    x = jnp.zeros((1, 8, 8))
    wage = MLP(hidden=(16,)).init(jax.random.key(0), x)["params"]
    flt = MLP(hidden=(16,), quantized=False).init(jax.random.key(0), x)["params"]
    assert jax.tree_util.tree_structure(wage) == jax.tree_util.tree_structure(flt)
    assert isinstance(MLP(hidden=(16,), quantized=False), nn.Module)


# ---------------------------------------------------------------- WAGE as plain optax


def _reference_step(tx_qg, bits_W):
    """The previous ``WAGEOptimizer.step``: ``params <- C(params + (-QG(grads)))`` with an explicit clip."""

    def step(grads, state, params):
        updates, state = tx_qg.update(grads, state, params)
        return clip_params(optax.apply_updates(params, updates), bits_W), state

    return jax.jit(step)


@pytest.mark.parametrize("bits_W", [2, 3, 8, 16])
def test_keep_params_clipped_lands_on_the_clip_exactly(bits_W):
    """``w + keep_params_clipped(u)`` == ``C(w + u)`` bit for bit, for clipped ``w`` and ``|u| <= b``."""
    b = np.float32(1.0 - (0.0 if bits_W > 15 else 2.0 ** -(bits_W - 1)))
    rng = np.random.default_rng(bits_W)
    n = 400_000
    special = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-39, b, -b, b / 2, -b / 2, np.nextafter(b / 2, 0)], np.float32)
    w = np.concatenate([
        special,
        rng.uniform(-b, b, n).astype(np.float32),
        (b - rng.uniform(0, 1, n) ** 8 * b).astype(np.float32) * rng.choice([-1, 1], n),  # near the bounds
        (rng.uniform(-1, 1, n) * 10.0 ** rng.uniform(-40, 0, n)).astype(np.float32),  # tiny, subnormal
    ])
    w = np.clip(w, -b, b)
    grid = 2.0**-7
    u = (rng.integers(-int(b / grid), int(b / grid) + 1, len(w)) * grid).astype(np.float32)
    u[: len(special)] = b
    tx = keep_params_clipped(bits_W)

    @jax.jit
    def ours(w, u):
        upd, _ = tx.update(u, tx.init(w), w)
        return optax.apply_updates(w, upd)

    reference = jax.jit(lambda w, u: wage_jax.C(w + u, bits_W))
    assert np.array_equal(f32_bits(ours(w, u)), f32_bits(reference(w, u)))
    assert np.array_equal(f32_bits(ours(w, -u)), f32_bits(reference(w, -u)))


def test_keep_params_clipped_passes_nan_and_needs_params():
    tx = keep_params_clipped(2)
    w = jnp.array([0.25, 0.5])
    upd, _ = tx.update(jnp.array([jnp.nan, 0.0]), tx.init(w), w)
    assert np.isnan(np.asarray(optax.apply_updates(w, upd))[0])
    with pytest.raises(ValueError, match="needs params"):
        tx.update(jnp.zeros(2), tx.init(w))


@pytest.mark.parametrize("stochastic", [False, True])
def test_wage_sgd_train_step_train_state_and_chain_match_the_reference(stochastic):
    """``make_train_step(wage_sgd)``, Flax's ``TrainState`` and a hand-built ``optax.chain`` train WAGE bit for
    bit as the clip-then-subtract reference (the previous ``WAGEOptimizer``), nearest and stochastic."""
    from flax.training.train_state import TrainState

    cfg = WAGEConfig() if stochastic else WAGEConfig.nearest()
    x, y = digits(np.int32)
    model = MLP(hidden=(64,), config=cfg)
    params0 = clip_params(model.init(jax.random.key(0), jnp.zeros((1, 8, 8)))["params"], cfg.bits_W)
    key_G = jax.random.key(7) if stochastic else None

    def apply_fn(p, xb, k):
        return model.apply({"params": p}, xb, rngs=None if k is None else {"wage": k})

    def loss_and_grads(p, xb, yb, k):
        return jax.value_and_grad(lambda q: wage_jax.sse_loss(apply_fn(q, xb, k), yb))(p)

    loss_and_grads = jax.jit(loss_and_grads)
    batches = [(x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]) for i in range(25)]
    keys = [jax.random.fold_in(jax.random.key(3), i) if stochastic else None for i in range(len(batches))]

    qg = scale_by_qg(cfg.bits_G, 8.0, cfg.G_mode, key=key_G)
    ref_step, ref_params, ref_state = _reference_step(qg, cfg.bits_W), params0, qg.init(params0)
    tx = wage_sgd(cfg.bits_W, cfg.bits_G, 8.0, cfg.G_mode, key=key_G)
    step = make_train_step(apply_fn, tx, donate=False)
    p, s = params0, tx.init(params0)
    chain = optax.chain(scale_by_qg(cfg.bits_G, 8.0, cfg.G_mode, key=key_G), keep_params_clipped(cfg.bits_W))
    ts = TrainState.create(apply_fn=model.apply, params=params0, tx=chain)
    apply_ts = jax.jit(lambda ts, g: ts.apply_gradients(grads=g))
    for (xb, yb), k in zip(batches, keys, strict=True):
        _, grads = loss_and_grads(ref_params, xb, yb, k)
        ref_params, ref_state = ref_step(grads, ref_state, ref_params)
        p, s, _, _ = step(p, s, xb, yb, k)
        ts = apply_ts(ts, loss_and_grads(ts.params, xb, yb, k)[1])
        for a, b, c in zip(*map(jax.tree_util.tree_leaves, (ref_params, p, ts.params)), strict=True):
            assert np.array_equal(f32_bits(a), f32_bits(b)) and np.array_equal(f32_bits(a), f32_bits(c))
    assert not np.array_equal(f32_bits(ref_params["dense0"]["kernel"]), f32_bits(params0["dense0"]["kernel"]))


def test_nnx_optimizer_trains_wage_as_the_reference():
    """``flax.nnx.Optimizer(model, wage_sgd(...))`` gives the reference's accumulators bit for bit."""

    class Net(fnnx.Module):
        def __init__(self, rngs):
            self.d0 = wn.WAGEDense(64, 32, bits_W=2, factor=1.0, rngs=rngs)
            self.q = wn.WAGEQuantizer(8, 8)
            self.d1 = wn.WAGEDense(32, 10, bits_W=2, factor=1.0, rngs=rngs)

        def __call__(self, x):
            return self.d1(self.q(self.d0(x.reshape(x.shape[0], -1))))

    x, y = digits(np.int32)
    model = Net(fnnx.Rngs(params=0))
    graphdef, params0 = fnnx.split(model, fnnx.Param)
    params0 = clip_params(params0, 2)
    fnnx.update(model, params0)

    def loss(m, xb, yb):
        return wage_jax.sse_loss(m(xb), yb)

    optimizer = fnnx.Optimizer(model, wage_sgd(2, 8, 8.0, "nearest"), wrt=fnnx.Param)

    @fnnx.jit
    def nnx_step(model, optimizer, xb, yb):
        grads = fnnx.grad(loss)(model, xb, yb)
        optimizer.update(model, grads)

    qg = scale_by_qg(8, 8.0, "nearest")
    ref_step, ref_params, ref_state = _reference_step(qg, 2), params0, qg.init(params0)
    ref_grads = jax.jit(jax.grad(lambda p, xb, yb: loss(fnnx.merge(graphdef, p), xb, yb)))
    for i in range(20):
        xb, yb = x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]
        ref_params, ref_state = ref_step(ref_grads(ref_params, xb, yb), ref_state, ref_params)
        nnx_step(model, optimizer, xb, yb)
    got = fnnx.state(model, fnnx.Param)
    for a, b in zip(jax.tree_util.tree_leaves(ref_params), jax.tree_util.tree_leaves(got), strict=True):
        assert np.array_equal(f32_bits(a), f32_bits(b))


def test_make_train_step_takes_any_loss_and_any_optax_transformation():
    x, y = digits(np.int32)
    model = MLP(hidden=(16,), quantized=False)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8)))["params"]
    tx = optax.adam(1e-2)

    def xent(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    step = make_train_step(lambda p, xb, k: model.apply({"params": p}, xb), tx, xent)
    state = tx.init(params)
    first = None
    for _ in range(30):
        params, state, loss, logits = step(params, state, x[:128], y[:128])
        first = float(loss) if first is None else first
        assert logits.shape == (128, 10)
    assert float(loss) < 0.5 * first


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: scale_by_qg(8, 0.0, "nearest"), ValueError, "learning_rate must be a finite number in"),
        (lambda: scale_by_qg(8, -1.0, "nearest"), ValueError, "learning_rate must be"),
        (lambda: scale_by_qg(8, float("inf"), "nearest"), ValueError, "learning_rate must be"),
        (lambda: scale_by_qg(8, 1e30, "nearest"), ValueError, "learning_rate must be"),
        (lambda: scale_by_qg(8, "1", "nearest"), TypeError, "learning_rate must be"),
        (lambda: scale_by_qg(8, 1.0, "stochastic", key=0), TypeError, "key must be a JAX PRNG key"),
        (lambda: wage_sgd(1, 8, 1.0, "nearest"), ValueError, "bits_W must be"),
        (lambda: wage_jax.QG(jnp.ones(3), 8, 0.0), ValueError, "lr must be a finite number in"),
        (lambda: wage_jax.QG(jnp.ones(3), 8, 1.0, "stochastic", key=0), TypeError, "key must be a JAX PRNG key"),
        (lambda: wage_jax.QW(jnp.ones(3), 8, mode="stochastic", key=1.5), TypeError, "key must be"),
        (lambda: wage_jax.wage_quantize(jnp.ones(3), 8, 8, "stochastic", key=0), TypeError, "key must be"),
    ],
)
def test_bad_lr_and_keys_are_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()
