"""The in-memory data set every reader returns, and what a run does with it: scale to WAGE's inputs, pad, hold out a
validation split, fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from wage_data.files import DataError

__all__ = ["Dataset", "data_fingerprint", "hold_out_validation", "pad_images", "to_inputs"]


@dataclass(frozen=True)
class Dataset:
    """``x_train`` ``(N, H, W, C)`` and ``x_test`` ``(M, H, W, C)``: uint8 pixels in ``[0, max_value]``;
    ``y_train`` ``(N,)`` and ``y_test`` ``(M,)``: int64 labels in ``[0, num_classes)``. ``eval_split`` says what
    ``x_test`` holds: ``"test"``, or ``"validation"`` (:func:`wage_data.hold_out_validation`)."""

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


def to_inputs(x: np.ndarray, max_value: float) -> np.ndarray:
    """Raw pixels ``(N, ...)`` in ``[0, max_value]`` -> float32 ``(x / max_value) * 2 - 1`` in ``[-1, 1]``."""
    return (x.astype(np.float32) / np.float32(max_value)) * np.float32(2.0) - np.float32(1.0)


def pad_images(x: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad (black, -1 after :func:`to_inputs`) NHWC images centrally to ``size x size``."""
    n, h, w, c = x.shape
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((n, size, size, c), x.dtype)
    out[:, top : top + h, left : left + w] = x
    return out


def data_fingerprint(data: Dataset) -> dict[str, Any]:
    """The counts, image shape and sha256 of the training and evaluation arrays (pixels and labels): recorded in
    ``config.json`` and compared on ``--resume``."""
    h = hashlib.sha256()
    for a in (data.x_train, data.y_train.astype("<i8"), data.x_test, data.y_test.astype("<i8")):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).data)
    return {"train": len(data.x_train), "eval": len(data.x_test), "eval_split": data.eval_split,
            "image_shape": list(data.image_shape), "sha256": h.hexdigest()}


def hold_out_validation(data: Dataset, fraction: float, split_seed: int = 0) -> Dataset:
    """The last ``round(fraction * N)`` of a fixed permutation (``split_seed``, not the run's seed) of the
    training set as the evaluation set (``eval_split`` ``"validation"``); the test set is dropped.

    Raises:
        DataError: ``fraction`` not in (0, 1), or it leaves no training or no validation example.
    """
    if not (isinstance(fraction, float | int) and 0.0 < fraction < 1.0):
        raise DataError(f"--validation must be a fraction in (0, 1), got {fraction!r}")
    n = len(data.x_train)
    n_val = round(fraction * n)
    if not 0 < n_val < n:
        raise DataError(f"--validation {fraction:g} of {n} training examples leaves "
                        f"{n - n_val} for training and {n_val} for validation; both must be >= 1")
    order = np.random.default_rng(split_seed).permutation(n)
    train, val = order[: n - n_val], order[n - n_val:]
    return Dataset(data.name, data.x_train[train], data.y_train[train], data.x_train[val], data.y_train[val],
                   max_value=data.max_value, num_classes=data.num_classes, eval_split="validation")
