"""Crop-only augmentation: the authors' SVHN preprocessing (``getData.py`` of boluoweifenda/WAGE)."""

from __future__ import annotations

import numpy as np

__all__ = ["augment_crop"]


def augment_crop(x: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Pad ``pad`` zeros on each side of a batch of NHWC images and take a random crop of the original size.

    As ``tf.image.resize_image_with_crop_or_pad(x, 40, 40)`` then ``tf.random_crop(x, [32, 32, 3])`` on
    32x32 images: black padding (0, which :func:`wage_train.data.to_inputs` maps to -1), no flip.

    Args:
        x: ``(N, H, W, C)`` images (any dtype).
        rng: draws the offsets ``(N, 2)`` in ``[0, 2 * pad]``.
        pad: the padding on each side.

    Returns:
        ``(N, H, W, C)`` crops, the dtype of ``x``.
    """
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))
    out = np.empty_like(x)
    for i in range(n):
        dy, dx = offsets[i]
        out[i] = padded[i, dy : dy + h, dx : dx + w]
    return out
