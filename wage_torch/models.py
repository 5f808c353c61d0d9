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
    """Initialize every ``nn.Linear``/``nn.Conv2d`` weight of ``model`` in place.

    Args:
        model: a torch module; its Linear and Conv2d weights are drawn in ``model.modules()`` order.
        config: ``bits_W`` and ``factor`` of the initializer.
        quantized: True: ``wage_init_(weight, bits_W, factor)`` (each weight gets its ``weight_scale``);
            False (the float baseline): ``U(-L, L)``, ``L = sqrt(3 * factor / fan_in)``
            (``wage_spec.float_init_limit``).

    Raises:
        TypeError, ValueError: a bad ``bits_W`` or ``factor`` (from ``wage_init_`` / ``float_init_limit``).

    References:
        Wu et al., ICLR 2018, Sec. 3.3.1, Eq. 6-7; docs/contract.md §3.

    Examples:
        >>> from torch import nn
        >>> from wage_spec import WAGEConfig
        >>> net = nn.Sequential(nn.Linear(64, 10, bias=False))
        >>> init_weights(net, WAGEConfig())  # factor 1.0: float_limit = sqrt(3 / 64), scale 2^round(log2 3.46)
        >>> net[0].weight.weight_scale
        4.0
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if quantized:
                wage_init_(module.weight, config.bits_W, config.factor)
            else:
                limit = float_init_limit(fan_in(module.weight.shape, layout="torch"), config.factor)
                with torch.no_grad():
                    module.weight.uniform_(-limit, limit)


def _quant(config: WAGEConfig, quantized: bool, bits_A: int, bits_E: int) -> nn.Module:
    """A ``WAGEQuantizer`` with the config's modes, or ``nn.Identity`` for the float baseline."""
    if not quantized:
        return nn.Identity()
    return WAGEQuantizer(bits_A, bits_E, config.A_mode, config.E_mode)


class MLP(nn.Module):
    """``Q_A(x) -> [Linear, ReLU, Q]*len(hidden) -> Linear -> Q_E``; input ``(N, ...)``, output ``(N, K)``.

    Args:
        in_features: the flattened input's width (64 for 8x8 digits).
        hidden: the hidden layers' widths.
        num_classes: ``K``, the output's width.
        config: bits and modes of every quantizer; ``bits_W`` and ``factor`` of the initializer.
        quantized: False gives the float baseline (no quantizers, ``init_weights(quantized=False)``).

    Raises:
        TypeError, ValueError: a bad ``config.bits_W`` or ``config.factor``.

    References:
        Wu et al., ICLR 2018, Sec. 3 (WAGE's layers); docs/contract.md §3.

    Examples:
        >>> import torch
        >>> net = MLP(64, hidden=(32,))
        >>> net(torch.zeros(5, 8, 8)).shape
        torch.Size([5, 10])
    """

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
    """The paper's VGG7 for ``(N, C, 32, 32)`` images; output ``(N, K)``.

    2x(128C3)-MP2-2x(256C3)-MP2-2x(512C3)-MP2-1024FC-10: 3x3 convolutions with padding 1 and no bias, each
    followed by ReLU and a quantizer (the pool, where there is one, before the ReLU), then the head
    dense, ReLU, Q, dense, ``Q_E``.

    Args:
        in_channels: ``C`` (3 for CIFAR-10 and SVHN).
        widths: the conv pairs' channels (each pair ends with a 2x2 max-pool).
        hidden: the first dense layer's width.
        num_classes: ``K``.
        image_size: the input's side (divisible by ``2^len(widths)``).
        config, quantized: as for :class:`MLP`.

    Raises:
        TypeError, ValueError: a bad ``config.bits_W`` or ``config.factor``.

    References:
        Wu et al., ICLR 2018, Sec. 4 (the CIFAR-10 network); docs/contract.md §3.

    Examples:
        >>> import torch
        >>> net = VGG7(in_channels=1, widths=(4, 8), hidden=16, image_size=8)
        >>> net(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

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

    Args:
        in_channels: ``C`` (1 for MNIST).
        widths, hidden, num_classes, image_size: as for :class:`VGG7`.
        config, quantized: as for :class:`MLP`.

    Raises:
        ValueError: ``image_size`` too small for ``len(widths)`` conv/pool stages; a bad ``config.factor``.
        TypeError: a bad ``config.bits_W`` or ``config.factor``.

    References:
        Wu et al., ICLR 2018, Sec. 4 (the MNIST network); docs/contract.md §3.

    Examples:
        >>> import torch
        >>> net = LeNet5(widths=(4, 8), hidden=16)
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
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
