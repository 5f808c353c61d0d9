"""What both framework runners share: the model description and the lr schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from wage_spec import paper_lr, paper_lr_epochs, wage_init_limits
from wage_spec.schedule import PAPER_LR_EPOCHS, paper_lr_starts

__all__ = ["SCHEDULES", "LrSchedule", "ModelSpec", "lr_table"]

SCHEDULES = ("paper", "paper-epochs", "constant")


@dataclass(frozen=True)
class ModelSpec:
    """A model of ``wage_jax.models`` / ``wage_torch.models`` for both frameworks: ``kind`` ``"mlp"``
    (``hidden`` widths), ``"vgg7"`` (3 conv stages of ``widths``, dense ``vgg_hidden``) or ``"lenet5"`` (2 5x5
    conv stages of ``widths``, dense ``vgg_hidden``); ``image_shape`` ``(H, W, C)`` of one image."""

    kind: str
    image_shape: tuple[int, int, int]
    num_classes: int = 10
    hidden: tuple[int, ...] = (256,)
    widths: tuple[int, ...] = (128, 256, 512)
    vgg_hidden: int = 1024

    @property
    def in_features(self) -> int:
        """``H * W * C``, the MLP's fan-in."""
        return math.prod(self.image_shape)

    def describe(self) -> str:
        """The architecture in a few words, e.g. ``MLP 64-256-10``."""
        if self.kind == "mlp":
            return "MLP " + "-".join(str(n) for n in (self.in_features, *self.hidden, self.num_classes))
        name = "LeNet-5" if self.kind == "lenet5" else "VGG7"
        return f"{name} conv {'-'.join(str(w) for w in self.widths)}, dense {self.vgg_hidden}-{self.num_classes}"

    def fan_ins(self) -> list[int]:
        """Fan-in of every weight layer in forward order, from the shapes alone (VGG7: 3x3 SAME convolutions, a
        2x2 pooling per stage; LeNet-5: 5x5 VALID convolutions, each then a 2x2 pooling: 28 -> 24 -> 12 -> 8 -> 4)."""
        h, w, c = self.image_shape
        if self.kind == "mlp":
            return [self.in_features, *self.hidden]
        fans, channels, side = [], c, h
        if self.kind == "vgg7":
            for width in self.widths:
                fans, channels = [*fans, 9 * channels, 9 * width], width
            side = h // 2 ** len(self.widths)
        elif self.kind == "lenet5":
            for width in self.widths:
                fans, channels, side = [*fans, 25 * channels], width, (side - 4) // 2
        else:
            raise ValueError(f"unknown model kind {self.kind!r}")
        return [*fans, channels * side * side, self.vgg_hidden]

    def weight_scales(self, bits_W: int, factor: float) -> list[float]:
        """The WAGE initializer's per-layer scale (Eq. 7) of every weight layer, in forward order."""
        return [wage_init_limits(fan, bits_W, factor)[1] for fan in self.fan_ins()]


def lr_table(base_lr: float, epochs: int, schedule: str) -> list[float]:
    """Per-epoch learning rates: ``base_lr`` (``"constant"``), ``base_lr * paper_lr(e) / 8`` (``"paper"``: with
    ``base_lr = 8`` WAGE's own 8, 1, 1/8 over the first 2/3, the next 1/6 and the last 1/6 of ``epochs``) or
    ``base_lr * paper_lr_epochs(e) / 8`` (``"paper-epochs"``: the authors' switches at epochs 200 and 250)."""
    return list(LrSchedule(base_lr, epochs, schedule))


class LrSchedule(Sequence[float]):
    """:func:`lr_table`, bit for bit, computed on demand: ``--epochs 10**11`` builds no list."""

    def __init__(self, base_lr: float, epochs: int, schedule: str) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.base_lr, self.epochs, self.schedule = float(base_lr), int(epochs), schedule

    def __len__(self) -> int:
        return self.epochs

    def __getitem__(self, epoch: int | slice) -> float | list[float]:  # type: ignore[override]
        if isinstance(epoch, slice):
            return [self[e] for e in range(*epoch.indices(self.epochs))]
        e = int(epoch) + (self.epochs if epoch < 0 else 0)
        if not 0 <= e < self.epochs:
            raise IndexError(f"epoch {epoch} outside 0..{self.epochs - 1}")
        if self.schedule == "constant":
            return self.base_lr
        return self.base_lr * (paper_lr(e, self.epochs) if self.schedule == "paper" else paper_lr_epochs(e)) / 8.0

    def segments(self) -> list[tuple[int, float]]:
        """``[(first epoch, lr), ...]``: the epochs where the lr changes (at most three), in order."""
        starts = {"constant": [0], "paper": [0, *paper_lr_starts(self.epochs)],
                  "paper-epochs": [start for start, _ in PAPER_LR_EPOCHS]}[self.schedule]
        starts = sorted({s for s in starts if 0 <= s < self.epochs} | {0})
        return [(s, self[s]) for s in starts if s == 0 or self[s] != self[s - 1]]

    def describe(self) -> str:
        """The lr actually used, per segment: ``8`` or ``8 (epochs 1-40), 1 (41-50), 0.125 (51-60)``."""
        pieces = self.segments()
        if len(pieces) == 1:
            return f"{pieces[0][1]:g}"
        ends = [s for s, _ in pieces[1:]] + [self.epochs]
        return ", ".join(f"{lr:g} ({'epochs ' if i == 0 else ''}{s + 1}-{end})"
                         for i, ((s, lr), end) in enumerate(zip(pieces, ends, strict=True)))
