"""Carried forward weights (issue 15): the update writes ``QW(w_new)`` into the optimizer state and the forward uses it.

``wage_sgd(..., carry_forward=kernel_quantizers(model, x))`` + ``make_train_step`` must train bit for bit as the
step that recomputes ``QW`` in the forward (MLP over 200 steps, a small VGG7 and LeNet-5, integer mode), carry
``QW(params)`` after every step, and compile to a step whose forward reads the carried weights instead of
running a ``QW`` pass over the kernels.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from wage_jax import parallel
from wage_jax.initializers import kernel_scale
from wage_jax.linen import FORWARD_COLLECTION, WAGEDense, kernel_quantizers, make_apply_fn
from wage_jax.models import MLP, VGG7, LeNet5
from wage_jax.optax import (
    CarryForwardState,
    KernelQuantizer,
    carried_forward_weights,
    carry_forward_weights,
    clip_params,
    forward_weights,
    wage_sgd,
    with_forward_weights,
)
from wage_jax.train import make_train_step
from wage_spec import WAGEConfig


def _bits(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, np.float32)).view(np.int32)


def _same_bits(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(_bits(x), _bits(y)) for x, y in zip(la, lb, strict=True))


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    return ((d.images.astype(np.float32) / 16.0) * 2 - 1), d.target.astype(np.int32)


def _setup(model, x0, cfg: WAGEConfig, seed: int = 0):
    """Clipped initial params, and (recompute, carried) as (tx, jitted step, quantizers)."""
    params = clip_params(
        jax.jit(model.init)({"params": jax.random.key(seed), "wage": jax.random.key(seed + 1)}, x0)["params"],
        cfg.bits_W)
    quantizers = kernel_quantizers(model, x0)
    key_G = jax.random.key(seed + 2) if cfg.G_mode == "stochastic" else None
    apply_fn = make_apply_fn(model)
    plain = wage_sgd(cfg.bits_W, cfg.bits_G, 8.0, cfg.G_mode, key=key_G)
    carry = wage_sgd(cfg.bits_W, cfg.bits_G, 8.0, cfg.G_mode, key=key_G, carry_forward=quantizers)
    return params, quantizers, (plain, make_train_step(apply_fn, plain, donate=False)), \
        (carry, make_train_step(apply_fn, carry, donate=False))


def _run_both(model, x0, batches, cfg: WAGEConfig, check_every: int = 1):
    """Train with and without carried weights; check bits, and carried == QW(params), every ``check_every`` steps."""
    params, quantizers, (tx0, step0), (tx1, step1) = _setup(model, x0, cfg)
    p0, s0, p1, s1 = params, tx0.init(params), params, jax.jit(tx1.init)(params)
    qw = jax.jit(lambda p: forward_weights(p, quantizers))
    assert _same_bits(carried_forward_weights(s1), qw(params))
    for i, (xb, yb) in enumerate(batches):
        key = jax.random.fold_in(jax.random.key(9), i) if cfg.stochastic else None
        p0, s0, loss0, logits0 = step0(p0, s0, xb, yb, key)
        p1, s1, loss1, logits1 = step1(p1, s1, xb, yb, key)
        if i % check_every == 0 or i == len(batches) - 1:
            assert _same_bits(p0, p1), f"accumulators differ at step {i}"
            assert _same_bits(logits0, logits1) and _same_bits(loss0, loss1), f"forward differs at step {i}"
            assert _same_bits(carried_forward_weights(s1), qw(p1)), f"stale QW at step {i}"
    assert not _same_bits(p1, params)
    return p1, s1, quantizers


@pytest.mark.parametrize(
    ("cfg", "integer", "steps"),
    [(WAGEConfig.nearest(), False, 200), (WAGEConfig(), False, 200), (WAGEConfig(), True, 50)],
    ids=["all-nearest", "paper", "paper-integer"],
)
def test_mlp_trajectory_with_carried_weights_is_bit_identical(digits, cfg, integer, steps):
    x, y = digits
    batches = [(x[(i * 32) % 1760 : (i * 32) % 1760 + 32], y[(i * 32) % 1760 : (i * 32) % 1760 + 32])
               for i in range(steps)]
    _run_both(MLP(hidden=(64,), config=cfg, integer=integer), x[:1], batches, cfg, check_every=10)


def test_conv_net_trajectory_with_carried_weights_is_bit_identical():
    """LeNet-5 (5x5 VALID convolutions, pooling) in integer mode, the paper's modes, 6 steps."""
    cfg = WAGEConfig()
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (6, 8, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, (6, 8)).astype(np.int32)
    model = LeNet5(widths=(4, 8), hidden=16, config=cfg, integer=True)
    _, state, q = _run_both(model, x[0, :1], list(zip(x, y, strict=True)), cfg)
    assert q["conv0"]["kernel"] == KernelQuantizer(2, 2.0) and q["dense1"]["kernel"].bits_W == 2
    assert isinstance(state[2], CarryForwardState)


