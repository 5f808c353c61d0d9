"""The data readers (wage_data): digits split, MNIST idx, CIFAR-10 pickles, scaling, padding, augmentation."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
from sklearn.datasets import load_digits

from wage_data import DataError, load_cifar10, load_dataset, load_digits_split, load_mnist, pad_images, to_inputs
from wage_data.augment import augment_crop_flip
from wage_data.readers import read_idx
from wage_parity.testing import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    write_fake_cifar,
    write_fake_mnist,
    write_idx_file,
)

# ------------------------------------------------------------------------------------------ digits


def test_digits_split_is_fixed_disjoint_and_complete():
    a, b = load_digits_split(), load_digits_split()
    assert a.x_train.shape == (1437, 8, 8, 1) and a.x_test.shape == (360, 8, 8, 1)
    assert a.x_train.dtype == np.uint8 and a.y_train.dtype == np.int64
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    # Together the two halves are exactly scikit-learn's 1797 images (as a multiset of image+label rows).
    ref = load_digits()
    ours = np.concatenate([a.x_train, a.x_test]).reshape(1797, 64).astype(np.int64)
    ours = np.concatenate([ours, np.concatenate([a.y_train, a.y_test])[:, None]], 1)
    theirs = np.concatenate([ref.images.reshape(1797, 64).astype(np.int64), ref.target[:, None]], 1)
    assert sorted(map(tuple, ours)) == sorted(map(tuple, theirs))
    assert len(np.unique(a.y_train)) == 10 and len(np.unique(a.y_test)) == 10


def test_to_inputs_maps_pixel_range_to_minus_one_one():
    x = np.array([0, 8, 16], np.uint8)
    np.testing.assert_array_equal(to_inputs(x, 16.0), np.array([-1.0, 0.0, 1.0], np.float32))
    assert to_inputs(np.array([255], np.uint8), 255.0)[0] == 1.0
    assert to_inputs(x, 16.0).dtype == np.float32


# -------------------------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_reads_images_and_labels(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], np.uint8)
    suffix = ".gz" if gz else ""
    write_idx_file(tmp_path / f"img{suffix}", IDX_IMAGES_MAGIC, images, gz)
    write_idx_file(tmp_path / f"lab{suffix}", IDX_LABELS_MAGIC, labels, gz)
    got = read_idx(tmp_path / f"img{suffix}")
    assert got.shape == (2, 3, 4) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(read_idx(tmp_path / f"lab{suffix}"), labels)


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(struct.pack(">I", 0x12345678) + b"\0" * 16)
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    raw = struct.pack(">I", IDX_IMAGES_MAGIC) + struct.pack(">3I", 2, 3, 4) + b"\0" * 5  # 24 bytes promised
    (tmp_path / "short").write_bytes(raw)
    with pytest.raises(DataError, match="header says"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_load_mnist_from_idx_files(tmp_path, layout):
    folder = tmp_path if layout == "flat" else tmp_path / "MNIST" / "raw"
    x_train, y_train, x_test, y_test = write_fake_mnist(folder, gz=layout == "flat")
    data = load_mnist(tmp_path)
    assert data.x_train.shape == (40, 28, 28, 1) and data.x_test.shape == (12, 28, 28, 1)
    np.testing.assert_array_equal(data.x_train[..., 0], x_train)
    np.testing.assert_array_equal(data.y_train, y_train.astype(np.int64))
    np.testing.assert_array_equal(data.x_test[..., 0], x_test)
    np.testing.assert_array_equal(data.y_test, y_test.astype(np.int64))
    assert data.max_value == 255.0


# ----------------------------------------------------------------------------------------- CIFAR-10


def test_load_cifar10_from_python_batches(tmp_path):
    written = write_fake_cifar(tmp_path)
    data = load_cifar10(tmp_path)
    assert data.x_train.shape == (40, 32, 32, 3) and data.x_test.shape == (10, 32, 32, 3)
    # CIFAR's row layout: 1024 red values, then 1024 green, then 1024 blue, each plane row-major.
    train_rows = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    rng = np.random.default_rng(1)
    for _ in range(50):
        n, h, w, c = rng.integers(0, 40), rng.integers(0, 32), rng.integers(0, 32), rng.integers(0, 3)
        assert data.x_train[n, h, w, c] == train_rows[n, c * 1024 + h * 32 + w]
    assert list(data.y_train[:8]) == written["data_batch_1"][1]
    assert list(data.y_test) == written["test_batch"][1]
    assert data.y_train.dtype == np.int64


def test_load_cifar10_rejects_a_wrong_pickle(tmp_path):
    write_fake_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"images": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(DataError, match="b'data', b'labels'"):
        load_cifar10(tmp_path)


def test_missing_data_names_the_expected_files(tmp_path):
    with pytest.raises(DataError) as e:
        load_mnist(tmp_path)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert name in str(e.value)
    with pytest.raises(DataError) as e:
        load_cifar10(tmp_path / "nowhere")
    for name in ("data_batch_1", "data_batch_5", "test_batch"):
        assert name in str(e.value)
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("mnist", None)


# -------------------------------------------------------------------------------------- augmentation


def test_augment_is_a_padded_crop_possibly_flipped():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, (64, 32, 32, 3), dtype=np.uint8)  # no zeros: padding is recognisable
    out = augment_crop_flip(x, np.random.default_rng(5))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    flipped = shifted = 0
    for i in range(len(x)):
        matches = [
            (dy, dx, flip)
            for dy in range(9)
            for dx in range(9)
            for flip in (False, True)
            if np.array_equal(out[i], padded[i, dy : dy + 32, dx : dx + 32][:, ::-1] if flip
                              else padded[i, dy : dy + 32, dx : dx + 32])
        ]
        assert len(matches) == 1, f"image {i}: {matches}"
        dy, dx, flip = matches[0]
        flipped += flip
        shifted += (dy, dx) != (4, 4)
    assert 10 < flipped < 54 and shifted > 50  # both flip outcomes and many offsets occur
    # Deterministic given the generator's state.
    np.testing.assert_array_equal(out, augment_crop_flip(x, np.random.default_rng(5)))


def test_pad_images_centres_with_zeros():
    x = np.full((2, 28, 28, 1), 9, np.uint8)
    out = pad_images(x, 32)
    assert out.shape == (2, 32, 32, 1)
    assert (out[:, 2:30, 2:30] == 9).all() and out.sum() == x.sum()
