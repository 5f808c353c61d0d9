"""The SVHN ``.mat`` reader on tiny files in the real format, written by ``scipy.io.savemat``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from wage_data import DataError, load_dataset
from wage_data.svhn import load_svhn, read_svhn_mat
from wage_parity.testing import write_fake_svhn, write_svhn_mat


def test_reads_real_format_and_maps_10_to_0(tmp_path):
    (xt, yt), (xs, ys), _ = write_fake_svhn(tmp_path)
    ds = load_dataset("svhn", tmp_path)
    assert ds.name == "svhn" and ds.x_train.dtype == np.uint8 and ds.x_train.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(ds.x_train[3], xt[..., 3])  # (32, 32, 3, N) -> NHWC, image by image
    np.testing.assert_array_equal(ds.y_train, yt.ravel() % 10)
    assert ds.y_train[0] == 0 and ds.y_train.dtype == np.int64
    assert ds.y_train.min() >= 0 and ds.y_train.max() <= 9
    np.testing.assert_array_equal(ds.x_test, xs.transpose(3, 0, 1, 2))
    assert ds.max_value == 255.0


def test_extra_is_added_to_training_set_when_present(tmp_path):
    (xt, _), _, (xe, ye) = write_fake_svhn(tmp_path, n_extra=6)
    ds = load_svhn(tmp_path)
    assert len(ds.x_train) == 26
    np.testing.assert_array_equal(ds.x_train[20:], xe.transpose(3, 0, 1, 2))
    np.testing.assert_array_equal(ds.y_train[20:], ye.ravel() % 10)
    assert len(load_svhn(tmp_path, use_extra=False).x_train) == 20


def test_finds_files_in_svhn_subdirectory(tmp_path):
    (tmp_path / "svhn").mkdir()
    write_fake_svhn(tmp_path / "svhn")
    assert len(load_dataset("svhn", tmp_path).x_test) == 8


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    write_svhn_mat(tmp_path / "train_32x32.mat", 4)
    with pytest.raises(DataError) as e:
        load_svhn(tmp_path)
    assert "test_32x32.mat" in _one_line(e) and "not found" in str(e.value)


def test_not_a_mat_file(tmp_path):
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(b"this is not a MATLAB file at all, just text" * 10)
    with pytest.raises(DataError) as e:
        read_svhn_mat(path)
    assert "train_32x32.mat" in _one_line(e) and "not a readable MATLAB" in str(e.value)


def test_matlab_v73_hdf5_file(tmp_path):
    # A v7.3 file is HDF5 with a 512-byte MATLAB text header; scipy detects the version and refuses it.
    path = tmp_path / "train_32x32.mat"
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
    path.write_bytes(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM" + b"\x00" * 384 + b"\x89HDF\r\n\x1a\n")
    with pytest.raises(DataError) as e:
        read_svhn_mat(path)
    assert "train_32x32.mat" in _one_line(e) and "v7.3" in str(e.value)


@pytest.mark.parametrize(
    "x, what",
    [
        (np.zeros((32, 32, 3, 4), np.float64), "float64"),
        (np.zeros((28, 28, 3, 4), np.uint8), "(28, 28, 3, 4)"),
        (np.zeros((32, 32, 4), np.uint8), "(32, 32, 4)"),
    ],
)
def test_wrong_x_shape_or_dtype(tmp_path, x, what):
    path = tmp_path / "test_32x32.mat"
    scipy.io.savemat(str(path), {"X": x, "y": np.ones((4, 1), np.uint8)})
    with pytest.raises(DataError) as e:
        read_svhn_mat(path)
    assert "test_32x32.mat" in _one_line(e) and what in str(e.value)


def test_label_count_mismatch(tmp_path):
    path = tmp_path / "train_32x32.mat"
    scipy.io.savemat(str(path), {"X": np.zeros((32, 32, 3, 5), np.uint8), "y": np.ones((4, 1), np.uint8)})
    with pytest.raises(DataError) as e:
        read_svhn_mat(path)
    assert "train_32x32.mat" in _one_line(e) and "one label per image (5)" in str(e.value)


@pytest.mark.parametrize("bad", [0, 11])
def test_label_outside_1_to_10(tmp_path, bad):
    path = tmp_path / "train_32x32.mat"
    write_svhn_mat(path, 4, labels=[1, 2, bad, 3])
    with pytest.raises(DataError) as e:
        read_svhn_mat(path)
    assert "train_32x32.mat" in _one_line(e) and "1..10" in str(e.value) and str(bad) in str(e.value)


def test_missing_variables(tmp_path):
    path = tmp_path / "train_32x32.mat"
    scipy.io.savemat(str(path), {"images": np.zeros((32, 32, 3, 2), np.uint8)})
    with pytest.raises(DataError) as e:
        read_svhn_mat(path)
    assert "X and y" in _one_line(e)
