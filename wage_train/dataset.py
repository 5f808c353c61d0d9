"""The in-memory data set every reader returns (its own module so that the SVHN reader needs no import circle)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset"]


@dataclass(frozen=True)
class Dataset:
    """``x_train`` ``(N, H, W, C)`` and ``x_test`` ``(M, H, W, C)``: uint8 pixels in ``[0, max_value]``;
    ``y_train`` ``(N,)`` and ``y_test`` ``(M,)``: int64 labels in ``[0, num_classes)``. ``eval_split`` says what
    ``x_test`` holds: ``"test"``, or ``"validation"`` (:func:`wage_train.data.hold_out_validation`)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    max_value: float
    num_classes: int = 10
    eval_split: str = "test"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]
