"""The paper's learning-rate schedule (docs/contract.md §3): proportional, or at the authors' absolute epochs."""

from __future__ import annotations

# The authors' ``lr_schedule = [0, 8, 200, 1, 250, 1./8, 300, 0]`` (Option.py of boluoweifenda/WAGE, as
# printed in its logs for LeNet-5/MNIST and VGG7/CIFAR-10): lr 8 from epoch 0, 1 from 200, 1/8 from 250, end 300.
PAPER_LR_EPOCHS: tuple[tuple[int, float], ...] = ((0, 8.0), (200, 1.0), (250, 0.125))
PAPER_EPOCHS = 300


def paper_lr(epoch: int, epochs: int = 300) -> float:
    """lr 8 for the first 2/3 of training, 1 for the next 1/6, 1/8 for the last 1/6.

    With the paper's 300 epochs this is 8 for epochs 0-199, 1 for 200-249, 1/8 for 250-299.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if epoch < epochs * 2 // 3:
        return 8.0
    if epoch < epochs * 5 // 6:
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
