"""QPyTorch's WAGE training flow (its ``examples/WAGE``) on ``wage_torch``, with the one documented change.

QPyTorch's example builds a VGG7 of stock ``nn.Conv2d``/``nn.Linear`` layers without bias, draws each weight
with ``wage_init_(weight, bits_W, name, scale_dict, factor=1.0)``, puts a ``WAGEQuantizer`` after each ReLU, and
trains with its own loop (``utils.train_epoch``): the forward uses ``QW(w_acc)``, the gradients go through
``QG`` (last layer first) and the accumulators become ``C(w_acc) - QG(grad)``. All of it runs here unchanged
except ``QG``: QPyTorch's ``QG(x, bits_G, bits_R, lr, mode)`` is ``QG(x, bits_G, lr, mode)`` (QPyTorch never
reads ``bits_R``; see docs/porting.md). The data are scikit-learn's 8x8 digits (QPyTorch's CIFAR-10 needs a
download); the argument names are QPyTorch's.

    python -m examples.qpytorch_wage              # 20 epochs, about 20 s on 2 CPU cores (test accuracy about 0.95)
    python -m examples.qpytorch_wage --smoke      # 1 epoch of a narrow net: seconds
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

from wage_spec import paper_lr_epochs
from wage_torch import QG, QW, C, WAGEQuantizer, wage_init_
from wage_torch.training import sse_loss


class VGG7LP(nn.Module):
    """QPyTorch's ``VGG7LP`` layout: 2x(C) - MP2 - 2x(2C) - MP2 - 2x(4C) - MP2 - FC(8C) - FC(10), NCHW in."""

    def __init__(self, args: argparse.Namespace, width: int, in_channels: int = 1, image: int = 8) -> None:
        super().__init__()

        def quant() -> WAGEQuantizer:  # after every ReLU (and the pooling that follows it)
            return WAGEQuantizer(args.wl_activate, args.wl_error, args.activate_rounding, args.error_rounding)

        layers: list[nn.Module] = [WAGEQuantizer(args.wl_activate, -1, args.activate_rounding)]  # input: A only
        channels = in_channels
        for block in (width, 2 * width, 4 * width):
            for i in range(2):
                layers += [nn.Conv2d(channels, block, 3, padding=1, bias=False), nn.ReLU()]
                layers += [nn.MaxPool2d(2), quant()] if i == 1 else [quant()]
                channels = block
        flat = channels * (image // 8) ** 2
        layers += [nn.Flatten(), nn.Linear(flat, 8 * width, bias=False), nn.ReLU(), quant()]
        layers += [nn.Linear(8 * width, 10, bias=False), WAGEQuantizer(-1, args.wl_error, "nearest",
                                                                       args.error_rounding)]  # output: E only
        self.features = nn.Sequential(*layers)
        self.weight_scale: dict[str, float] = {}  # QPyTorch's scale_dict, filled by wage_init_
        for name, param in self.named_parameters():
            wage_init_(param, args.wl_weight, name, self.weight_scale, factor=1.0)  # the paper's factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def train_epoch(model: VGG7LP, w_acc: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                args: argparse.Namespace, lr: float) -> float:
    """QPyTorch's ``utils.train_epoch`` with ``wage_quantize=True``; returns the mean SSE loss per image."""
    params = list(model.named_parameters())
    total = 0.0
    for i in torch.randperm(len(x)).split(args.batch_size):
        for name, p in params:  # the forward reads the quantized accumulators (Eq. 5-7)
            p.data = QW(w_acc[name], args.wl_weight, model.weight_scale[name], args.weight_rounding)
        model.zero_grad()
        loss = sse_loss(model(x[i]), y[i])
        loss.backward()
        for _, p in params[::-1]:  # last layer first: QPyTorch's draw order for stochastic G
            # The one change: QPyTorch writes QG(p.grad.data, wl_grad, wl_rand, lr, mode).
            p.grad.data = QG(p.grad.data, args.wl_grad, lr, args.grad_rounding)
        with torch.no_grad():
            for name, p in params:  # Eq. 12: the accumulator moves by the quantized gradient, then clips
                w_acc[name] = C(w_acc[name], args.wl_weight) - p.grad
        total += loss.item()
    return total / len(x)


@torch.no_grad()
def accuracy(model: VGG7LP, w_acc: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             args: argparse.Namespace) -> float:
    for name, p in model.named_parameters():  # evaluate the weights the last step trained: QW(w_acc)
        p.data = QW(w_acc[name], args.wl_weight, model.weight_scale[name], args.weight_rounding)
    return float((model(x).argmax(1) == y).float().mean())


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--width", type=int, default=32, help="first block's channels (QPyTorch's VGG7: 128)")
    for name, bits, mode in (("weight", 2, "nearest"), ("activate", 8, "nearest"), ("grad", 8, "stochastic"),
                             ("error", 8, "stochastic")):
        parser.add_argument(f"--wl-{name}", type=int, default=bits)
        parser.add_argument(f"--{name}-rounding", default=mode, choices=("nearest", "stochastic"))
    parser.add_argument("--smoke", action="store_true", help="1 epoch of a width-8 net on 512 images")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.width, args.batch_size = 1, 8, 32

    torch.manual_seed(args.seed)
    digits = load_digits()
    x = torch.from_numpy(digits.images / 16.0 * 2 - 1).float()[:, None]  # (1797, 1, 8, 8) in [-1, 1]
    y = torch.from_numpy(digits.target).long()
    (x_train, y_train), (x_test, y_test) = (x[:1408], y[:1408]), (x[1408:], y[1408:])
    if args.smoke:
        x_train, y_train = x_train[:512], y_train[:512]

    model = VGG7LP(args, args.width)
    w_acc = {name: p.detach().clone() for name, p in model.named_parameters()}  # the float accumulators
    for epoch in range(args.epochs):
        lr = paper_lr_epochs(epoch * 300 // args.epochs)  # the paper's 8, 1, 1/8 over 300 epochs, scaled to the run
        loss = train_epoch(model, w_acc, x_train, y_train, args, lr)
        print(f"epoch {epoch + 1:3d}  lr {lr:g}  loss {loss:.4f}  "
              f"test accuracy {accuracy(model, w_acc, x_test, y_test, args):.4f}")
    return accuracy(model, w_acc, x_test, y_test, args)


if __name__ == "__main__":
    main()
