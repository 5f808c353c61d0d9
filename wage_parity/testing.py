"""Helpers both test suites share: ``tests/`` and ``parity_tests/`` import this module, never each other.

* bits: :func:`f32_bits`, :func:`assert_bits_equal` (from :mod:`wage_parity.bits`) and
  :func:`assert_trees_bits_equal` for whole parameter trees;
* data: :func:`digits` / :func:`digits_batches` (scikit-learn's 8x8 digits as the trajectory tests train on
  them) and tiny files in the real MNIST / CIFAR-10 / SVHN formats (:func:`write_fake_mnist`,
  :func:`write_fake_cifar`, :func:`write_svhn_mat`, :func:`write_fake_svhn`), written here independently of
  ``wage_train``'s readers;
* processes: :func:`python_env` and :func:`run_python` for the tests that need a fresh interpreter (XLA's
  virtual device count is fixed at a process's first JAX call);
* :func:`f32_tensor`: a float32 torch tensor copied from any array.

scikit-learn and SciPy are imported by the helpers that need them (the ``train`` extra has both).
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from wage_parity.bits import assert_bits_equal, f32_bits

if TYPE_CHECKING:  # torch is imported by f32_tensor alone: the data writers run where it is absent
    import torch

__all__ = [
    "assert_bits_equal",
    "assert_trees_bits_equal",
    "digits",
    "digits_batches",
    "f32_bits",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "f32_tensor",
    "python_env",
    "run_python",
    "write_fake_cifar",
    "write_fake_mnist",
    "write_fake_svhn",
    "write_idx_file",
    "write_svhn_mat",
]

# ---------------------------------------------------------------------------------------------- bits


def assert_trees_bits_equal(actual: object, expected: object, what: str = "") -> None:
    """Assert two pytrees (dicts, lists, tuples of float32 arrays) hold the same leaves bit for bit.

    Raises:
        AssertionError: the trees have different numbers of leaves, or a leaf differs (the message names
            the leaf's index and the differing elements).
    """
    import jax

    a, e = jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)
    assert len(a) == len(e), f"{what}: {len(a)} leaves != expected {len(e)}"
    for i, (u, v) in enumerate(zip(a, e, strict=True)):
        assert_bits_equal(u, v, f"{what} leaf {i}" if what else f"leaf {i}")


def f32_tensor(a: ArrayLike) -> torch.Tensor:
    """A float32 CPU tensor holding a copy of ``a`` (a 0-d input stays 0-d)."""
    import torch

    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))


# ---------------------------------------------------------------------------------------------- digits


@functools.cache
def _digits_float32() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0) * 2.0 - 1.0  # [0, 1] -> [-1, 1] (docs/contract.md §3)
    x.flags.writeable = False
    return x, data.target


def digits(label_dtype: type = np.int64) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits: images ``(1797, 8, 8)`` float32 in ``[-1, 1]``, labels ``(1797,)``.

    The images are loaded once and read-only; the labels are a fresh array of ``label_dtype``.
    """
    x, y = _digits_float32()
    return x, y.astype(label_dtype)


def digits_batches(
    n_batches: int, batch: int, seed: int = 0, label_dtype: type = np.int64
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_batches`` batches ``(x (batch, 8, 8) float32, y (batch,))`` of :func:`digits`.

    Epochs of ``np.random.default_rng(seed)`` permutations, cut into whole batches (a partial last batch
    of an epoch is dropped), as many epochs as it takes.
    """
    x, y = digits(label_dtype)
    rng = np.random.default_rng(seed)
    out: list[tuple[np.ndarray, np.ndarray]] = []
    while len(out) < n_batches:
        order = rng.permutation(len(x))
        for i in range(0, len(x) - batch + 1, batch):
            idx = order[i : i + batch]
            out.append((x[idx], y[idx]))
    return out[:n_batches]


# ------------------------------------------------------------------------------------- dataset files

# The idx magic numbers as the MNIST page documents them: 0x00000803 images, 0x00000801 labels.
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049
_MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")


def write_idx_file(path: Path, magic: int, array: np.ndarray, gz: bool) -> None:
    """An idx file (gzipped if ``gz``): big-endian ``magic``, the sizes, then ``array`` as uint8 bytes."""
    raw = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)


def write_fake_mnist(
    directory: Path, n_train: int = 40, n_test: int = 12, gz: bool = True, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Four idx files in the real format; returns (x_train, y_train, x_test, y_test) as written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = (
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
    )
    for name, arr in zip(_MNIST_NAMES, arrays, strict=True):
        magic = IDX_IMAGES_MAGIC if arr.ndim == 3 else IDX_LABELS_MAGIC
        write_idx_file(directory / (name + (".gz" if gz else "")), magic, arr, gz)
    return arrays


def write_fake_cifar(
    directory: Path, per_batch: int = 8, n_test: int = 10, seed: int = 0
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """``cifar-10-batches-py`` with python pickles of dicts holding b"data" (N, 3072) uint8 and b"labels"."""
    rng = np.random.default_rng(seed)
    folder = directory / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"{i}.png".encode() for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        written[name] = (data, labels)
    return written


def write_svhn_mat(
    path: Path, n: int, seed: int = 0, labels: Sequence[int] | None = None, **overrides: object
) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN-format file: ``X`` uint8 (32, 32, 3, n), ``y`` (n, 1) in 1..10. Returns (X, y) as written."""
    import scipy.io

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (np.asarray(labels) if labels is not None else rng.integers(1, 11, size=n)).astype(np.uint8).reshape(-1, 1)
    data = {"X": x, "y": y, **overrides}
    scipy.io.savemat(str(path), data)
    return x, y


def write_fake_svhn(
    directory: Path, n_train: int = 20, n_test: int = 8, n_extra: int | None = None
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """``train_32x32.mat``, ``test_32x32.mat`` (and ``extra_32x32.mat`` if ``n_extra``); the first train
    label is 10 (SVHN's zero). Returns the ``(X, y)`` pairs as written (None for a missing extra)."""
    labels = [10] + [1 + i % 10 for i in range(n_train - 1)]
    xt, yt = write_svhn_mat(directory / "train_32x32.mat", n_train, seed=0, labels=labels)
    xs, ys = write_svhn_mat(directory / "test_32x32.mat", n_test, seed=1)
    extra = write_svhn_mat(directory / "extra_32x32.mat", n_extra, seed=2) if n_extra else None
    return (xt, yt), (xs, ys), extra


# ------------------------------------------------------------------------------------------ processes


def python_env(
    *, pythonpath: Sequence[str | Path] = (), devices: int | None = None, **variables: str | None
) -> dict[str, str]:
    """This process's environment for a child interpreter.

    Args:
        pythonpath: folders put before the inherited ``PYTHONPATH``.
        devices: if given, XLA's CPU platform shows this many virtual devices
            (``--xla_force_host_platform_device_count``, appended to the inherited ``XLA_FLAGS``).
        **variables: variables to set; None removes one.

    Returns:
        a new dict; ``os.environ`` is left as it is.
    """
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (*map(str, pythonpath), env.get("PYTHONPATH", "")) if p)
    if devices is not None:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={int(devices)}".strip()
    for name, value in variables.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_python(
    args: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = 600,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``sys.executable *args`` and capture its output as text.

    Raises:
        AssertionError: ``check`` and the process failed (the message holds the ends of its stdout and stderr).
        subprocess.TimeoutExpired: it ran longer than ``timeout`` seconds.
    """
    proc = subprocess.run([sys.executable, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert proc.returncode == 0, (f"python {' '.join(map(str, args))} exited {proc.returncode}:\n"
                                      f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
