"""MNIST-format idx files from scikit-learn's 8x8 digits, upscaled to 28x28 (offline stand-in for MNIST).

Each 8x8 image (0..16) is resized to 28x28 with bilinear interpolation and scaled to 0..255; the split is
:func:`wage_train.data.load_digits_split`'s. The four files are written as MNIST's (magic 0x803 / 0x801).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from wage_train.data import MNIST_FILES, load_digits_split

__all__ = ["upscale", "write_idx", "write_mnist_format_digits"]


def upscale(images: np.ndarray, size: int = 28) -> np.ndarray:
    """``(N, h, w)`` images -> ``(N, size, size)`` float64 by bilinear interpolation (corner-aligned)."""
    n, h, w = images.shape
    ys, xs = np.linspace(0, h - 1, size), np.linspace(0, w - 1, size)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[None, :, None], (xs - x0)[None, None, :]
    a = images.astype(np.float64)
    top = a[:, y0][:, :, x0] * (1 - fx) + a[:, y0][:, :, x1] * fx
    bottom = a[:, y1][:, :, x0] * (1 - fx) + a[:, y1][:, :, x1] * fx
    return top * (1 - fy) + bottom * fy


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file (magic ``0x000008DD``, big-endian sizes)."""
    array = np.ascontiguousarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    Path(path).write_bytes(header + array.tobytes())


def write_mnist_format_digits(directory: str | Path) -> Path:
    """Write the four MNIST idx files (1437 train / 360 test upscaled digits) into ``directory``; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    d = load_digits_split()
    arrays = []
    for x in (d.x_train, d.x_test):
        arrays.append(np.clip(np.rint(upscale(x[..., 0]) * (255 / 16)), 0, 255).astype(np.uint8))
    for name, arr in zip(MNIST_FILES, (arrays[0], d.y_train, arrays[1], d.y_test), strict=True):
        write_idx(directory / name, arr)
    return directory
