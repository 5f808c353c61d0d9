"""Test and sweep fixtures: MNIST- and CIFAR-format files from scikit-learn's 8x8 digits, upscaled (offline
stand-ins for MNIST and CIFAR-10; ``scripts/float_lr_sweep.py`` trains on them).

Each 8x8 image (0..16) is resized with bilinear interpolation and scaled to 0..255; the split is
:func:`wage_data.load_digits_split`'s. MNIST format: 28x28, the four idx files (magic 0x803 / 0x801).
CIFAR format: 32x32x3 (each image tinted by a fixed random colour, so the three planes differ), the python
batches of ``cifar-10-batches-py``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from wage_data import load_digits_split
from wage_data.readers import CIFAR10_FILES, MNIST_FILES
from wage_parity.testing import write_idx_file

__all__ = ["upscale", "write_cifar_format_digits", "write_idx", "write_mnist_format_digits"]


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
    """Write a uint8 array as an uncompressed idx file (magic ``0x000008DD``: uint8 data, ``DD`` dimensions)."""
    write_idx_file(Path(path), 0x0800 | array.ndim, np.asarray(array), gz=False)


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


def write_cifar_format_digits(directory: str | Path, seed: int = 0) -> Path:
    """Write ``directory/cifar-10-batches-py`` (5 training batches holding the 1437 digits, a test batch of 360)
    from the digits upscaled to 32x32 and tinted: channel ``c`` of image ``i`` is ``upscaled * tint[i, c]`` with
    ``tint`` drawn once from ``U(0.5, 1)`` (``seed``). Returns ``directory`` (what ``--data-dir`` takes)."""
    directory = Path(directory)
    folder = directory / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    d = load_digits_split()
    rng = np.random.default_rng(seed)
    splits = []
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        gray = upscale(x[..., 0], 32) * (255 / 16)  # (N, 32, 32)
        tint = rng.uniform(0.5, 1.0, (len(x), 3))
        chw = gray[:, None] * tint[:, :, None, None]  # (N, 3, 32, 32): CIFAR's rows are R, G, B planes
        splits.append((np.clip(np.rint(chw), 0, 255).astype(np.uint8).reshape(len(x), 3072), y))
    (x_train, y_train), (x_test, y_test) = splits
    parts = np.array_split(np.arange(len(x_train)), len(CIFAR10_FILES) - 1)
    batches = [(x_train[i], y_train[i]) for i in parts] + [(x_test, y_test)]
    for name, (data, labels) in zip(CIFAR10_FILES, batches, strict=True):
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in labels], b"data": data}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return directory
