"""The compiled WAGE train step holds no ``conditional``.

XLA:GPU runs a ``conditional`` by copying its predicate to the host and waiting for it, so one inside the step
stops the device mid-step (``shift``'s subnormal fallback was a ``lax.cond``, about 16 per VGG7 step). Checked
on the optimized HLO that XLA runs (``.compile().as_text()``), for each model, both rounding settings (all
nearest, the paper's stochastic G and E) and the integer layers, on tiny widths so that compiling stays cheap.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wage_jax as wj
from wage_jax.models import MLP, VGG7, LeNet5
from wage_spec import WAGEConfig

MODELS = {
    "mlp": (lambda **kw: MLP(hidden=(16,), **kw), (2, 8, 8, 1)),
    "lenet5": (lambda **kw: LeNet5(widths=(4, 8), hidden=16, **kw), (2, 16, 16, 1)),
    "vgg7": (lambda **kw: VGG7(widths=(4, 8, 8), hidden=16, **kw), (2, 8, 8, 3)),
}
CONDITIONAL = re.compile(r"\bconditional\(")  # the HLO op (metadata names functions, this test's included)
SETTINGS = {
    "nearest": (WAGEConfig.nearest(), False),
    "paper": (WAGEConfig(), False),
    "integer paper": (WAGEConfig(), True),
    "int32 paper": (WAGEConfig(), "int32"),
}


def _lowered_step(model_name: str, setting: str, lowering: str = "conv", shape: tuple[int, ...] | None = None):
    build, default_shape = MODELS[model_name]
    shape = shape or default_shape
    config, integer = SETTINGS[setting]
    model = build(num_classes=10, config=config, integer=integer, lowering=lowering)
    x, y = jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape[:1], jnp.int32)
    key = jax.random.key(0)
    # Shapes only (eager Flax init would compile every primitive on its own: seconds per model).
    params = jax.eval_shape(
        lambda: wj.clip_params(model.init({"params": key, "wage": key}, jnp.zeros(shape))["params"], config.bits_W)
    )
    tx = wj.wage_sgd(config.bits_W, config.bits_G, 8.0, mode=config.G_mode, key=key)
    needs_key = "stochastic" in (config.W_mode, config.A_mode, config.E_mode)

    def apply_fn(p, xb, k):
        return model.apply({"params": p}, xb, rngs=None if k is None else {"wage": k})

    step = wj.make_train_step(apply_fn, tx, donate=False)
    return step.lower(params, jax.eval_shape(tx.init, params), x, y, key if needs_key else None)


CASES = [(m, s) for m in MODELS for s in SETTINGS]


@pytest.mark.parametrize("model_name, setting", CASES)
def test_lowered_wage_step_has_no_conditional(model_name, setting):
    """The HLO that jax hands to XLA (cheap: no compilation)."""
    text = _lowered_step(model_name, setting).as_text(dialect="hlo")
    assert "ENTRY" in text
    assert not CONDITIONAL.search(text), f"{model_name}/{setting}: a conditional in the step"


@pytest.mark.parametrize("model_name, setting", [
    c if c == ("mlp", "paper") else pytest.param(*c, marks=pytest.mark.slow) for c in CASES
])
def test_compiled_wage_step_has_no_conditional(model_name, setting):
    """The optimized HLO that XLA runs (compiling a WAGE step takes seconds: all but one case are slow)."""
    text = _lowered_step(model_name, setting).compile().as_text()
    assert "fusion" in text  # the optimized module, not an empty string
    assert not CONDITIONAL.search(text), f"{model_name}/{setting}: a conditional in the compiled step"


def test_shift_has_no_conditional_and_its_fallback_still_finds_subnormals():
    """The select that replaced the branch: the subnormal max is still exact, NaN/Inf still all-NaN."""
    f = jax.jit(wj.shift)
    assert not CONDITIONAL.search(f.lower(jnp.zeros(4, jnp.float32)).compile().as_text())
    sub = np.float32(np.finfo(np.float32).smallest_subnormal)
    x = np.array([3 * sub, -5 * sub, 0.0, 0.0], np.float32)
    # max|x| = 5 * 2^-149, k = ceil(log2(5)) - 149 = -146: x * 2^146 = [3/8, -5/8, 0, 0].
    np.testing.assert_array_equal(np.asarray(f(x)), np.array([0.375, -0.625, 0.0, 0.0], np.float32))
    for bad in (np.nan, np.inf):
        assert np.isnan(np.asarray(f(np.array([sub, bad, 0.0, 1.0], np.float32)))).all()


def _integer_convolutions(hlo: str) -> int:
    """Convolutions in StableHLO whose operands are integers."""
    return sum(bool(re.search(r"stablehlo\.convolution.*tensor<[^>]*xi(8|16|32)>.*->", line))
               for line in hlo.splitlines())


@pytest.mark.parametrize("setting, lowering", [("paper", "conv"), ("paper", "patches"), ("integer paper", "conv"),
                                               ("integer paper", "int8_f32"), ("integer paper", "patches"),
                                               ("int32 paper", "conv"), ("int32 paper", "patches")])
def test_no_backward_pass_convolves_integers(setting, lowering):
    """XLA:GPU rewrites a backward convolution into cuDNN's backward-data / backward-filter calls, which have no
    int8 engines: in every lowering's VGG7 step the integer convolutions are the forward pass's alone."""
    step = _lowered_step("vgg7", setting, lowering).as_text()
    build, shape = MODELS["vgg7"]
    config, integer = SETTINGS[setting]
    model = build(num_classes=10, config=config, integer=integer, lowering=lowering)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape))["params"])
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(
        params, jax.ShapeDtypeStruct(shape, jnp.float32)).as_text()
    assert _integer_convolutions(step) == _integer_convolutions(forward)
    assert _integer_convolutions(forward) == (6 if integer and lowering != "patches" else 0)


def _int32_dot_results(hlo: str) -> set[str]:
    """The result shapes of the ``dot_general``s of two int8 operands with an int32 result."""
    return {m.group(1) for m in re.finditer(r"stablehlo\.dot_general.*tensor<[^>]*xi8>.*-> tensor<([^>]*)xi32>", hlo)}


@pytest.mark.parametrize("lowering", ["conv", "patches"])
def test_int32_sums_put_the_kernel_gradients_on_int32_dots(lowering):
    """VGG7 at batch 16 on 32x32 images: the first convolutions' kernel gradients sum 16 x 32 x 32 terms, past
    2^24 in the worst case. With ``integer=True`` they take the float32 path; with ``integer="int32"`` every
    kernel gradient is an int8 x int8 dot with an int32 result, ``(kh * kw * Ci, Co)``."""
    shape = (16, 32, 32, 3)
    kernels = {"27x4", "36x4", "36x8", "72x8"}  # widths (4, 8, 8): conv0 3->4, conv1 4->4, conv2 4->8, 8->8
    int32 = _int32_dot_results(_lowered_step("vgg7", "int32 paper", lowering, shape).as_text())
    assert kernels <= int32
    assert "27x4" not in _int32_dot_results(_lowered_step("vgg7", "integer paper", lowering, shape).as_text())
