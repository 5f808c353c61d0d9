"""What both framework runners of the training example share: the model description and the lr schedule."""

from __future__ import annotations

from dataclasses import dataclass

from wage_spec import paper_lr

__all__ = ["ModelSpec", "lr_table", "schedule_index"]


@dataclass(frozen=True)
class ModelSpec:
    """A model of ``wage_jax.models`` / ``wage_torch.models``, described once for both frameworks.

    ``kind``: ``"mlp"`` (``hidden`` widths) or ``"vgg7"`` (``widths`` of the three conv stages and
    ``vgg_hidden`` for the dense layer); ``image_shape``: ``(H, W, C)`` of one input image.
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
        return f"VGG7 conv {'-'.join(str(w) for w in self.widths)}, dense {self.vgg_hidden}-{self.num_classes}"


def lr_table(base_lr: float, epochs: int, schedule: str) -> list[float]:
    """Per-epoch learning rates: ``"constant"`` gives ``base_lr``; ``"paper"`` gives ``base_lr * paper_lr(e) / 8``.

    With ``base_lr = 8`` the paper schedule is WAGE's own (SPEC §3): 8, then 1, then 1/8 for the first
    2/3, the next 1/6 and the last 1/6 of ``epochs``.
    """
    if schedule == "constant":
        return [float(base_lr)] * epochs
    if schedule == "paper":
        return [float(base_lr) * paper_lr(e, epochs) / 8.0 for e in range(epochs)]
    raise ValueError(f"schedule must be 'paper' or 'constant', got {schedule!r}")


def schedule_index(step: int, steps_per_epoch: int, n_epochs: int) -> int:
    """The epoch whose lr applies at global step ``step`` (clamped to the last epoch)."""
    return min(step // steps_per_epoch, n_epochs - 1)
