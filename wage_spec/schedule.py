"""The paper's CIFAR-10 learning-rate schedule (docs/contract.md §3)."""

from __future__ import annotations


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
