"""WAGE models in torch, built from the documented API (docs/contract.md §3).

A small MLP, the paper's VGG7 and its MNIST LeNet-5.

Weights are drawn by ``wage_init_`` (which records each layer's ``weight_scale``); training with the
reference update loop is ``wage_torch.training.WAGETrainer``. ``quantized=False`` gives the float
baseline: same layers, no quantizers, float-style fan-in init.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wage_spec import FULL_PRECISION, WAGEConfig, fan_in, float_init_limit
from wage_torch.initializer import wage_init_
from wage_torch.wage_qtorch import WAGEQuantizer

__all__ = ["MLP", "VGG7", "LeNet5", "init_weights"]


def init_weights(model: nn.Module, config: WAGEConfig, quantized: bool = True) -> None:
    """WAGE-initialize every Linear/Conv2d weight (or, for the float baseline, ``U(+-sqrt(3 factor/fan_in))``)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if quantized:
                wage_init_(module.weight, config.bits_W, config.factor)
            else:
                limit = float_init_limit(fan_in(module.weight.shape, layout="torch"), config.factor)
                with torch.no_grad():
                    module.weight.uniform_(-limit, limit)


def _quant(config: WAGEConfig, quantized: bool, bits_A: int, bits_E: int) -> nn.Module:
    if not quantized:
        return nn.Identity()
    return WAGEQuantizer(bits_A, bits_E, config.A_mode, config.E_mode)


class MLP(nn.Module):
    """``Q_A(x) -> [Linear, ReLU, Q]*len(hidden) -> Linear -> Q_E``; input ``(N, ...)``, output ``(N, K)``."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (1024,),
        num_classes: int = 10,
        config: WAGEConfig = WAGEConfig(),
        quantized: bool = True,
    ) -> None:
        super().__init__()
        c = config
        layers: list[nn.Module] = [nn.Flatten(), _quant(c, quantized, c.bits_A, FULL_PRECISION)]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h, bias=False), nn.ReLU(), _quant(c, quantized, c.bits_A, c.bits_E)]
            width = h
        layers += [nn.Linear(width, num_classes, bias=False), _quant(c, quantized, FULL_PRECISION, c.bits_E)]
        self.layers = nn.Sequential(*layers)
        init_weights(self, c, quantized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _classifier_head(
    c: WAGEConfig, quantized: bool, in_features: int, hidden: int, num_classes: int
) -> list[nn.Module]:
    """The conv nets' head: flatten, dense ``hidden``, ReLU, Q, dense ``num_classes``, the error-only ``Q_E``."""
    return [
        nn.Flatten(),
        nn.Linear(in_features, hidden, bias=False),
        nn.ReLU(),
        _quant(c, quantized, c.bits_A, c.bits_E),
        nn.Linear(hidden, num_classes, bias=False),
        _quant(c, quantized, FULL_PRECISION, c.bits_E),
    ]


class VGG7(nn.Module):
    """The paper's VGG7 for ``(N, C, 32, 32)`` images (contract §3); ``widths``/``hidden`` shrink it for tests."""

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (128, 256, 512),
        hidden: int = 1024,
        num_classes: int = 10,
        image_size: int = 32,
        config: WAGEConfig = WAGEConfig(),
        quantized: bool = True,
    ) -> None:
        super().__init__()
        c = config
        layers: list[nn.Module] = [_quant(c, quantized, c.bits_A, FULL_PRECISION)]
        channels = in_channels
        for width in widths:
            for pool in (False, True):
                layers.append(nn.Conv2d(channels, width, 3, padding=1, bias=False))
                if pool:
                    layers.append(nn.MaxPool2d(2))
                layers += [nn.ReLU(), _quant(c, quantized, c.bits_A, c.bits_E)]
                channels = width
        side = image_size // 2 ** len(widths)
        layers += _classifier_head(c, quantized, channels * side * side, hidden, num_classes)
        self.layers = nn.Sequential(*layers)
        init_weights(self, c, quantized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LeNet5(nn.Module):
    """The paper's MNIST network, 32C5-MP2-64C5-MP2-512FC-10, for ``(N, C, 28, 28)`` images; output ``(N, K)``.

    5x5 convolutions without padding and without bias (28 -> 24 -> 12 -> 8 -> 4, flattened 4*4*64 = 1024),
    quantizers placed as in :class:`VGG7`. ``widths``/``hidden`` shrink it for tests; ``image_size`` is the
    input side (the flattened width is ``((image_size - 4) // 2 - 4) // 2`` squared times ``widths[-1]``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64),
        hidden: int = 512,
        num_classes: int = 10,
        image_size: int = 28,
        config: WAGEConfig = WAGEConfig(),
        quantized: bool = True,
    ) -> None:
        super().__init__()
        c = config
        layers: list[nn.Module] = [_quant(c, quantized, c.bits_A, FULL_PRECISION)]
        channels, side = in_channels, image_size
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 5, padding=0, bias=False),
                nn.MaxPool2d(2),
                nn.ReLU(),
                _quant(c, quantized, c.bits_A, c.bits_E),
            ]
            channels, side = width, (side - 4) // 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(widths)} 5x5-conv/pool stages")
        layers += _classifier_head(c, quantized, channels * side * side, hidden, num_classes)
        self.layers = nn.Sequential(*layers)
        init_weights(self, c, quantized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
