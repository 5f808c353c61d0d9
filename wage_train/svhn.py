"""The SVHN cropped-digit reader: ``train_32x32.mat``, ``test_32x32.mat`` and optional ``extra_32x32.mat``.

Each file is a MATLAB (v5, not v7.3) file holding ``X``, ``uint8`` of shape ``(32, 32, 3, N)``, and ``y``,
shape ``(N, 1)``, with labels ``1..10`` where ``10`` means the digit 0. Read with ``scipy.io.loadmat``.

As the WAGE authors prepared SVHN (``dataSet/SVHN.py`` in boluoweifenda/WAGE), the training set is
``train`` plus ``extra`` when ``extra_32x32.mat`` is present (604,388 images), and the labels are taken
modulo 10 (10 -> 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wage_train.dataset import Dataset
from wage_train.safe_io import DataError

__all__ = ["SVHN_FILES", "load_svhn", "read_svhn_mat"]

SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
SVHN_EXTRA = "extra_32x32.mat"


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one SVHN ``.mat`` file.

    Args:
        path: a ``*_32x32.mat`` file (MATLAB v5 format).

    Returns:
        ``(x, y)``: ``x`` ``uint8`` ``(N, 32, 32, 3)`` (NHWC) and ``y`` ``int64`` ``(N,)`` in ``0..9``.

    Raises:
        DataError: one line naming the file, when it is missing, not a MATLAB file, a v7.3 (HDF5) file,
            lacks ``X``/``y``, ``X`` is not ``uint8`` ``(32, 32, 3, N)``, ``y`` does not hold ``N`` labels,
            or a label is outside ``1..10``.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"SVHN: {path} not found (expected the cropped-digit files {', '.join(SVHN_FILES)}; "
                        "--download fetches them)")
    try:
        mat = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise DataError(
            f"SVHN: {path} is a MATLAB v7.3 (HDF5) file, which scipy.io.loadmat cannot read; "
            "use the original v5 files from ufldl.stanford.edu/housenumbers"
        ) from None
    except Exception as e:  # scipy raises ValueError/TypeError/OSError variants on non-MATLAB bytes
        raise DataError(f"SVHN: {path} is not a readable MATLAB .mat file ({type(e).__name__}: {e})") from None
    if "X" not in mat or "y" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"SVHN: {path} must hold variables X and y, found {found}")
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"SVHN: {path}: X must be uint8 of shape (32, 32, 3, N), got {x.dtype} {x.shape}")
    n = x.shape[3]
    if y.size != n or (y.ndim == 2 and 1 not in y.shape) or y.ndim > 2:
        raise DataError(f"SVHN: {path}: y must hold one label per image ({n}), got shape {y.shape}")
    y = y.reshape(-1)
    if not np.issubdtype(y.dtype, np.number):
        raise DataError(f"SVHN: {path}: y must be numeric, got {y.dtype}")
    bad = (y < 1) | (y > 10) | (y != np.round(y))
    if bad.any():
        raise DataError(f"SVHN: {path}: labels must be integers in 1..10 (10 = digit 0), found {y[bad][0]!r}")
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), (y.astype(np.int64) % 10)


def load_svhn(data_dir: str | Path, use_extra: bool = True) -> Dataset:
    """SVHN from ``data_dir`` (or its ``svhn/`` subdirectory): train (+ extra when present) and test.

    Args:
        data_dir: the directory holding ``train_32x32.mat`` and ``test_32x32.mat``.
        use_extra: add ``extra_32x32.mat`` to the training set when it is present (the authors' setup).

    Returns:
        a :class:`~wage_train.data.Dataset` named ``"svhn"``, ``uint8`` NHWC 32x32x3 images, ``max_value`` 255.

    Raises:
        DataError: a file is missing or malformed (see :func:`read_svhn_mat`).
    """
    root = Path(data_dir).expanduser()
    directory = root
    for candidate in (root, root / "svhn", root / "SVHN"):
        if (candidate / SVHN_FILES[0]).is_file():
            directory = candidate
            break
    x_train, y_train = read_svhn_mat(directory / SVHN_FILES[0])
    x_test, y_test = read_svhn_mat(directory / SVHN_FILES[1])
    if use_extra and (directory / SVHN_EXTRA).is_file():
        x_extra, y_extra = read_svhn_mat(directory / SVHN_EXTRA)
        x_train, y_train = np.concatenate([x_train, x_extra]), np.concatenate([y_train, y_extra])
    return Dataset("svhn", x_train, y_train, x_test, y_test, max_value=255.0)
