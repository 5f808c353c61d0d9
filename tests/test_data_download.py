"""``wage-train --download`` and ``wage-data``: verified, atomic downloads and safe extraction, all offline.

A local HTTP server on 127.0.0.1 (``http.server`` in a thread) serves small archives and files this test makes:
good ones, corrupted, truncated (a Content-Length the body never reaches), a wrong checksum, path-traversal,
symlink and hard-link members, and a server that drops the connection. The published checksums are replaced by
the fake files' own MD5s (computed here with hashlib); the base URLs come from the documented environment
variables, with the patched defaults pointing at a closed port so that an ignored variable fails the test.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from wage_data import DataError, download, load_dataset
from wage_data.download import Source, ensure_dataset, extract_tar
from wage_data.files import TOOL_MARK
from wage_parity.testing import python_env, write_fake_cifar, write_fake_mnist, write_fake_svhn

CLOSED = "http://127.0.0.1:9/"  # the discard port: nothing listens there, connections are refused at once


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        server = self.server
        name = self.path.rsplit("/", 1)[-1]
        server.requests.append(self.path)  # type: ignore[attr-defined]
        kind, body = server.routes.get(name, ("missing", b""))  # type: ignore[attr-defined]
        if kind == "drop":  # close the socket without a reply
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if kind == "missing":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if kind in ("trickle", "slow"):  # trickle: a byte every 0.2 s, never complete; slow: in 20 pieces
            pieces = [body[i:i + 1] for i in range(len(body))] if kind == "trickle" else \
                [body[i::20] and body[len(body) * i // 20:len(body) * (i + 1) // 20] for i in range(20)]
            try:
                for piece in pieces:
                    self.wfile.write(piece)
                    self.wfile.flush()
                    time.sleep(0.2 if kind == "trickle" else 0.05)
            except OSError:  # the client gave up
                pass
            return
        if kind == "truncate":  # announce the whole body, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = {}  # type: ignore[attr-defined]
    httpd.requests = []  # type: ignore[attr-defined]
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}/data/"  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def publish(monkeypatch: pytest.MonkeyPatch, server, dataset: str, files: dict[str, bytes],
            served: dict[str, tuple[str, bytes]] | None = None, optional: tuple[str, ...] = ()) -> None:
    """Make ``files`` the published files of ``dataset`` (their MD5s), served by ``server`` (as ``served`` says,
    else as they are), found through the data set's environment variable."""
    env_var = download.SOURCES[dataset].env_var
    monkeypatch.setitem(download.SOURCES, dataset, Source(mirrors=(CLOSED,), env_var=env_var, optional=optional,
                                                          files={n: md5(b) for n, b in files.items()}))
    monkeypatch.setenv(env_var, server.base.rstrip("/"))  # the trailing slash is added by the reader
    server.routes.update({n: ("ok", b) for n, b in files.items()})
    server.routes.update(served or {})


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def cifar_archive(tmp: Path) -> bytes:
    """A ``cifar-10-python.tar.gz`` in the real layout (``cifar-10-batches-py/`` + six batches)."""
    write_fake_cifar(tmp)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    shutil.rmtree(tmp / "cifar-10-batches-py")
    return buffer.getvalue()


def mnist_files(tmp: Path) -> dict[str, bytes]:
    write_fake_mnist(tmp / "src")
    return {p.name: p.read_bytes() for p in sorted((tmp / "src").iterdir())}


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")) if directory.exists() else []


