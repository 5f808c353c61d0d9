"""Whole training runs, JAX (Flax modules + optax transform) against the torch reference, bit for bit.

From the same initial accumulators and the same batches, with every rounding mode "nearest", the
weight accumulators and the predictions agree at every step. Why this can hold: every operand of every
matmul/convolution is on a fixed-point grid, so each product is exact and each sum is exact in float32
in any order as long as it fits 24 bits of that grid. The bound each test relies on is stated beside it
and asserted. Accumulators are compared as JAX == C(torch) (see ``wage_jax``: JAX keeps them
clipped, the reference clips before subtracting), and the forward weights QW(.) equal exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import wage_torch
from wage_jax import clip_params, make_train_step, wage_sgd
from wage_jax.models import MLP as JaxMLP
from wage_jax.models import VGG7 as JaxVGG7
from wage_jax.models import LeNet5 as JaxLeNet5
from wage_parity.testing import digits_batches, f32_bits
from wage_spec import WAGEConfig
from wage_torch.models import MLP as TorchMLP
from wage_torch.models import VGG7 as TorchVGG7
from wage_torch.models import LeNet5 as TorchLeNet5
from wage_torch.training import WAGETrainer
from wage_train.interop import flax_params_to_torch_weights, torch_weights_to_flax_params


@pytest.fixture(autouse=True, params=["qtorch", "torch"])
def torch_backend(request):
    """Every trajectory with both wage_torch backends (qtorch's kernel and the pure-torch one)."""
    previous = wage_torch.get_backend()
    wage_torch.set_backend(request.param)
    yield request.param
    wage_torch.set_backend(previous)


def _jax_side(jax_model, trainer: WAGETrainer, input_shape: tuple[int, ...], lr):
    """The JAX run starting from the torch trainer's accumulators: ``(params, opt_state, train_step)``."""
    cfg = trainer.config
    template = jax.jit(jax_model.init)(jax.random.key(0), jnp.zeros(input_shape))["params"]  # one program
    params = torch_weights_to_flax_params(list(trainer.accumulators.values()), template)
    opt = wage_sgd(cfg.bits_W, cfg.bits_G, lr, mode="nearest")
    params = clip_params(params, cfg.bits_W)
    train_step = make_train_step(lambda p, x, key: jax_model.apply({"params": p}, x), opt)
    return params, opt.init(params), train_step


def _compare_step(step: int, trainer: WAGETrainer, params, logits_t, logits_j, bits_W: int) -> None:
    assert np.array_equal(f32_bits(logits_t), f32_bits(logits_j)), f"step {step}: predictions differ"
    torch_acc = [wage_torch.C(a, bits_W) for a in trainer.accumulators.values()]
    jax_acc = flax_params_to_torch_weights(jax.device_get(params))
    for i, (a, b) in enumerate(zip(torch_acc, jax_acc, strict=True)):
        differ = int((f32_bits(a.numpy()) != f32_bits(b)).sum())
        assert differ == 0, f"step {step}: layer {i} accumulators differ in {differ} elements"


def test_mlp_trajectory_is_bit_identical_for_200_steps():
    cfg = WAGEConfig.nearest()
    hidden, batch, steps = 128, 64, 200
    # Exactness bounds (8-bit A and E on a 2^-7 grid, 2-bit W on 2^-1/scale):
    # forward sums <= fan_in * 1 * max|W| on a 2^-7 * 2^-1/scale grid; weight-gradient sums <= batch on 2^-14.
    assert batch * 2**14 < 2**24 and 64 * 2**7 * 2 * 16 < 2**24
    torch.manual_seed(0)
    torch_model = TorchMLP(64, hidden=(hidden,), config=cfg)
    trainer = WAGETrainer(torch_model, cfg)
    jax_model = JaxMLP(hidden=(hidden,), config=cfg)
    lr = 8.0
    params, opt_state, train_step = _jax_side(jax_model, trainer, (1, 8, 8), lr)
    for step, (x, y) in enumerate(digits_batches(steps, batch)):
        _, logits_t = trainer.step(torch.from_numpy(x), torch.from_numpy(y), lr)
        params, opt_state, _, logits_j = train_step(params, opt_state, jnp.asarray(x), jnp.asarray(y))
        _compare_step(step, trainer, params, logits_t.numpy(), logits_j, cfg.bits_W)
    # The run learned something (not a trajectory of zeros).
    x, y = digits_batches(1, 512, seed=1)[0]
    acc = float((np.asarray(jax_model.apply({"params": params}, jnp.asarray(x))).argmax(-1) == y).mean())
    assert acc > 0.5


@pytest.mark.parametrize("lr", [8.0, 1.0])
def test_lr_schedule_trajectory_matches(lr):
    """A traced lr (optax schedule) gives the same bits as the Python float the reference uses."""
    cfg = WAGEConfig.nearest()
    torch.manual_seed(1)
    trainer = WAGETrainer(TorchMLP(64, hidden=(32,), config=cfg), cfg)
    jax_model = JaxMLP(hidden=(32,), config=cfg)
    params, opt_state, train_step = _jax_side(jax_model, trainer, (1, 8, 8), lambda count: jnp.float32(lr))
    for step, (x, y) in enumerate(digits_batches(10, 32, seed=2)):
        _, logits_t = trainer.step(torch.from_numpy(x), torch.from_numpy(y), lr)
        params, opt_state, _, logits_j = train_step(params, opt_state, jnp.asarray(x), jnp.asarray(y))
        _compare_step(step, trainer, params, logits_t.numpy(), logits_j, cfg.bits_W)


def test_conv_net_trajectory_is_bit_identical_for_20_steps():
    """A small VGG7 (conv, max-pool, dense) on 8x8 digits: 6 convolutions, 3 max-pools, 2 dense layers.

    Max-pool ties are frequent (quantized activations), so this also checks that ``max_pool_2x2``
    routes gradients to the first maximum as torch does. Convolution sums: fan_in <= 9 * 8 on a
    2^-7 * 2^-1/scale grid with |W| <= 1/2, well inside 24 bits.
    """
    cfg = WAGEConfig.nearest()
    widths, hidden, batch, steps, lr = (4, 8), 16, 32, 20, 8.0
    torch.manual_seed(2)
    trainer = WAGETrainer(
        TorchVGG7(in_channels=1, widths=widths, hidden=hidden, image_size=8, config=cfg), cfg
    )
    jax_model = JaxVGG7(widths=widths, hidden=hidden, config=cfg)
    params, opt_state, train_step = _jax_side(jax_model, trainer, (1, 8, 8, 1), lr)
    pool_inputs: list[np.ndarray] = []
    for module in trainer.model.modules():
        if isinstance(module, torch.nn.MaxPool2d):
            module.register_forward_hook(lambda m, args, out: pool_inputs.append(args[0].detach().numpy()))
    for step, (x, y) in enumerate(digits_batches(steps, batch, seed=3)):
        _, logits_t = trainer.step(torch.from_numpy(x[:, None]), torch.from_numpy(y), lr)
        params, opt_state, _, logits_j = train_step(params, opt_state, jnp.asarray(x[..., None]), jnp.asarray(y))
        _compare_step(step, trainer, params, logits_t.numpy(), logits_j, cfg.bits_W)
    # The test's premise: pooling windows with a tied maximum occurred (so tie routing was exercised).
    ties = 0
    for a in pool_inputs:
        n, c, h, w = a.shape
        win = a.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(-1, 4)
        ties += int(((win == win.max(-1, keepdims=True)).sum(-1) > 1).sum())
    assert ties > 0, "no max-pool ties occurred: the test would not exercise tie routing"


def test_lenet5_trajectory_is_bit_identical_for_20_steps():
    """A narrow LeNet-5 (5x5 VALID convs, max-pools, 2 dense layers) on digits upsampled to 28x28.

    The 8x8 digits are enlarged 3x (24x24) and padded by 2 to MNIST's 28x28, so the shapes are the
    paper's (28 -> 24 -> 12 -> 8 -> 4). Convolution sums: fan_in <= 25 * 4 on a 2^-7 * 2^-1/scale grid
    with |W| <= 1/2 and dense fan_in 4*4*8 = 128 stay well inside 24 bits (asserted); the weight-gradient
    sums run over batch * positions products on a 2^-14 grid, exact while the errors stay small, which
    the step-by-step comparison checks.
    """
    cfg = WAGEConfig.nearest()
    widths, hidden, batch, steps, lr = (4, 8), 16, 32, 20, 8.0
    assert 25 * widths[0] * 2**7 * 2 * 16 < 2**24 and 4 * 4 * widths[1] * 2**7 * 2 * 16 < 2**24
    torch.manual_seed(3)
    trainer = WAGETrainer(TorchLeNet5(widths=widths, hidden=hidden, config=cfg), cfg)
    jax_model = JaxLeNet5(widths=widths, hidden=hidden, config=cfg)
    params, opt_state, train_step = _jax_side(jax_model, trainer, (1, 28, 28, 1), lr)
    assert params["dense0"]["kernel"].shape == (4 * 4 * widths[1], hidden)
    for step, (x8, y) in enumerate(digits_batches(steps, batch, seed=4)):
        x = np.pad(np.kron(x8, np.ones((3, 3), np.float32)), ((0, 0), (2, 2), (2, 2)), constant_values=-1.0)
        _, logits_t = trainer.step(torch.from_numpy(x[:, None]), torch.from_numpy(y), lr)
        params, opt_state, _, logits_j = train_step(params, opt_state, jnp.asarray(x[..., None]), jnp.asarray(y))
        _compare_step(step, trainer, params, logits_t.numpy(), logits_j, cfg.bits_W)
    # Not a trajectory of zeros: the logits moved and are not all equal.
    assert np.abs(np.asarray(logits_j)).max() > 0
