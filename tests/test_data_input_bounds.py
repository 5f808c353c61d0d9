"""Data files that are empty, mis-shaped, of the wrong label type, or decompression/length bombs:
each is refused in one line naming the file, and a bomb never allocates more than its declared, plausible size.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from wage_data import DataError, load_mnist
from wage_data.files import safe_unpickle
from wage_data.readers import read_cifar_batch, read_idx
from wage_data.svhn import load_svhn, read_svhn_mat
from wage_parity.testing import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, write_fake_mnist, write_idx_file, write_svhn_mat

MB = 1 << 20


def _peak(fn) -> tuple[BaseException | None, int]:
    """Run ``fn``; return what it raised and the peak of Python/NumPy allocations while it ran (bytes)."""
    tracemalloc.start()
    try:
        fn()
        raised = None
    except BaseException as e:  # noqa: BLE001 - returned to the caller
        raised = e
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return raised, peak


def _gz_stream(path, header: bytes, zeros: int) -> None:
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header)
        chunk = bytes(MB)
        for _ in range(zeros // MB):
            f.write(chunk)


def test_gz_idx_bomb_longer_than_its_header_is_refused_after_the_declared_size(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = struct.pack(">IIII", IDX_IMAGES_MAGIC, 10, 28, 28)  # declares 7840 bytes ...
    _gz_stream(path, header, 64 * MB)  # ... holds 64 MiB of zeros
    assert path.stat().st_size < 200_000
    raised, peak = _peak(lambda: read_idx(path))
    assert isinstance(raised, DataError) and "holds more data" in str(raised) and path.name in str(raised)
    assert peak < 4 * MB, peak


def test_gz_idx_header_declaring_more_than_deflate_can_hold_is_refused_before_allocating(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = struct.pack(">IIII", IDX_IMAGES_MAGIC, 8_000_000, 28, 28)  # 6.3 GB declared
    _gz_stream(path, header, 2 * MB)
    raised, peak = _peak(lambda: read_idx(path))
    assert isinstance(raised, DataError) and "decompression bomb" in str(raised), raised
    assert "\n" not in str(raised) and peak < 4 * MB, peak


def test_truncated_gz_idx_says_truncated(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    write_idx_file(path, IDX_IMAGES_MAGIC, np.zeros((5, 28, 28), np.uint8), gz=True)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def _idx(path, type_code: int, array: np.ndarray) -> None:
    dtype = {0x08: ">u1", 0x0D: ">f4", 0x0E: ">f8", 0x0C: ">i4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.asarray(array, dtype).tobytes())


@pytest.mark.parametrize("values", [[np.nan, 1.0], [0.5, 1.0], [1.0, 2.0]])
def test_float_idx_labels_are_refused_even_when_whole(tmp_path, values):
    write_fake_mnist(tmp_path, n_train=2, n_test=2, gz=False)
    _idx(tmp_path / "train-labels-idx1-ubyte", 0x0E, np.asarray(values))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: labels must be an integer type.*float64"):
        load_mnist(tmp_path)


def test_int32_idx_labels_out_of_range_name_the_value(tmp_path):
    write_fake_mnist(tmp_path, n_train=2, n_test=2, gz=False)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", 0x0C, np.asarray([3, -7]))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: labels outside 0..9 \(e.g. -7"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("which,shape,expected", [
    ("t10k", (0, 28, 28), "holds no images"),
    ("train", (0, 28, 28), "holds no images"),
    ("train", (4, 0, 28), "zero image dimension"),
    ("t10k", (4, 20, 20), "both splits must have one image size"),
])
def test_mnist_empty_split_zero_dimension_and_mixed_sizes(tmp_path, which, shape, expected):
    write_fake_mnist(tmp_path, n_train=4, n_test=4, gz=False)
    write_idx_file(tmp_path / f"{which}-images-idx3-ubyte", IDX_IMAGES_MAGIC, np.zeros(shape, np.uint8), gz=False)
    if shape[0] == 0:
        write_idx_file(tmp_path / f"{which}-labels-idx1-ubyte", IDX_LABELS_MAGIC, np.zeros(0, np.uint8), gz=False)
    with pytest.raises(DataError) as e:
        load_mnist(tmp_path)
    assert expected in str(e.value) and "idx3-ubyte" in str(e.value) and "\n" not in str(e.value)


def test_uint64_cifar_labels_are_reported_unwrapped(tmp_path):
    path = tmp_path / "data_batch_1"
    labels = np.asarray([1, 2**64 - 1], np.uint64)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}, protocol=2))
    with pytest.raises(DataError, match=r"outside 0..9 \(e.g. 18446744073709551615, 1 in all\)"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": np.ones(2)}, protocol=2))
    with pytest.raises(DataError, match="must hold integers, got float64"):
        read_cifar_batch(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_empty_cifar_batch_pickle_is_data_at_every_protocol(tmp_path, protocol):
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, protocol=protocol))
    x, y = read_cifar_batch(path)
    assert x.shape == (0, 32, 32, 3) and y.shape == (0,)


def test_bytes_with_an_argument_is_not_data(tmp_path):
    class Alloc:
        def __reduce__(self):
            return (bytes, (10**12,))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Alloc()}, protocol=2))
    raised, peak = _peak(lambda: safe_unpickle(path))
    assert isinstance(raised, DataError) and "bytes() with arguments" in str(raised) and peak < 4 * MB


@pytest.mark.parametrize("op,fmt,length", [(b"B", "<I", 2**31 - 1), (b"\x8e", "<Q", 2**40), (b"X", "<I", 2**31)])
def test_pickle_length_prefix_bomb_is_refused_without_allocating(tmp_path, op, fmt, length):
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x04" + op + struct.pack(fmt, length) + b"abc.")
    raised, peak = _peak(lambda: safe_unpickle(path))
    assert isinstance(raised, DataError) and "not a pickle or truncated" in str(raised), raised
    assert peak < 4 * MB, peak


def _mat_with_compressed_x(path, dims: tuple[int, ...], payload: bytes) -> None:
    """A v5 .mat file by hand: one miCOMPRESSED variable X (uint8, ``dims``) whose stream holds ``payload``."""
    name = b"X"
    dims_bytes = struct.pack(f"<{len(dims)}i", *dims) + bytes((-4 * len(dims)) % 8)
    body = (struct.pack("<II", 6, 8) + struct.pack("<II", 9, 0)  # array flags: class uint8
            + struct.pack("<II", 5, 4 * len(dims)) + dims_bytes
            + struct.pack("<HH", 1, len(name)) + name.ljust(4, b"\0")  # small data element: the name
            + struct.pack("<II", 2, int(np.prod(dims))))  # miUINT8 data of the declared size
    declared = len(body) + int(np.prod(dims))
    compressed = zlib.compress(struct.pack("<II", 14, declared) + body + payload, 9)
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + bytes(8) + struct.pack("<H", 0x0100) + b"IM"
    path.write_bytes(header + struct.pack("<II", 15, len(compressed)) + compressed)


def test_svhn_mat_declaring_more_than_its_compressed_bytes_can_hold_is_refused_before_loading(tmp_path):
    path = tmp_path / "train_32x32.mat"
    _mat_with_compressed_x(path, (32, 32, 3, 1_000_000), bytes(MB))  # declares 3.1 GB in a ~1 kB file
    import scipy.io  # noqa: F401 - imported before measuring (its module objects are not the reader's)

    raised, peak = _peak(lambda: read_svhn_mat(path))
    assert isinstance(raised, DataError) and "decompression bomb" in str(raised) and path.name in str(raised)
    assert peak < 8 * MB, peak


def test_svhn_sparse_y_and_empty_test_split_name_the_file(tmp_path):
    import scipy.sparse

    write_svhn_mat(tmp_path / "train_32x32.mat", 3)
    write_svhn_mat(tmp_path / "test_32x32.mat", 2, y=scipy.sparse.csc_matrix(np.ones((2, 1))))
    with pytest.raises(DataError, match=r"test_32x32.mat: y must be a dense numeric array, got a sparse matrix"):
        load_svhn(tmp_path)
    write_svhn_mat(tmp_path / "test_32x32.mat", 0)
    with pytest.raises(DataError, match="test_32x32.mat holds no images"):
        load_svhn(tmp_path)