def test_kernel_quantizers_follow_the_module_tree():
    """Every WAGE layer of VGG7 at its path, with the layer's own scale (abstract trace: nothing computed)."""
    model = VGG7(widths=(8, 16, 16), hidden=32, config=WAGEConfig(bits_W=4))
    q = kernel_quantizers(model, jnp.zeros((1, 32, 32, 3)))
    assert set(q) == {f"conv{i}" for i in range(6)} | {"dense0", "dense1"}
    assert q["conv5"]["kernel"] == KernelQuantizer(4, kernel_scale((3, 3, 16, 16), 4, 1.0))
    assert q["dense0"]["kernel"] == KernelQuantizer(4, kernel_scale((16 * 4 * 4, 32), 4, 1.0))


def _entry_users(hlo: str, param_op_name: str) -> list[str]:
    """The instructions of the ENTRY computation that take the parameter named ``param_op_name`` as an operand."""
    entry = hlo[hlo.index("\nENTRY"):].replace("\\'", "'")
    name = re.search(r"%(\S+) = \S+ parameter\(\d+\), metadata=\{op_name=\"" + re.escape(param_op_name) + '"', entry)
    assert name, f"no parameter {param_op_name} in the HLO"
    operand = re.compile(r"[(,] ?%" + re.escape(name.group(1)) + r"[,)]")
    return [ln.strip() for ln in entry.splitlines() if operand.search(ln.split(" = ", 1)[-1])]


def test_compiled_step_has_no_qw_pass_over_the_kernels_in_the_forward(digits):
    """In the jitted step the accumulators are read only by their update, and the forward's matmuls read the
    carried weights; without carrying, a QW fusion in the forward reads the kernel too (the control)."""
    cfg = WAGEConfig.nearest()
    x, y = digits
    model = MLP(hidden=(64,), config=cfg)
    params, _, (tx0, _), (tx1, _) = _setup(model, x[:1], cfg)
    apply_fn = make_apply_fn(model)
    hlo = {}
    for name, tx in (("recompute", tx0), ("carried", tx1)):
        hlo[name] = make_train_step(apply_fn, tx).lower(params, tx.init(params), x[:32], y[:32]).compile().as_text()
    for layer in ("dense0", "dense1"):
        kernel = f"params['{layer}']['kernel']"
        carried_users = _entry_users(hlo["carried"], kernel)
        assert len(carried_users) == 1, carried_users  # the update pass only
        assert "kind=kLoop" in carried_users[0]  # the elementwise update pass (QG, the clip, apply_updates)
        assert len(_entry_users(hlo["recompute"], kernel)) >= 2  # the control: QW in the forward reads it too
        forward = _entry_users(hlo["carried"], f"forward['{layer}']['kernel']")  # not donated: never copied
        assert forward and all("dot" in u for u in forward), forward  # read by matmuls (forward, input gradient)
        assert any(f"jvp(MLP)/{layer}/dot_general" in u for u in forward), forward  # the forward's matmul


def test_data_parallel_step_carries_the_weights(digits):
    """``make_data_parallel_train_step`` passes the carried weights too (a one-device mesh here; the CLI test
    ``test_jax_run_on_several_devices_equals_one_device`` runs several devices through the same step)."""
    cfg = WAGEConfig()
    x, y = digits
    model = MLP(hidden=(32,), config=cfg)
    params, quantizers, (tx0, step0), (tx1, _) = _setup(model, x[:1], cfg)
    mesh = parallel.data_mesh(1)
    step1 = parallel.make_data_parallel_train_step(make_apply_fn(model), tx1, mesh, donate=False)
    p0, s0 = params, tx0.init(params)
    p1, s1 = parallel.replicate((params, tx1.init(params)), mesh)
    for i in range(5):
        key = jax.random.fold_in(jax.random.key(4), i)
        p0, s0, _, _ = step0(p0, s0, x[i * 64 : (i + 1) * 64], y[i * 64 : (i + 1) * 64], key)
        p1, s1, _, _ = step1(p1, s1, x[i * 64 : (i + 1) * 64], y[i * 64 : (i + 1) * 64], key)
    assert _same_bits(p0, p1)
    assert _same_bits(carried_forward_weights(s1), forward_weights(p1, quantizers))
    # step.lower(...).compile() is called like the step itself (the carried weights split off inside).
    key, xb, yb = jax.random.key(5), x[320:384], y[320:384]
    compiled = step1.lower(p1, s1, xb, yb, key).compile()
    assert "dot" in compiled.as_text()
    p2, s2, _, _ = compiled(p1, s1, xb, yb, key)
    p3, s3, _, _ = step1(p1, s1, xb, yb, key)
    assert _same_bits(p2, p3) and _same_bits(carried_forward_weights(s2), carried_forward_weights(s3))


