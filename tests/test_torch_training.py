"""wage_torch.training.WAGETrainer consumes torch's random draws in QPyTorch's order (last layer first)."""

from __future__ import annotations

import pytest
import torch

import wage_torch
from wage_spec import WAGEConfig
from wage_torch.models import MLP
from wage_torch.training import WAGETrainer, sse_loss
from wage_torch.wage_qtorch import QG, QW, C


def _qpytorch_step(model, acc, scales, x, y, lr, c: WAGEConfig, last_first: bool = True):
    """QPyTorch's examples/WAGE/utils.py train_epoch, restated: QW forward weights, SSE loss, backward,
    ``for name, param in list(model.named_parameters())[::-1]: param.grad.data = QG(param.grad.data, ...)``,
    then the update ``w_acc <- C(w_acc) - grad`` (SGD with lr 1 on the quantized gradient)."""
    for name, p in model.named_parameters():
        p.data = QW(acc[name], c.bits_W, scales[name], c.W_mode)
    model.zero_grad(set_to_none=True)
    sse_loss(model(x), y).backward()
    params = list(model.named_parameters())
    for _name, param in params[::-1] if last_first else params:
        param.grad.data = QG(param.grad.data, c.bits_G, lr, c.G_mode)
    with torch.no_grad():
        for name, p in params:
            acc[name] = C(acc[name], c.bits_W) - p.grad


def _setup(seed: int):
    torch.manual_seed(seed)
    model = MLP(64, hidden=(32, 16), num_classes=10, config=WAGEConfig())
    x = torch.rand(24, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    y = torch.randint(0, 10, (24,), generator=torch.Generator().manual_seed(seed + 1))
    return model, x, y


@pytest.mark.parametrize("backend", ["qtorch", "torch"])
def test_trainer_reproduces_qpytorch_loop_with_stochastic_G_and_E(backend: str) -> None:
    previous = wage_torch.get_backend()
    wage_torch.set_backend(backend)
    try:
        c = WAGEConfig()  # G and E stochastic
        model, x, y = _setup(0)
        trainer = WAGETrainer(model, c)
        ref_model, _, _ = _setup(0)
        acc = {n: p.detach().clone() for n, p in ref_model.named_parameters()}
        scales = {n: float(getattr(p, "weight_scale", 1.0)) for n, p in ref_model.named_parameters()}
        fwd_model, _, _ = _setup(0)
        fwd_acc = {n: p.detach().clone() for n, p in fwd_model.named_parameters()}
        for step in range(3):
            torch.manual_seed(100 + step)
            trainer.step(x, y, 8.0)
            torch.manual_seed(100 + step)
            _qpytorch_step(ref_model, acc, scales, x, y, 8.0, c)
            torch.manual_seed(100 + step)
            _qpytorch_step(fwd_model, fwd_acc, scales, x, y, 8.0, c, last_first=False)
            for name in acc:
                a, b = trainer.accumulators[name], acc[name]
                assert torch.equal(a.view(torch.int32), b.view(torch.int32)), (step, name)
        # The order matters: walking the layers first to last draws differently (so this test can fail).
        assert any(not torch.equal(fwd_acc[n], acc[n]) for n in acc)
    finally:
        wage_torch.set_backend(previous)


def test_trainer_refuses_a_weight_that_never_got_wage_init_() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 10, bias=False))  # torch's own init: no weight_scale
    with pytest.raises(ValueError, match=r"'0.weight' has no weight_scale; draw it with wage_torch.wage_init_"):
        WAGETrainer(model, WAGEConfig())


def test_trainer_refuses_a_bias() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 10))
    wage_torch.wage_init_(model[0].weight, 2, factor=1.0)
    with pytest.raises(ValueError, match=r"'0.bias' is a bias \(shape \(10,\)\); WAGE layers have none"):
        WAGETrainer(model, WAGEConfig())


def test_trainer_takes_the_scale_wage_init_drew() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 10, bias=False))
    scale = wage_torch.wage_init_(model[0].weight, 2, factor=1.0)
    assert scale == 4.0  # fan-in 64, factor 1: not the 1.0 a missing scale used to get
    assert WAGETrainer(model, WAGEConfig()).scales == {"0.weight": scale}


def test_model_holds_the_trained_weights_only_after_load_quantized_weights() -> None:
    c = WAGEConfig.nearest()
    model, x, y = _setup(0)
    trainer = WAGETrainer(model, c)
    trainer.step(x, y, 8.0)
    w = next(model.parameters())
    name = next(iter(trainer.accumulators))
    expected = QW(trainer.accumulators[name], c.bits_W, trainer.scales[name], c.W_mode)
    assert not torch.equal(w.data, expected)  # the step's forward weights, from before its update
    trainer.load_quantized_weights()
    assert torch.equal(w.data, expected)
