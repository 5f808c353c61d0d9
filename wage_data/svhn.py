"""The SVHN cropped-digit reader: ``train_32x32.mat``, ``test_32x32.mat`` and optional ``extra_32x32.mat``.

Each is a MATLAB v5 file (not v7.3) holding ``X``, uint8 ``(32, 32, 3, N)``, and ``y``, ``(N, 1)`` labels 1..10
(10 is the digit 0). As the WAGE authors prepared SVHN (``dataSet/SVHN.py`` in boluoweifenda/WAGE), training
is train plus extra when ``extra_32x32.mat`` is present (604,388 images), and labels are taken modulo 10.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from wage_data.dataset import Dataset
from wage_data.files import DEFLATE_MAX_RATIO, DataError

__all__ = ["SVHN_FILES", "load_svhn", "read_svhn_mat"]

SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
SVHN_EXTRA = "extra_32x32.mat"
SVHN_DIRS = ("", "svhn", "SVHN")
_MI_MATRIX, _MI_COMPRESSED = 14, 15  # the MAT v5 top-level data elements: a variable, or a zlib stream of one
# scipy.io.whosmat's dense numeric classes -> bytes per element, and its class names in this reader's words.
_ITEMSIZE = {"int8": 1, "uint8": 1, "logical": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "single": 4,
             "double": 8, "int64": 8, "uint64": 8}
_CLASS_NAMES = {"double": "float64", "single": "float32", "logical": "bool", "sparse": "a sparse matrix",
                "cell": "a cell array", "struct": "a struct", "object": "an object", "char": "a char array"}


def _check_headers(path: Path) -> None:
    """Refuse, from the variables' headers alone (``scipy.io.whosmat``), an ``X`` or ``y`` that is not SVHN's and
    any variable declaring more bytes than its stored bytes can hold, before ``loadmat`` allocates them."""
    import scipy.io

    variables = scipy.io.whosmat(str(path))  # a compressed variable is inflated only as far as its header
    size, stored = path.stat().st_size, []
    with open(path, "rb") as f:
        order = "<" if f.read(128)[126:128] == b"IM" else ">"
        pos = 128
        while pos + 8 <= size:
            f.seek(pos)
            kind, nbytes = struct.unpack(order + "II", f.read(8))
            if kind not in (_MI_MATRIX, _MI_COMPRESSED) or pos + 8 + nbytes > size:
                raise DataError(f"SVHN: {path}: a data element (type {kind}) of {nbytes} bytes is damaged or runs "
                                f"past the end of the {size}-byte file (truncated)")
            stored.append(nbytes * (DEFLATE_MAX_RATIO if kind == _MI_COMPRESSED else 1) + 1024)
            pos += 8 + nbytes + (0 if kind == _MI_COMPRESSED else -nbytes % 8)
    for (name, shape, cls), limit in zip(variables, stored, strict=False):
        declared = math.prod(shape) * _ITEMSIZE.get(cls, 0)
        if declared > limit:
            raise DataError(f"SVHN: {path}: variable {name} declares {declared} bytes, more than its stored bytes "
                            "can hold (a decompression bomb or a damaged header)")
    found = {name: (cls, shape) for name, shape, cls in reversed(variables)}  # the first of a name, as loadmat
    if "X" not in found or "y" not in found:
        raise DataError(f"SVHN: {path} must hold variables X and y, found {sorted(found)}")
    cls, dims = found["X"]
    if cls != "uint8" or len(dims) != 4 or tuple(dims[:3]) != (32, 32, 3):
        raise DataError(f"SVHN: {path}: X must be uint8 of shape (32, 32, 3, N), got {_CLASS_NAMES.get(cls, cls)} "
                        f"{tuple(dims)}")
    cls = found["y"][0]
    if cls not in _ITEMSIZE:  # scipy would return e.g. a sparse matrix
        raise DataError(f"SVHN: {path}: y must be a dense numeric array, got {_CLASS_NAMES.get(cls, cls)}")


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN ``.mat`` file as ``x`` uint8 ``(N, 32, 32, 3)`` (NHWC) and ``y`` int64 ``(N,)`` in ``0..9``.

    Raises:
        DataError: one line naming the file: missing, not a MATLAB v5 file, lacking ``X``/``y``, ``X`` not uint8
            ``(32, 32, 3, N)``, ``y`` not ``N`` labels in ``1..10``, or a header declaring more than the file holds.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"SVHN: {path} not found (expected the cropped-digit files {', '.join(SVHN_FILES)}; "
                        "wage-data svhn --data-dir DIR (or wage-train --download) fetches them)")
    try:
        _check_headers(path)
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except DataError:
        raise
    except NotImplementedError:
        raise DataError(f"SVHN: {path} is a MATLAB v7.3 (HDF5) file, which scipy.io.loadmat cannot read; "
                        "use the original v5 files from ufldl.stanford.edu/housenumbers") from None
    except Exception as e:  # scipy raises ValueError/TypeError/OSError variants on non-MATLAB bytes
        raise DataError(f"SVHN: {path} is not a readable MATLAB .mat file ({type(e).__name__}: {e})") from None
    x, y = mat["X"], mat["y"]
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
    """SVHN from ``data_dir`` (or its ``svhn/`` or ``SVHN/`` folder): train (+ extra when present and
    ``use_extra``) and test, uint8 NHWC 32x32x3 images, ``max_value`` 255.

    Raises:
        DataError: a file is missing or malformed (:func:`read_svhn_mat`), or a split is empty.
    """
    root = Path(data_dir).expanduser()
    directory = next((root / d for d in SVHN_DIRS if (root / d / SVHN_FILES[0]).is_file()), root)
    (x_train, y_train), (x_test, y_test) = (read_svhn_mat(directory / name) for name in SVHN_FILES)
    for name, x in zip(SVHN_FILES, (x_train, x_test), strict=True):
        if len(x) == 0:
            raise DataError(f"SVHN: {directory / name} holds no images; every split must hold at least one")
    if use_extra and (directory / SVHN_EXTRA).is_file():
        x_extra, y_extra = read_svhn_mat(directory / SVHN_EXTRA)
        x_train, y_train = np.concatenate([x_train, x_extra]), np.concatenate([y_train, y_extra])
    return Dataset("svhn", x_train, y_train, x_test, y_test, max_value=255.0)
