"""What both framework runners of the training example share: the model description and the lr schedule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

from wage_spec import paper_lr, paper_lr_epochs, wage_init_limits
from wage_spec.schedule import PAPER_LR_EPOCHS, paper_lr_starts

__all__ = ["SCHEDULES", "LrSchedule", "ModelSpec", "lr_table"]

SCHEDULES = ("paper", "paper-epochs", "constant")


@dataclass(frozen=True)
class ModelSpec:
    """A model of ``wage_jax.models`` / ``wage_torch.models``, described once for both frameworks.

    ``kind``: ``"mlp"`` (``hidden`` widths), ``"vgg7"`` (``widths`` of the three conv stages and
    ``vgg_hidden`` for the dense layer) or ``"lenet5"`` (``widths`` of the two 5x5 conv stages, default
    32, 64, and ``vgg_hidden`` for the dense layer, default 512); ``image_shape``: ``(H, W, C)`` of one image.
    """

    kind: str
    image_shape: tuple[int, int, int]
    num_classes: int = 10
    hidden: tuple[int, ...] = (256,)
    widths: tuple[int, ...] = (128, 256, 512)
    vgg_hidden: int = 1024

    @property
    def in_features(self) -> int:
        """Number of input values of one image, ``H * W * C`` (the MLP's fan-in)."""
        h, w, c = self.image_shape
        return h * w * c

    def describe(self) -> str:
        """A short human-readable architecture, e.g. ``MLP 64-256-10``."""
        if self.kind == "mlp":
            return "MLP " + "-".join(str(n) for n in (self.in_features, *self.hidden, self.num_classes))
        name = "LeNet-5" if self.kind == "lenet5" else "VGG7"
        return f"{name} conv {'-'.join(str(w) for w in self.widths)}, dense {self.vgg_hidden}-{self.num_classes}"

    def fan_ins(self) -> list[int]:
        """Fan-in of every weight layer in forward order (conv layers, then dense), from the shapes alone.

        VGG7: 3x3 SAME convolutions, three 2x2 poolings; LeNet-5: 5x5 VALID convolutions, each followed
        by a 2x2 pooling (28 -> 24 -> 12 -> 8 -> 4).
        """
        h, w, c = self.image_shape
        if self.kind == "mlp":
            return [self.in_features, *self.hidden]
        if self.kind == "vgg7":
            fans, channels = [], c
            for width in self.widths:
                fans += [9 * channels, 9 * width]
                channels = width
            side = h // 2 ** len(self.widths)
            return [*fans, channels * side * side, self.vgg_hidden]
        if self.kind == "lenet5":
            fans, channels, side = [], c, h
            for width in self.widths:
                fans.append(25 * channels)
                channels, side = width, (side - 4) // 2
            return [*fans, channels * side * side, self.vgg_hidden]
        raise ValueError(f"unknown model kind {self.kind!r}")

    def weight_scales(self, bits_W: int, factor: float) -> list[float]:
        """The WAGE initializer's per-layer scale (Eq. 7) of every weight layer, in forward order."""
        return [wage_init_limits(fan, bits_W, factor)[1] for fan in self.fan_ins()]


def lr_table(base_lr: float, epochs: int, schedule: str) -> list[float]:
    """Per-epoch learning rates: ``"constant"`` gives ``base_lr``; ``"paper"`` gives ``base_lr * paper_lr(e) / 8``;
    ``"paper-epochs"`` gives ``base_lr * paper_lr_epochs(e) / 8``.

    With ``base_lr = 8`` the paper schedule is WAGE's own (docs/contract.md §3): 8, then 1, then 1/8 for the first
    2/3, the next 1/6 and the last 1/6 of ``epochs``; ``"paper-epochs"`` switches at the authors' absolute
    epochs 200 and 250 whatever ``epochs`` is (the two agree for 300 epochs).
    """
    return list(LrSchedule(base_lr, epochs, schedule))


class LrSchedule(Sequence[float]):
    """The per-epoch learning rates of :func:`lr_table`, computed on demand (no list of ``epochs`` values is
    built, so ``--epochs 10**11`` costs nothing). ``schedule[e]`` equals ``lr_table(...)[e]`` bit for bit.

    Args:
        base_lr: the base learning rate (``--lr``).
        epochs: the number of epochs (the length).
        schedule: one of :data:`SCHEDULES`.
    """

    def __init__(self, base_lr: float, epochs: int, schedule: str) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.base_lr, self.epochs, self.schedule = float(base_lr), int(epochs), schedule

    def __len__(self) -> int:
        return self.epochs

    @overload
    def __getitem__(self, epoch: int) -> float: ...
    @overload
    def __getitem__(self, epoch: slice) -> list[float]: ...

    def __getitem__(self, epoch: int | slice) -> float | list[float]:
        if isinstance(epoch, slice):
            return [self[e] for e in range(*epoch.indices(self.epochs))]
        e = int(epoch) + (self.epochs if epoch < 0 else 0)
        if not 0 <= e < self.epochs:
            raise IndexError(f"epoch {epoch} outside 0..{self.epochs - 1}")
        if self.schedule == "constant":
            return self.base_lr
        if self.schedule == "paper":
            return self.base_lr * paper_lr(e, self.epochs) / 8.0
        return self.base_lr * paper_lr_epochs(e) / 8.0

    def segments(self) -> list[tuple[int, float]]:
        """``[(first epoch, lr), ...]``: the epochs where the lr changes (at most three), in order."""
        if self.schedule == "constant":
            starts = [0]
        elif self.schedule == "paper":
            starts = [0, *paper_lr_starts(self.epochs)]
        else:
            starts = [start for start, _ in PAPER_LR_EPOCHS]
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