def test_checkpoint_leaves_and_restore_of_the_carried_weights():
    """Stripping the carried weights gives a state with the leaves of the plain ``wage_sgd`` (the checkpoint
    format is unchanged); putting back ``forward_weights(params)`` restores the state bit for bit."""
    cfg = WAGEConfig()
    model = MLP(hidden=(16,), config=cfg)
    params, quantizers, (tx0, _), (tx1, _) = _setup(model, jnp.zeros((1, 8, 8)), cfg)
    s0, s1 = tx0.init(params), tx1.init(params)
    stripped = with_forward_weights(s1, None)
    assert [np.shape(v) for v in jax.tree_util.tree_leaves(stripped)] == \
        [np.shape(v) for v in jax.tree_util.tree_leaves(s0)]
    assert carried_forward_weights(stripped) is None and carried_forward_weights(s0) is None
    restored = with_forward_weights(stripped, forward_weights(params, quantizers))
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(s1)
    assert _same_bits(carried_forward_weights(restored), carried_forward_weights(s1))


def test_jax_runner_checkpoint_round_trip(tmp_path):
    """The CLI's JAX runner carries the weights, saves the same leaves as before, and recomputes them on restore."""
    from wage_train.jax_runner import JaxRunner
    from wage_train.runspec import ModelSpec

    spec = ModelSpec(kind="mlp", image_shape=(8, 8, 1), num_classes=10, hidden=(16,))
    cfg = WAGEConfig()
    runner = JaxRunner(spec, cfg, True, [8.0], 10, seed=0, devices=1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        runner.train_step(rng.uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 16))
    carried = carried_forward_weights(runner.opt_state)
    assert _same_bits(carried, forward_weights(runner.params, runner._quantizers))
    assert carried_forward_weights(runner._state()[1]) is None
    runner.save(tmp_path)
    other = JaxRunner(spec, cfg, True, [8.0], 10, seed=1, devices=1)
    other.restore(tmp_path)
    assert _same_bits(other.params, runner.params)
    assert _same_bits(carried_forward_weights(other.opt_state), carried)


def test_stochastic_w_is_not_carried_and_bad_forward_weights_are_refused():
    x = jnp.zeros((2, 12))
    stochastic = WAGEConfig(W_mode="stochastic")
    assert kernel_quantizers(MLP(hidden=(8,), config=stochastic), x) == {}
    assert set(kernel_quantizers(MLP(hidden=(8,), config=WAGEConfig()), x)) == {"dense0", "dense1"}
    layer = WAGEDense(4, bits_W=2, W_mode="stochastic")
    variables = layer.init({"params": jax.random.key(0), "wage": jax.random.key(1)}, x)
    fw = {"kernel": jnp.zeros((12, 4))}
    with pytest.raises(ValueError, match="W_mode='nearest'"):
        layer.apply({**variables, FORWARD_COLLECTION: fw}, x, rngs={"wage": jax.random.key(2)})
    nearest = WAGEDense(4, bits_W=2)
    with pytest.raises(ValueError, match="kernel's shape and dtype"):
        nearest.apply({**variables, FORWARD_COLLECTION: {"kernel": jnp.zeros((4, 12))}}, x)
    with pytest.raises(TypeError, match="KernelQuantizer"):
        carry_forward_weights({"w": (2, 1.0)})
    tx = carry_forward_weights({"w": KernelQuantizer(2, 1.0)})
    with pytest.raises(ValueError, match="needs params"):
        tx.update({"w": jnp.zeros(2)}, tx.init({"w": jnp.zeros(2)}))
    with pytest.raises(ValueError, match="more than one|holds 2"):
        carried_forward_weights((tx.init({"w": jnp.zeros(2)}), tx.init({"w": jnp.zeros(2)})))


def test_forward_uses_the_given_weights_with_the_straight_through_gradient():
    """The carried value is what the layer multiplies by, and the kernel gets the gradient unchanged."""
    layer = WAGEDense(3, bits_W=2)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (5, 4)).astype(np.float32))
    params = layer.init(jax.random.key(0), x)["params"]
    fw = {"kernel": jnp.full((4, 3), 0.5, jnp.float32)}

    def loss(p, forward):
        variables = {"params": p} if forward is None else {"params": p, FORWARD_COLLECTION: forward}
        return jnp.sum(layer.apply(variables, x) ** 2)

    out = layer.apply({"params": params, FORWARD_COLLECTION: fw}, x)
    assert _same_bits(out, x @ fw["kernel"])
    g = jax.grad(loss)(params, fw)["kernel"]
    assert _same_bits(g, jax.grad(lambda w: jnp.sum((x @ w) ** 2))(fw["kernel"]))
    carried = forward_weights(params, {"kernel": KernelQuantizer(2, kernel_scale((4, 3), 2, 2.0))})
    assert _same_bits(loss(params, carried), loss(params, None))
    assert _same_bits(jax.grad(loss)(params, carried), jax.grad(loss)(params, None))
