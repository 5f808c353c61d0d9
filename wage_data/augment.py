"""Random crop (and flip) augmentation of NHWC image batches: the paper's CIFAR-10 and SVHN preprocessing."""

from __future__ import annotations

import numpy as np

__all__ = ["augment_crop", "augment_crop_flip"]


def augment_crop(x: np.ndarray, rng: np.random.Generator, pad: int = 4, *, flip: bool = False,
                 rows: tuple[int, int] | None = None) -> np.ndarray:
    """Random ``(H, W)`` crops of ``x`` ``(N, H, W, C)`` padded with ``pad`` zeros (black, -1 after
    :func:`wage_data.to_inputs`) on each side; with ``flip``, each mirrored horizontally with probability
    1/2. Returns ``(N, H, W, C)`` of ``x``'s dtype.

    ``rng`` draws the offsets ``(N, 2)`` in ``[0, 2 * pad]``, then the flips ``(N,)``. Without flip, the authors'
    SVHN ``resize_image_with_crop_or_pad(x, 40, 40)`` + ``random_crop(x, [32, 32, 3])``; with flip, the paper's
    CIFAR-10 ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``.

    ``rows=(start, n)``: ``x`` is rows ``start`` to ``start + N`` of a batch of ``n`` images, and the draws are the
    whole batch's (a process of a multi-process job keeps its generator in step with a one-process run's).
    """
    n, h, w, _ = x.shape
    start, total = rows or (0, n)
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = rng.integers(0, 2 * pad + 1, size=(total, 2))[start : start + n]
    flips = (rng.random(total) < 0.5 if flip else np.zeros(total, bool))[start : start + n]
    out = np.empty_like(x)
    for i, ((dy, dx), mirror) in enumerate(zip(offsets, flips, strict=True)):  # faster than a gather for N ~ 128
        crop = padded[i, dy : dy + h, dx : dx + w]
        out[i] = crop[:, ::-1] if mirror else crop
    return out


def augment_crop_flip(x: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """``augment_crop(x, rng, pad, flip=True)``: the paper's CIFAR-10 augmentation."""
    return augment_crop(x, rng, pad, flip=True)
