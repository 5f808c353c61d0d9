"""Data files are data: every reader refuses a malformed or malicious file with a
:class:`DataError` naming it, never runs code from it, and reads genuine files byte for byte."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from collections import Counter

import numpy as np
import pytest

from tests.fixtures import write_idx
from wage_data import DataError
from wage_data.files import safe_unpickle
from wage_data.readers import read_cifar_batch, read_idx
from wage_train.reporting import write_csv, write_json
from wage_train.safe_io import read_json_object, verify_manifest, write_manifest

FUZZ_SEEDS = 300  # per reader and per kind of damage (in-process reads are fast)


def _cifar_batch(n: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_genuine_cifar_batch_with_numpy_arrays_loads_byte_for_byte(tmp_path, protocol):
    batch = _cifar_batch()
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    x, y = read_cifar_batch(path)
    assert x.tobytes() == batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).tobytes()
    assert y.tolist() == batch[b"labels"]
    # The unpickled object equals the original, numpy arrays included.
    back = safe_unpickle(path)
    assert back[b"data"].tobytes() == batch[b"data"].tobytes() and back[b"filenames"] == batch[b"filenames"]


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_malicious_cifar_batch_is_refused_and_never_runs(tmp_path, protocol, capsys):
    marker = tmp_path / "PWNED"
    batch = _cifar_batch()
    batch[b"labels"] = _Payload(marker)
    path = tmp_path / "data_batch_2"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    with pytest.raises(DataError) as e:
        read_cifar_batch(path)
    msg = str(e.value)
    assert str(path) in msg and "refused pickle global" in msg and "system" in msg and "\n" not in msg
    assert not marker.exists()


@pytest.mark.parametrize("global_name", ["builtins eval", "subprocess Popen", "numpy load", "numpy.testing rand"])
def test_any_other_global_is_refused(tmp_path, global_name):
    module, name = global_name.split()
    raw = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)R."
    path = tmp_path / "test_batch"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=f"refused pickle global {module}.{name}"):
        safe_unpickle(path)


def _assert_one_line_naming(e: DataError, path) -> None:
    msg = str(e)
    assert str(path) in msg and "\n" not in msg, msg


def test_random_bytes_and_damaged_cifar_batches_give_only_data_errors(tmp_path):
    genuine = pickle.dumps(_cifar_batch(n=4), protocol=2)
    path = tmp_path / "data_batch_3"
    outcomes: Counter[tuple[str, str]] = Counter()  # (kind of damage, "refused" | "loaded")
    for seed in range(FUZZ_SEEDS):
        rng = np.random.default_rng(seed)
        variants = {
            "cifar random bytes": rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes(),
            "cifar truncated": genuine[: int(rng.integers(0, len(genuine)))],
        }
        flipped = bytearray(genuine)
        for i in rng.integers(0, len(flipped), int(rng.integers(1, 4))):
            flipped[i] ^= int(rng.integers(1, 256))
        variants["cifar bytes flipped"] = bytes(flipped)
        for kind, raw in variants.items():
            path.write_bytes(raw)
            try:
                x, y = read_cifar_batch(path)
            except DataError as e:
                _assert_one_line_naming(e, path)
                outcomes[kind, "refused"] += 1
            else:  # a flip inside the pixel data leaves a valid batch
                assert x.shape[1:] == (32, 32, 3) and ((y >= 0) & (y < 10)).all()
                outcomes[kind, "loaded"] += 1
    # Random bytes and a cut pickle are never a batch; flipped bytes are refused unless they hit the pixels.
    assert outcomes["cifar random bytes", "refused"] == outcomes["cifar truncated", "refused"] == FUZZ_SEEDS
    assert 0 < outcomes["cifar bytes flipped", "refused"] < FUZZ_SEEDS, outcomes


def _idx_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    buf.write(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())
    return buf.getvalue()


def test_random_bytes_and_damaged_idx_files_give_only_data_errors(tmp_path):
    genuine = _idx_bytes(np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4))
    outcomes: Counter[tuple[str, str]] = Counter()  # (kind of damage, "refused" | "loaded")
    for seed in range(FUZZ_SEEDS):
        rng = np.random.default_rng(seed)
        flipped = bytearray(genuine)
        flipped[int(rng.integers(0, 16))] ^= int(rng.integers(1, 256))  # in the header
        variants = {
            "idx random bytes": rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes(),
            "idx truncated": genuine[: int(rng.integers(0, len(genuine)))],
            "idx header flipped": bytes(flipped),
        }
        for kind, raw in variants.items():
            for gz in (False, True):
                path = tmp_path / ("f.gz" if gz else "f")
                path.write_bytes(gzip.compress(raw) if gz else raw)
                try:
                    read_idx(path)
                except DataError as e:
                    _assert_one_line_naming(e, path)
                    outcomes[kind, "refused"] += 1
                else:
                    outcomes[kind, "loaded"] += 1
    # Every damaged header, cut file or random string is refused, plain and gzipped: none reads as data.
    assert outcomes == {(kind, "refused"): 2 * FUZZ_SEEDS for kind in ("idx random bytes", "idx truncated",
                                                                         "idx header flipped")}, outcomes
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(bad)


def test_idx_faults_say_what_is_wrong(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34\x08\x09" + b"\0" * 40)
    with pytest.raises(DataError, match="bad magic number 12340809"):
        read_idx(path)
    path.write_bytes(_idx_bytes(np.zeros((3, 2, 2), np.uint8))[:-1])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_mnist_labels_outside_the_classes_and_count_mismatch_name_the_file(tmp_path):
    from wage_data import load_mnist
    from wage_data.readers import MNIST_FILES

    imgs, labels = np.zeros((4, 28, 28), np.uint8), np.array([0, 1, 12, 3], np.uint8)
    for name, arr in zip(MNIST_FILES, (imgs, labels, imgs, labels[:4] % 10), strict=True):
        write_idx(tmp_path / name, arr)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: labels outside 0..9 \(e.g. 12"):
        load_mnist(tmp_path)
    write_idx(tmp_path / MNIST_FILES[1], labels[:3] % 10)
    with pytest.raises(DataError, match="3 labels but train-images-idx3-ubyte has 4 images"):
        load_mnist(tmp_path)


def test_cifar_batch_faults_say_what_is_wrong(tmp_path):
    path = tmp_path / "data_batch_1"
    cases = [
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "counts differ"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"uint8 array \(N, 3072\)"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "labels outside 0..9"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [2**70]}, r"outside 0..9 \(e.g. 1180591620717411303424,"),
        ([1, 2], "expected a pickled dict"),
    ]
    for obj, expected in cases:
        path.write_bytes(pickle.dumps(obj, protocol=2))
        with pytest.raises(DataError, match=expected):
            read_cifar_batch(path)


def test_json_readers_and_metrics_writers(tmp_path):
    path = tmp_path / "state.json"
    for raw, expected in ((b'{"epoch": 1', "not valid JSON"), (b"[1]", "expected a JSON object"),
                          (b"\xff\xfe", "not valid JSON")):
        path.write_bytes(raw)
        with pytest.raises(DataError, match=expected):
            read_json_object(path)
    with pytest.raises(DataError, match="cannot read"):
        read_json_object(tmp_path / "missing.json")
    # metrics: non-finite values are written as null (JSON) and empty fields (CSV): always valid.
    rows = [{"epoch": 1, "loss": float("nan"), "test_acc": 0.5}, {"epoch": 2, "loss": float("inf"), "test_acc": 0.1}]
    write_json(tmp_path / "m.json", {"history": rows})
    import json

    assert json.loads((tmp_path / "m.json").read_text())["history"][0]["loss"] is None
    write_csv(tmp_path / "m.csv", rows)
    assert (tmp_path / "m.csv").read_text().splitlines()[1:] == ["1,,0.5", "2,,0.1"]


def test_manifest_catches_any_changed_missing_or_extra_file(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"defg")
    write_manifest(tmp_path)
    verify_manifest(tmp_path)
    (tmp_path / "sub" / "b").write_bytes(b"defh")
    with pytest.raises(DataError, match="sub/b: sha256 differs"):
        verify_manifest(tmp_path)
    (tmp_path / "sub" / "b").unlink()
    with pytest.raises(DataError, match="sub/b: missing"):
        verify_manifest(tmp_path)