def one_line_error(call, *names: str) -> str:
    with pytest.raises(DataError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for name in names:
        assert name in message, (name, message)
    return message


# ------------------------------------------------------------------------------------------------ good


def test_all_three_data_sets_download_and_read(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    mnist = mnist_files(tmp_path)
    publish(monkeypatch, server, "mnist", mnist)
    archive = cifar_archive(tmp_path / "c")
    publish(monkeypatch, server, "cifar10", {"cifar-10-python.tar.gz": archive})
    (tmp_path / "s").mkdir()
    write_fake_svhn(tmp_path / "s", n_extra=4)
    svhn = {p.name: p.read_bytes() for p in sorted((tmp_path / "s").iterdir())}
    publish(monkeypatch, server, "svhn", svhn, optional=("extra_32x32.mat",))
    data = tmp_path / "data"

    assert len(ensure_dataset("mnist", data, download=True)) == 4
    got = load_dataset("mnist", data)
    assert got.x_train.shape == (40, 28, 28, 1)
    assert ensure_dataset("cifar10", data, download=True)[-1].startswith("extracted")
    assert load_dataset("cifar10", data).x_train.shape == (40, 32, 32, 3)
    ensure_dataset("svhn", data, download=True)
    assert not (data / "extra_32x32.mat").exists()  # extra only on request
    assert load_dataset("svhn", data).x_train.shape[0] == 20
    ensure_dataset("svhn", data, download=True, extra=True)
    assert load_dataset("svhn", data).x_train.shape[0] == 24
    requests = len(server.requests)
    for name in ("mnist", "cifar10", "svhn"):  # a rerun finds everything and fetches nothing
        assert ensure_dataset(name, data, download=True, extra=True) == []
    assert len(server.requests) == requests
    assert not [n for n in listing(data) if "tmp" in n or "partial" in n]


def test_wage_data_command(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    publish(monkeypatch, server, "mnist", mnist_files(tmp_path))
    download.main(["mnist", "--data-dir", str(tmp_path / "d")])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and all(line.startswith("fetched ") for line in out)
    download.main(["mnist", "--data-dir", str(tmp_path / "d")])
    assert capsys.readouterr().out.strip() == f"mnist: already in {tmp_path / 'd'}"


@pytest.mark.slow  # a JAX compile: about 13 s on 2 cores
def test_wage_train_download_option_trains(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    from wage_train.cli import run

    publish(monkeypatch, server, "mnist", mnist_files(tmp_path))
    summary = run(["--dataset", "mnist", "--data-dir", str(tmp_path / "d"), "--download", "--epochs", "1",
                   "--hidden", "16", "--batch-size", "8", "--out-dir", str(tmp_path / "run"), "--no-progress"])
    assert summary and (tmp_path / "run" / "metrics.json").is_file()
    assert len(server.requests) == 4


def test_wage_data_fault_is_one_line_exit_2(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    files = mnist_files(tmp_path)
    publish(monkeypatch, server, "mnist", files, served={"t10k-images-idx3-ubyte.gz": ("missing", b"")})
    with pytest.raises(SystemExit) as caught:
        download.main(["mnist", "--data-dir", str(tmp_path / "d"), "--no-progress"])
    assert caught.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("wage-data: error: t10k-images-idx3-ubyte.gz: download failed:")
    assert "404" in err[-1]


# ------------------------------------------------------------------------------------- download faults


@pytest.mark.parametrize("fault", ["corrupted", "truncated", "drop", "missing"])
def test_download_fault_leaves_nothing(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    archive = cifar_archive(tmp_path / "c")
    bad = bytearray(archive)
    bad[len(bad) // 2] ^= 0xFF
    served = {"corrupted": ("ok", bytes(bad)), "truncated": ("truncate", archive), "drop": ("drop", b""),
              "missing": ("missing", b"")}[fault]
    publish(monkeypatch, server, "cifar10", {"cifar-10-python.tar.gz": archive},
            served={"cifar-10-python.tar.gz": served})
    data = tmp_path / "data"
    message = one_line_error(lambda: ensure_dataset("cifar10", data, download=True), "cifar-10-python.tar.gz",
                             server.base)
    assert {"corrupted": "checksum", "truncated": "", "drop": "Error", "missing": "404"}[fault] in message
    assert CLOSED not in message  # the environment variable replaced the default mirror
    assert not data.exists()  # no temporary file, no archive, not even the folder this call created
    # the next run fetches again and succeeds
    server.routes["cifar-10-python.tar.gz"] = ("ok", archive)
    ensure_dataset("cifar10", data, download=True)
    assert load_dataset("cifar10", data).y_test.shape == (10,)


def test_mirrors_are_tried_in_order(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    files = mnist_files(tmp_path)
    publish(monkeypatch, server, "mnist", files)
    monkeypatch.delenv("WAGE_MNIST_URL")
    monkeypatch.setitem(download.SOURCES, "mnist", Source(mirrors=(CLOSED, server.base), env_var="WAGE_MNIST_URL",
                                                          files={n: md5(b) for n, b in files.items()}))
    ensure_dataset("mnist", tmp_path / "d", download=True)
    assert load_dataset("mnist", tmp_path / "d").x_test.shape == (12, 28, 28, 1)


def test_wrong_local_file_is_refetched(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A partial file under the real name (as another tool might leave) is replaced once the new one verifies."""
    archive = cifar_archive(tmp_path / "c")
    publish(monkeypatch, server, "cifar10", {"cifar-10-python.tar.gz": archive})
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-python.tar.gz").write_bytes(archive[:100])
    one_line_error(lambda: ensure_dataset("cifar10", data, download=False), "cifar-10-python.tar.gz",
                   "checksum differs", "--download")
    assert server.requests == []
    ensure_dataset("cifar10", data, download=True)
    assert (data / "cifar-10-python.tar.gz").read_bytes() == archive
    assert load_dataset("cifar10", data).x_test.shape == (10, 32, 32, 3)


# ------------------------------------------------------------------------------------- data on disk


def test_local_archive_is_extracted_without_network(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = cifar_archive(tmp_path / "c")
    publish(monkeypatch, server, "cifar10", {"cifar-10-python.tar.gz": archive})
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar-10-python.tar.gz").write_bytes(archive)
    from wage_train.cli import run

    with pytest.raises(SystemExit):  # --print-config: resolves, prints, exits; reads nothing
        run(["--dataset", "cifar10", "--data-dir", str(data), "--print-config"])
    assert listing(data) == ["cifar-10-python.tar.gz"]
    done = ensure_dataset("cifar10", data, download=False)
    assert done == [f"extracted {data / 'cifar-10-python.tar.gz'} -> {data / 'cifar-10-batches-py'}"]
    assert load_dataset("cifar10", data).x_train.shape == (40, 32, 32, 3)
    assert server.requests == []


def test_torchvision_roots_are_used_as_they_are(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(monkeypatch, server, "mnist", {})
    publish(monkeypatch, server, "cifar10", {})
    root = tmp_path / "torchvision"
    written = write_fake_mnist(root / "MNIST" / "raw", gz=False)  # torchvision keeps the uncompressed files
    write_fake_cifar(root)
    for name in ("mnist", "cifar10"):
        assert ensure_dataset(name, root, download=True) == []
    assert server.requests == []
    np.testing.assert_array_equal(load_dataset("mnist", root).x_train[..., 0], written[0])


# ------------------------------------------------------------------------------------- extraction


def _member(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize(("member", "problem"), [
    (_member("../escaped"), "a path outside the target folder"),
    (_member("cifar-10-batches-py/../../escaped"), "a path outside the target folder"),
    (_member("/tmp/escaped"), "a path outside the target folder"),
    (_member("cifar-10-batches-py/data_batch_1", kind=tarfile.SYMTYPE, link="/etc/passwd"), "a link"),
    (_member("cifar-10-batches-py/test_batch", kind=tarfile.LNKTYPE, link="../outside"), "a link"),
    (_member("cifar-10-batches-py/fifo", kind=tarfile.FIFOTYPE), "not a regular file or folder"),
])  # fmt: skip
def test_hostile_members_are_refused(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch, member: tuple,
                                     problem: str) -> None:
    """The archive's checksum is right (the check is the extraction's, not the download's): nothing lands."""
    archive = tar_gz([_member("cifar-10-batches-py/readme.html"), member])
    publish(monkeypatch, server, "cifar10", {"cifar-10-python.tar.gz": archive})
    data = tmp_path / "sub" / "data"
    message = one_line_error(lambda: ensure_dataset("cifar10", data, download=True), "cifar-10-python.tar.gz",
                             repr(member[0].name), problem)
    assert "nothing was extracted" in message
    assert listing(tmp_path) == ["sub", "sub/data", "sub/data/cifar-10-python.tar.gz"]


def test_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(download.ARCHIVE_LIMITS, "bytes", 1000)
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz([_member("cifar-10-batches-py/data_batch_1", bytes(600)),
                                _member("cifar-10-batches-py/data_batch_2", bytes(600))]))
    one_line_error(lambda: extract_tar(archive, tmp_path, expect_folder="cifar-10-batches-py", expect_files=[]),
                   str(archive), "more than")
    assert listing(tmp_path) == ["a.tar.gz"]


@pytest.mark.parametrize("payload", ["garbage", "truncated", "incomplete"])
def test_unreadable_or_incomplete_archive(tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch,
                                          payload: str) -> None:
    good = cifar_archive(tmp_path / "c")
    archive = {"garbage": os.urandom(5000), "truncated": good[: len(good) // 2],
               "incomplete": tar_gz([_member("cifar-10-batches-py/data_batch_1")])}[payload]
    publish(monkeypatch, server, "cifar10", {"cifar-10-python.tar.gz": archive})  # its checksum matches
    data = tmp_path / "data"
    message = one_line_error(lambda: ensure_dataset("cifar10", data, download=True), "cifar-10-python.tar.gz")
    assert ("lacks cifar-10-batches-py/data_batch_2" if payload == "incomplete" else "cannot be extracted") in message
    assert listing(data) == ["cifar-10-python.tar.gz"]  # the verified archive stays; no folder, no partial one


# ---------------------------------------------------------------------- deadlines, signals, concurrency


def test_a_failed_download_is_one_short_line_and_leaves_no_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WAGE_MNIST_URL", CLOSED)
    data = tmp_path / "new" / "data"
    message = one_line_error(lambda: ensure_dataset("mnist", data, download=True), "ECONNREFUSED")
    assert len(message) < 300 and "urllib3" not in message and "HTTPConnection" not in message
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("limit", ["deadline", "rate"])
def test_a_trickling_server_is_given_up_in_one_line(tmp_path: Path, server, monkeypatch, limit: str) -> None:
    archive = cifar_archive(tmp_path / "c")
    publish(monkeypatch, server, "cifar10", {"cifar-10-python.tar.gz": archive},
            served={"cifar-10-python.tar.gz": ("trickle", archive)})
    if limit == "deadline":
        monkeypatch.setenv("WAGE_DOWNLOAD_DEADLINE_S", "1.5")
    else:
        monkeypatch.setattr(download, "RATE_WINDOW_S", 1.0)
        monkeypatch.setenv("WAGE_DOWNLOAD_MIN_RATE", "100")
    data = tmp_path / "data"
    t0 = time.monotonic()
    message = one_line_error(lambda: ensure_dataset("cifar10", data, download=True), "cifar-10-python.tar.gz",
                             "WAGE_DOWNLOAD_DEADLINE_S" if limit == "deadline" else "WAGE_DOWNLOAD_MIN_RATE")
    assert time.monotonic() - t0 < 30 and "given up" in message
    assert not data.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_download_at_once_in_one_line_and_leaves_no_temporary(tmp_path: Path, server, sig) -> None:
    server.routes["cifar-10-python.tar.gz"] = ("trickle", bytes(10**6))
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine.txt").write_text("mine")
    p = subprocess.Popen([sys.executable, "-m", "wage_data", "cifar10", "--data-dir", str(data)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=python_env(WAGE_CIFAR10_URL=server.base, PYTHONUNBUFFERED="1"))
    assert p.stderr.readline().startswith("downloading ")
    time.sleep(0.5)
    t0 = time.monotonic()
    p.send_signal(sig)
    p.send_signal(sig)  # a second one while it exits changes nothing
    out, err = p.communicate(timeout=60)
    assert time.monotonic() - t0 < 5
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert p.returncode == 128 + sig and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"wage-data: {sig.name}: interrupted")
    assert listing(data) == ["mine.txt"]


def test_a_temporary_left_by_a_killed_download_is_removed_by_the_next(tmp_path: Path, server, monkeypatch) -> None:
    files = mnist_files(tmp_path)
    publish(monkeypatch, server, "mnist", files)
    data = tmp_path / "data"
    (data / download.PARTIAL).mkdir(parents=True)
    (data / download.PARTIAL / TOOL_MARK).write_bytes(b"")
    (data / download.PARTIAL / "tmpabc123").write_bytes(b"partial")
    ensure_dataset("mnist", data, download=True)
    assert listing(data) == sorted(files)


def test_two_downloads_into_one_folder_do_not_undo_each_other(tmp_path: Path, server, monkeypatch) -> None:
    archive = cifar_archive(tmp_path / "c")
    publish(monkeypatch, server, "cifar10", {"cifar-10-python.tar.gz": archive},
            served={"cifar-10-python.tar.gz": ("slow", archive)})
    data = tmp_path / "data"
    results: list[object] = []

    def one() -> None:
        try:
            results.append(ensure_dataset("cifar10", data, download=True))
        except BaseException as e:  # noqa: BLE001 (reported by the assertion below)
            results.append(e)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(map(len, results)) == [0, 2], results  # one fetched and extracted, the other found it all
    assert "cifar-10-batches-py" in listing(data)
    assert not [n for n in listing(data) if "incomplete" in n or "partial" in n or "tmp" in n]
    assert load_dataset("cifar10", data).y_test.shape == (10,)
