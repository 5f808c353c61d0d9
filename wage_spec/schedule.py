"""The paper's learning-rate schedule (docs/contract.md §3): proportional, or at the authors' absolute epochs."""

from __future__ import annotations

# The authors' ``lr_schedule = [0, 8, 200, 1, 250, 1./8, 300, 0]`` (Option.py of boluoweifenda/WAGE, as
# printed in its logs for LeNet-5/MNIST and VGG7/CIFAR-10): lr 8 from epoch 0, 1 from 200, 1/8 from 250, end 300.
PAPER_LR_EPOCHS: tuple[tuple[int, float], ...] = ((0, 8.0), (200, 1.0), (250, 0.125))
PAPER_EPOCHS = 300


def paper_lr_starts(epochs: int) -> tuple[int, int]:
    """The first epochs at lr 1 and at lr 1/8 of :func:`paper_lr`: ``max(1, epochs*2//3)`` and
    ``max(that, epochs*5//6)``.

    The first segment (lr 8) is never empty, so a 1-epoch run trains at lr 8; a segment that gets no whole epoch
    is skipped. For 60, 100 and 300 epochs: (40, 50), (66, 83), (200, 250).
    """
    first = max(1, epochs * 2 // 3)
    return first, max(first, epochs * 5 // 6)


def paper_lr(epoch: int, epochs: int = 300) -> float:
    """lr 8 for the first 2/3 of training, 1 for the next 1/6, 1/8 for the last 1/6 (:func:`paper_lr_starts`).

    With the paper's 300 epochs this is 8 for epochs 0-199, 1 for 200-249, 1/8 for 250-299.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    to_one, to_eighth = paper_lr_starts(epochs)
    if epoch < to_one:
        return 8.0
    if epoch < to_eighth:
        return 1.0
    return 0.125


def paper_lr_epochs(epoch: int) -> float:
    """The authors' schedule at absolute epochs: 8 for epochs 0-199, 1 for 200-249, 1/8 from 250 on.

    Unlike :func:`paper_lr` it does not stretch with the number of epochs: a 1-epoch smoke run uses lr 8.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    lr = PAPER_LR_EPOCHS[0][1]
    for start, value in PAPER_LR_EPOCHS:
        if epoch >= start:
            lr = value
    return lr
