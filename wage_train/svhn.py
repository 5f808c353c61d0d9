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


# MATLAB v5 (docs: "MAT-File Format", MathWorks): a 128-byte header, then data elements, each a tag (type, byte
# count) and its bytes; a variable is a miMATRIX element (14), or a miCOMPRESSED one (15) holding a zlib stream
# of one. Inside a miMATRIX: array flags (class in the low byte), dimensions (int32), name, data.
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MX_ITEMSIZE = {6: 8, 7: 4, 8: 1, 9: 1, 10: 2, 11: 2, 12: 4, 13: 4, 14: 8, 15: 8}  # numeric classes
_MX_NAMES = {1: "a cell array", 2: "a struct", 3: "an object", 4: "a char array", 5: "a sparse matrix", 6: "float64",
             7: "float32", 8: "int8", 9: "uint8", 10: "int16", 11: "uint16", 12: "int32", 13: "uint32", 14: "int64",
             15: "uint64"}
_MX_UINT8 = 9
DEFLATE_MAX_RATIO = 1032


def _mat_variables(path: Path) -> dict[str, tuple[int, tuple[int, ...], int]]:
    """``{name: (class, dims, declared bytes)}`` of a v5 ``.mat`` file's variables, from their headers alone.

    A compressed variable is decompressed only as far as its header (a few hundred bytes); its declared size
    must fit what its compressed bytes can hold (:data:`DEFLATE_MAX_RATIO`), an uncompressed one's the file.
    Raises :class:`DataError` naming the file otherwise, or for a malformed header.
    """
    import struct
    import zlib

    def bad(what: str) -> DataError:
        return DataError(f"SVHN: {path}: {what}")

    out: dict[str, tuple[int, tuple[int, ...], int]] = {}
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(128)
        if len(head) < 128 or head[126:128] not in (b"IM", b"MI"):
            raise DataError(f"SVHN: {path} is not a readable MATLAB .mat file (no v5 header)")
        e = "<" if head[126:128] == b"IM" else ">"
        pos = 128
        while pos + 8 <= size:
            f.seek(pos)
            kind, nbytes = struct.unpack(e + "II", f.read(8))
            if pos + 8 + nbytes > size:
                raise bad(f"a data element of {nbytes} bytes runs past the end of the {size}-byte file (truncated)")
            if kind == _MI_COMPRESSED:
                inflater = zlib.decompressobj()
                try:
                    inner = inflater.decompress(f.read(min(nbytes, 1 << 16)), 512)
                except zlib.error as err:
                    raise bad(f"damaged compressed variable ({err})") from None
                limit = DEFLATE_MAX_RATIO * nbytes + 1024
            elif kind == _MI_MATRIX:
                inner, limit = head[:0] + struct.pack(e + "II", kind, nbytes) + f.read(min(nbytes, 512)), nbytes + 8
            else:
                raise bad(f"unexpected top-level data element type {kind}")
            pos += 8 + nbytes + ((-nbytes) % 8 if kind == _MI_MATRIX else 0)
            if len(inner) < 40:
                raise bad("truncated variable header")
            kind2, declared = struct.unpack(e + "II", inner[:8])
            if kind2 != _MI_MATRIX:
                raise bad(f"unexpected data element type {kind2} in a variable")
            if declared + 8 > limit:
                raise bad(f"a variable declares {declared} bytes, more than its {nbytes} stored bytes can hold "
                          "(a decompression bomb or a damaged header)")
            flags = struct.unpack(e + "I", inner[16:20])[0]
            cls = flags & 0xFF
            ndims_bytes = struct.unpack(e + "II", inner[24:32])[1]
            dims_end = 32 + ndims_bytes
            if len(inner) < dims_end + 8 or ndims_bytes % 4:
                raise bad("truncated variable header")
            dims = struct.unpack(e + f"{ndims_bytes // 4}i", inner[32:dims_end])
            name_at = dims_end + (-ndims_bytes) % 8
            tag = struct.unpack(e + "I", inner[name_at : name_at + 4])[0]
            if tag >> 16:  # small data element: length in the upper half, name in the next 4 bytes
                name = inner[name_at + 4 : name_at + 4 + (tag >> 16)]
            else:
                length = struct.unpack(e + "I", inner[name_at + 4 : name_at + 8])[0]
                name = inner[name_at + 8 : name_at + 8 + length]
            count = 1
            for d in dims:
                count *= max(d, 0)
            out[name.decode("latin-1")] = (cls, tuple(dims), count * _MX_ITEMSIZE.get(cls, 0))
    return out


def _check_mat_headers(path: Path) -> None:
    """Refuse, before loading, an ``X`` or ``y`` that is not what SVHN holds, so nothing implausible is allocated."""
    found = _mat_variables(path)
    if "X" not in found or "y" not in found:
        raise DataError(f"SVHN: {path} must hold variables X and y, found {sorted(found)}")
    cls, dims, _ = found["X"]
    if cls != _MX_UINT8 or len(dims) != 4 or tuple(dims[:3]) != (32, 32, 3):
        what = _MX_NAMES.get(cls, f"class {cls}")
        raise DataError(f"SVHN: {path}: X must be uint8 of shape (32, 32, 3, N), got {what} {dims}")
    cls, dims, _ = found["y"]
    if cls not in _MX_ITEMSIZE:  # scipy would return e.g. a sparse matrix: refused here, naming the file
        raise DataError(f"SVHN: {path}: y must be a dense numeric array, got {_MX_NAMES.get(cls, f'class {cls}')}")


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
        with open(path, "rb") as f:
            hdf5 = f.read(128)[124:126] == b"\x00\x02"  # v7.3: version 0x0200 (an HDF5 file)
        if not hdf5:
            _check_mat_headers(path)
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except DataError:
        raise
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
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise DataError(f"SVHN: {path}: X and y must be dense arrays, got {type(x).__name__}, {type(y).__name__}")
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
    for name, x in ((SVHN_FILES[0], x_train), (SVHN_FILES[1], x_test)):
        if len(x) == 0:
            raise DataError(f"SVHN: {directory / name} holds no images; every split must hold at least one")
    if use_extra and (directory / SVHN_EXTRA).is_file():
        x_extra, y_extra = read_svhn_mat(directory / SVHN_EXTRA)
        x_train, y_train = np.concatenate([x_train, x_extra]), np.concatenate([y_train, y_extra])
    return Dataset("svhn", x_train, y_train, x_test, y_test, max_value=255.0)
