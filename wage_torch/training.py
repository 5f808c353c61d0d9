"""The reference WAGE training loop in torch (docs/contract.md §3), as QPyTorch's WAGE example runs it.

Each step: forward weights ``param.data = QW(w_acc, bits_W, scale)``; sum-of-squares loss against
one-hot targets; backward; then for every layer ``w_acc <- C(w_acc, bits_W) - QG(grad, bits_G, lr)``.
The gradients are quantized walking the layers last to first, as QPyTorch's example does
(``examples/WAGE/utils.py``, ``train_epoch``: ``for name, param in list(model.named_parameters())[::-1]``),
so stochastic ``QG`` consumes torch's random draws in the reference's order and a seeded run reproduces
QPyTorch's example bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn

from wage_spec import WAGEConfig
from wage_torch.wage_qtorch import QG, QW, C

__all__ = ["WAGETrainer", "sse_loss"]


def sse_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The sum-of-squares loss WAGE trains with: ``0.5 * sum((logits - onehot(labels))^2)`` over the batch.

    Args:
        logits: ``(N, K)`` floating point.
        labels: ``(N,)`` int64 in ``[0, K)``.

    Returns:
        a 0-d tensor of ``logits``' dtype.

    References:
        Wu et al., ICLR 2018, Sec. 3.3.3 (the SSE loss); docs/contract.md §3.

    Examples:
        >>> import torch
        >>> sse_loss(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), torch.tensor([0, 1]))
        tensor(0.2500)
    """
    onehot = torch.nn.functional.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    return 0.5 * ((logits - onehot) ** 2).sum()


class WAGETrainer:
    """Holds the weight accumulators of ``model`` and applies the reference WAGE update.

    ``model``'s weights must come from ``wage_init_`` (each carries ``weight_scale``). ``accumulators``
    maps parameter names to float32 tensors (the ``w_acc`` of the reference).

    After the last ``step``, ``model``'s parameters still hold the weights that step's forward used, not the
    updated accumulators: call ``load_quantized_weights()`` before evaluating or saving the model.

    Args:
        model: a torch module whose parameters are all WAGE weights (``wage_torch.models`` builds them): every
            parameter has a ``weight_scale`` set by ``wage_init_``; WAGE has no biases (``bias=False``).
        config: ``bits_W``, ``bits_G``, ``W_mode`` and ``G_mode`` of the update.

    Raises:
        ValueError: a parameter without ``weight_scale`` (never given to ``wage_init_``), or a bias: training it
            with scale 1.0, or a bias as a weight, would not be WAGE (Eq. 5-7 scale each layer's weights).

    References:
        Wu et al., ICLR 2018, Sec. 3.3 (Eq. 5-7 for W, Eq. 11-12 for G); docs/contract.md §3.

    Examples:
        >>> import torch
        >>> from wage_spec import WAGEConfig
        >>> from wage_torch.models import MLP
        >>> cfg = WAGEConfig.nearest()
        >>> trainer = WAGETrainer(MLP(64, hidden=(16,), config=cfg), cfg)
        >>> loss, logits = trainer.step(torch.zeros(4, 8, 8), torch.tensor([0, 1, 2, 3]), lr=8.0)
        >>> logits.shape, loss.shape
        (torch.Size([4, 10]), torch.Size([]))
    """

    def __init__(self, model: nn.Module, config: WAGEConfig) -> None:
        self.model = model
        self.config = config
        self.params = dict(model.named_parameters())
        self.accumulators = {name: p.detach().clone() for name, p in self.params.items()}
        for name, p in self.params.items():
            if name.rsplit(".", 1)[-1] == "bias" or p.dim() < 2:
                raise ValueError(f"WAGETrainer: model parameter {name!r} is a bias (shape {tuple(p.shape)}); WAGE "
                                 "layers have none: build them with bias=False")
            if not hasattr(p, "weight_scale"):
                raise ValueError(f"WAGETrainer: model parameter {name!r} has no weight_scale; draw it with "
                                 "wage_torch.wage_init_(param, bits_W, factor=...) first")
        self.scales = {name: float(p.weight_scale) for name, p in self.params.items()}

    def load_quantized_weights(self) -> None:
        """``param.data = QW(w_acc, bits_W, scale)`` for every layer (WAGE Eq. 5-7): the forward's weights."""
        c = self.config
        for name, p in self.params.items():
            p.data = QW(self.accumulators[name], c.bits_W, self.scales[name], c.W_mode)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One reference step on a batch: quantized forward, SSE backward, then for every layer (last first)
        ``w_acc <- C(w_acc, bits_W) - QG(grad, bits_G, lr)``.

        Args:
            x: the batch, the model's input shape.
            y: ``(N,)`` int64 labels.
            lr: the learning rate, a finite number.

        Returns:
            ``(loss, logits)``, detached: the 0-d SSE loss and the ``(N, K)`` logits of the forward.

        Raises:
            ValueError: a gradient holds NaN or Inf (from ``QG``); a bad ``lr``.
        """
        c = self.config
        self.load_quantized_weights()
        self.model.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = sse_loss(logits, y)
        loss.backward()
        with torch.no_grad():
            # Last layer first: QPyTorch's draw order for stochastic G (the accumulators keep their order).
            for name, p in reversed(list(self.params.items())):
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                self.accumulators[name] = C(self.accumulators[name], c.bits_W) - QG(grad, c.bits_G, lr, c.G_mode)
        return loss.detach(), logits.detach()
