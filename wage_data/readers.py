"""The data sets read from their standard on-disk formats into a :class:`~wage_data.Dataset` of raw uint8 NHWC
pixels (CIFAR-10 stays 150 MB instead of 600 MB as float32):

* ``digits``: scikit-learn's 8x8 digits (offline), pixels 0..16, a fixed split of 1437 train / 360 test;
* ``mnist``: the four idx files (``.gz`` or not); ``cifar10``: the python batches of ``cifar-10-batches-py``;
* ``svhn``: the cropped-digit ``.mat`` files (:mod:`wage_data.svhn`).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wage_data.dataset import Dataset
from wage_data.files import DEFLATE_MAX_RATIO, DataError, fault, safe_unpickle
from wage_data.svhn import load_svhn

__all__ = ["DATASETS", "load_cifar10", "load_dataset", "load_digits_split", "load_mnist", "read_cifar_batch",
           "read_idx"]

DATASETS = ("digits", "mnist", "cifar10", "svhn")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
MNIST_DIRS = ("", "mnist", "MNIST/raw")  # the last is torchvision's layout
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_DIRS = (CIFAR10_FOLDER, "")
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}  # idx type codes


def find_files(root: Path, subdirs: Sequence[str], names: Sequence[str], *, gz: bool = False) -> list[Path] | None:
    """The paths of ``names`` (each also as ``<name>.gz`` with ``gz``) in the first ``root/subdir`` holding them
    all, else None."""
    suffixes = ("", ".gz") if gz else ("",)
    for sub in subdirs:
        found = [next((p for s in suffixes if (p := root / sub / f"{n}{s}").is_file()), None) for n in names]
        if all(found):
            return found  # type: ignore[return-value]
    return None


def _missing(kind: str, name: str, root: Path, subdirs: Sequence[str], expected: str) -> DataError:
    where = ", ".join(str(root / d) for d in subdirs)
    return DataError(f"{kind} not found under --data-dir {root} (looked in {where}): expected {expected}; "
                     f"wage-data {name} --data-dir DIR (or wage-train --download) fetches it")


def _check_labels(path: Path, labels: Any) -> None:
    bad = [v for v in map(int, np.asarray(labels, object).reshape(-1)) if not 0 <= v <= 9]
    if bad:  # compared as Python ints: no value is wrapped by a conversion
        raise fault(path, f"labels outside 0..9 (e.g. {bad[0]}, {len(bad)} in all)")


def load_digits_split(n_train: int = 1437, split_seed: int = 0) -> Dataset:
    """scikit-learn's 1797 8x8 digits ``(N, 8, 8, 1)`` uint8 in ``[0, 16]``, split by a fixed permutation (not the
    run's seed): ``n_train`` train, the rest test."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(split_seed).permutation(len(data.images))
    x, y = data.images.astype(np.uint8)[..., None][order], data.target.astype(np.int64)[order]
    return Dataset("digits", x[:n_train], y[:n_train], x[n_train:], y[n_train:], max_value=16.0)


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (plain or ``.gz``: magic ``00 00 TT DD``, DD sizes, data) as an array of its type and shape.

    A ``.gz`` file's declared size is checked against what it can hold
    (:data:`~wage_data.files.DEFLATE_MAX_RATIO`) before anything is allocated, then exactly that many bytes are read
    and no more may follow (a decompression bomb).

    Raises:
        DataError: naming the file: a bad magic number, a truncated header, or a size that disagrees with it.
    """
    path = Path(path)
    gz = path.suffix == ".gz"
    try:
        stored = path.stat().st_size
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in _IDX_DTYPES or not 1 <= magic[3] <= 4:
                raise fault(path, f"not an idx file (bad magic number {magic[:4].hex() or 'empty'})")
            ndim = magic[3]
            sizes = f.read(4 * ndim)
            if len(sizes) < 4 * ndim:
                raise fault(path, "truncated idx header")
            shape = struct.unpack(f">{ndim}I", sizes)
            dtype = np.dtype(_IDX_DTYPES[magic[2]])
            nbytes, header = math.prod(shape) * dtype.itemsize, 4 + 4 * ndim
            if gz and nbytes > DEFLATE_MAX_RATIO * stored + (1 << 16):
                raise fault(path, f"header says {shape} ({nbytes} bytes), more than a {stored}-byte .gz file can "
                                  "hold (a decompression bomb or a damaged header)")
            if not gz and stored - header != nbytes:
                raise fault(path, f"header says {shape} ({nbytes} bytes), file has {stored - header}"
                                  f"{' (truncated)' if stored - header < nbytes else ''}")
            data = f.read(nbytes)
            if len(data) < nbytes:
                raise fault(path, f"header says {shape} ({nbytes} bytes), file has {len(data)} (truncated)")
            if f.read(1):
                raise fault(path, f"header says {shape} ({nbytes} bytes), but the file holds more data "
                                  "(a decompression bomb or a damaged header)")
    except (OSError, EOFError, zlib.error) as e:
        raise fault(path, f"cannot read ({type(e).__name__}: {e})") from None
    return np.frombuffer(data, dtype).astype(dtype.newbyteorder("=")).reshape(shape)


def load_mnist(data_dir: str | Path) -> Dataset:
    """MNIST from its four idx files in ``data_dir`` (or ``data_dir/mnist``, ``data_dir/MNIST/raw``): images
    ``(N, H, W, 1)`` uint8 in ``[0, 255]``, labels int64.

    Raises:
        DataError: the four files are not found in one folder, or one is malformed (naming it).
    """
    root = Path(data_dir)
    found = find_files(root, MNIST_DIRS, MNIST_FILES, gz=True)
    if found is None:
        raise _missing("MNIST", "mnist", root, MNIST_DIRS, ", ".join(f"{stem}[.gz]" for stem in MNIST_FILES))
    x_train, y_train, x_test, y_test = (read_idx(p) for p in found)
    for images, labels, ip, lp in ((x_train, y_train, found[0], found[1]), (x_test, y_test, found[2], found[3])):
        if images.ndim != 3 or images.dtype != np.uint8:
            raise fault(ip, f"expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
        if 0 in images.shape:
            what = "no images" if images.shape[0] == 0 else "a zero image dimension"
            raise fault(ip, f"holds {what} (shape {images.shape}); every split needs images of at least 1x1")
        if labels.ndim != 1:
            raise fault(lp, f"expected labels (N,), got shape {labels.shape}")
        if labels.dtype.kind not in "iu":
            raise fault(lp, f"labels must be an integer type (idx type 0x08, 0x09, 0x0B or 0x0C), got {labels.dtype}")
        if len(images) != len(labels):
            raise fault(lp, f"{len(labels)} labels but {ip.name} has {len(images)} images (counts differ)")
        _check_labels(lp, labels)
    if x_test.shape[1:] != x_train.shape[1:]:
        raise fault(found[2], f"images are {x_test.shape[1]}x{x_test.shape[2]} but {found[0].name} has "
                              f"{x_train.shape[1]}x{x_train.shape[2]}; both splits must have one image size")
    return Dataset("mnist", x_train[..., None], y_train.astype(np.int64), x_test[..., None],
                   y_test.astype(np.int64), max_value=255.0)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch (unpickled by :func:`~wage_data.files.safe_unpickle`: no code runs) as images
    ``(N, 32, 32, 3)`` uint8 and labels ``(N,)`` int64 in ``0..9``.

    Raises:
        DataError: naming the file: not a pickle, a refused global, missing keys, a wrong shape or dtype,
            counts that differ, labels outside ``0..9``.
    """
    path = Path(path)
    batch = safe_unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise fault(path, "not a CIFAR-10 python batch (expected a pickled dict with b'data', b'labels')")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise fault(path, f"b'data' must be a uint8 array (N, 3072), got {what}")
    if isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu":
            raise fault(path, f"b'labels' must hold integers, got {labels.dtype}")
    elif not isinstance(labels, list) or not all(isinstance(v, int | np.integer) for v in labels):
        raise fault(path, "b'labels' must be a list of ints")
    _check_labels(path, labels)
    labels_arr = np.asarray(labels, np.int64).reshape(-1)
    if len(labels_arr) != len(data):
        raise fault(path, f"{len(labels_arr)} labels but {len(data)} images (counts differ)")
    # Each row is the red plane, then green, then blue, each 32x32 row-major: CHW -> HWC.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels_arr


