"""Random crop (and flip) augmentation of NHWC image batches: the paper's CIFAR-10 and SVHN preprocessing."""

from __future__ import annotations

import numpy as np

__all__ = ["augment_crop", "augment_crop_flip"]


def augment_crop(x: np.ndarray, rng: np.random.Generator, pad: int = 4, *, flip: bool = False,
                 rows: tuple[int, int] | None = None) -> np.ndarray:
    """Pad ``pad`` zeros on each side of a batch of NHWC images, take a random crop of the original size and,
    with ``flip``, mirror each crop horizontally with probability 1/2.

    Without flip, the authors' SVHN preprocessing (``getData.py`` of boluoweifenda/WAGE):
    ``tf.image.resize_image_with_crop_or_pad(x, 40, 40)`` then ``tf.random_crop(x, [32, 32, 3])``. With flip,
    the paper's CIFAR-10 augmentation, ``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip()``. The
    padding is black (0, which :func:`wage_train.data.to_inputs` maps to -1).

    Args:
        x: ``(N, H, W, C)`` images (any dtype).
        rng: draws the offsets ``(N, 2)`` in ``[0, 2 * pad]``, then (with ``flip``) the flips ``(N,)``.
        pad: the padding on each side.
        flip: also flip at random.
        rows: ``(start, n)``: ``x`` is rows ``start`` to ``start + N`` of a batch of ``n`` images, which the draws
            are for (a process of a multi-process job draws the whole batch's, so the generator stays in step).

    Returns:
        ``(N, H, W, C)`` crops, the dtype of ``x``.
    """
    n, h, w, _ = x.shape
    start, total = rows or (0, n)
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = rng.integers(0, 2 * pad + 1, size=(total, 2))[start : start + n]
    flips = (rng.random(total) < 0.5 if flip else np.zeros(total, bool))[start : start + n]
    out = np.empty_like(x)
    for i in range(n):
        dy, dx = offsets[i]
        crop = padded[i, dy : dy + h, dx : dx + w]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


def augment_crop_flip(x: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """``augment_crop(x, rng, pad, flip=True)``: the paper's CIFAR-10 augmentation."""
    return augment_crop(x, rng, pad, flip=True)