def load_cifar10(data_dir: str | Path) -> Dataset:
    """CIFAR-10 from ``data_dir/cifar-10-batches-py`` (or ``data_dir``): images ``(N, 32, 32, 3)`` uint8,
    labels int64.

    Raises:
        DataError: the six batch files are not found in one folder, one is malformed, or a split is empty.
    """
    root = Path(data_dir)
    found = find_files(root, CIFAR10_DIRS, CIFAR10_FILES)
    if found is None:
        raise _missing("CIFAR-10", "cifar10", root, CIFAR10_DIRS, ", ".join(CIFAR10_FILES) + " (the python version)")
    train = [read_cifar_batch(p) for p in found[:-1]]
    x_test, y_test = read_cifar_batch(found[-1])
    if len(x_test) == 0:
        raise fault(found[-1], "holds no images; the test split must not be empty")
    x_train, y_train = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
    if len(x_train) == 0:
        raise fault(found[-1].parent, "the training batches hold no images; the training split must not be empty")
    return Dataset("cifar10", x_train, y_train, x_test, y_test, max_value=255.0)


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """``"digits"`` (embedded), or ``"mnist"`` / ``"cifar10"`` / ``"svhn"`` read from ``data_dir``."""
    if name == "digits":
        return load_digits_split()
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if data_dir is None:
        raise DataError(f"--dataset {name} needs --data-dir (the directory holding its files)")
    return {"mnist": load_mnist, "cifar10": load_cifar10, "svhn": load_svhn}[name](data_dir)
