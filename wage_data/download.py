"""Fetch MNIST, CIFAR-10 and SVHN from their published sources into ``--data-dir``, verified: ``wage-data NAME``
and ``wage-train --download``.

Each file is downloaded into the marked folder :data:`PARTIAL`, checked against its published checksum (a
``pooch.create`` registry per data set) and only then renamed to its name: an interrupted or corrupted download
never leaves a file under the real name. The target folder is ``flock``-ed while files are fetched and extracted,
so a second download into it waits and then finds them. CIFAR-10's archive is extracted only after every member
is checked, into a folder renamed when complete. Data already on disk (also torchvision's layout) is used as is.

``WAGE_MNIST_URL``, ``WAGE_CIFAR10_URL`` and ``WAGE_SVHN_URL`` replace a data set's base URL (a mirror, a test's
server); ``WAGE_DOWNLOAD_DEADLINE_S`` and ``WAGE_DOWNLOAD_MIN_RATE`` replace :data:`DEADLINE_S` and
:data:`MIN_RATE`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import os
import re
import signal
import sys
import tarfile
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from wage_data.files import DataError, FolderLock, make_tool_dir, remove_tool_dir
from wage_data.readers import CIFAR10_DIRS, CIFAR10_FILES, CIFAR10_FOLDER, MNIST_DIRS, MNIST_FILES, find_files
from wage_data.svhn import SVHN_DIRS

if TYPE_CHECKING:
    import pooch

__all__ = ["ARCHIVE_LIMITS", "SOURCES", "Source", "ensure_dataset", "extract_tar", "fetch", "main", "registry"]


@dataclass(frozen=True)
class Source:
    """A data set's base URLs (tried in order), its files' published checksums (``"md5:<hex>"``, pooch's
    notation), the environment variable that replaces the URLs, and the files fetched only on request."""

    mirrors: tuple[str, ...]
    files: dict[str, str]
    env_var: str
    optional: tuple[str, ...] = ()


SOURCES: dict[str, Source] = {
    "mnist": Source(
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        files={
            "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
        },
        env_var="WAGE_MNIST_URL",
    ),
    "cifar10": Source(
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        files={"cifar-10-python.tar.gz": "md5:c58f30108f718f92721af3b95e74349a"},
        env_var="WAGE_CIFAR10_URL",
    ),
    "svhn": Source(
        mirrors=("http://ufldl.stanford.edu/housenumbers/",),
        files={
            "train_32x32.mat": "md5:e26dedcc434d2e4c54c9b2d4a06d8373",
            "test_32x32.mat": "md5:eb5a983be6a315427106f1b164d9cef3",
            "extra_32x32.mat": "md5:a93ce644f1a588dc4d68dda5feec44a7",
        },
        env_var="WAGE_SVHN_URL",
        optional=("extra_32x32.mat",),  # 1.3 GB
    ),
}

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
# CIFAR-10's archive holds 8 files, 178 MB in all: these bounds stop a hostile or broken archive early.
ARCHIVE_LIMITS = {"members": 64, "bytes": 512 * 2**20}
TIMEOUT_S = 60.0  # connect and read timeout of each request
# A server that trickles (a byte every few seconds restarts the read timeout every time) is given up in one line:
# an overall deadline and a minimum rate (bytes/s, averaged over RATE_WINDOW_S).
DEADLINE_S = 3 * 3600.0
MIN_RATE = 1024.0
RATE_WINDOW_S = 30.0
PARTIAL = ".wage-data.partial"


def _hash_matches(path: Path, known_hash: str) -> bool:
    import pooch

    alg, digest = known_hash.split(":")
    return bool(pooch.file_hash(str(path), alg=alg) == digest)


def registry(dataset: str, base_url: str, directory: str | Path) -> pooch.Pooch:
    """``dataset``'s files and checksums as a ``pooch.create`` registry served from ``base_url`` into
    ``directory``: its ``fetch`` moves a download to its name only once its checksum matches."""
    import pooch

    return pooch.create(path=Path(directory), base_url=base_url, registry=dict(SOURCES[dataset].files),
                        retry_if_failed=0)


class TooSlowError(DataError):
    """A download missed its deadline or its minimum rate (:data:`DEADLINE_S`, :data:`MIN_RATE`)."""


def _limit(env_var: str, default: float) -> float:
    text = os.environ.get(env_var, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise DataError(f"the environment variable {env_var}={text!r} must be a positive number")
    return value


def _download(url: str, output_file: str, _pooch: object, *, progress: bool = False) -> None:
    """pooch's downloader: stream ``url`` into ``output_file``; :class:`TooSlowError` past the deadline or below
    the minimum rate, checked every second by ``SIGALRM`` on the main thread so that a blocked read is cut."""
    import requests
    from tqdm.auto import tqdm

    deadline, min_rate = _limit("WAGE_DOWNLOAD_DEADLINE_S", DEADLINE_S), _limit("WAGE_DOWNLOAD_MIN_RATE", MIN_RATE)
    start = time.monotonic()
    received = [(start, 0)]  # (time, bytes so far), one entry a second: the rate over the last window

    def check(*_: object) -> None:
        now, total = time.monotonic(), received[-1][1]
        if now - start > deadline:
            raise TooSlowError(f"{url}: not complete after {deadline:g} s (WAGE_DOWNLOAD_DEADLINE_S)")
        past = [(t, n) for t, n in received if now - t >= RATE_WINDOW_S]
        if past and (total - past[-1][1]) / (now - past[-1][0]) < min_rate:
            raise TooSlowError(f"{url}: slower than {min_rate:g} bytes/s over {RATE_WINDOW_S:g} s "
                               "(WAGE_DOWNLOAD_MIN_RATE)")
        received.append((now, total))
        del received[:-int(RATE_WINDOW_S) - 2]

    timer = threading.current_thread() is threading.main_thread()
    if timer:
        old = signal.signal(signal.SIGALRM, check)
        signal.setitimer(signal.ITIMER_REAL, 1.0, 1.0)
    try:
        with requests.get(url, stream=True, timeout=TIMEOUT_S) as response, open(output_file, "wb") as out:
            response.raise_for_status()
            size = int(response.headers.get("content-length", 0)) or None
            with tqdm(total=size, unit="B", unit_scale=True, disable=not progress, leave=False) as bar:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
                    received[-1] = (received[-1][0], received[-1][1] + len(chunk))
                    if not timer:
                        check()
    finally:
        if timer:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def _reason(error: BaseException) -> str:
    """A request failure in a few words: ``HTTPError 404 Not Found``, ``ConnectionError (ECONNREFUSED)``..."""
    import requests

    if isinstance(error, requests.exceptions.HTTPError) and error.response is not None:
        return f"HTTPError {error.response.status_code} {error.response.reason}"
    cause: BaseException | None = error
    while cause is not None:  # urllib3 nests the socket's OSError a few levels down
        if isinstance(cause, OSError) and cause.errno in errno.errorcode:
            return f"{type(error).__name__} ({errno.errorcode[cause.errno]})"
        cause = cause.__context__ or cause.__cause__ or next((a for a in getattr(cause, "args", ())
                                                             if isinstance(a, BaseException)), None)
    return type(error).__name__


def fetch(dataset: str, name: str, directory: str | Path, *, progress: bool = False) -> Path:
    """Download ``SOURCES[dataset].files[name]`` into ``directory``, verified, from the first base URL that
    serves it; a file already there with the right checksum is kept. Returns its path.

    Raises:
        DataError: one line naming the file: every mirror failed or served the wrong bytes, or it was too slow.
    """
    import pooch
    import requests

    known_hash = SOURCES[dataset].files[name]
    target = Path(directory) / name
    if target.is_file() and _hash_matches(target, known_hash):
        return target
    pooch.get_logger().setLevel("WARNING")  # one line of ours per file instead of pooch's log
    override = os.environ.get(SOURCES[dataset].env_var, "").strip()
    partial = Path(directory) / PARTIAL
    failures = []
    try:
        for base in (override.removesuffix("/") + "/",) if override else SOURCES[dataset].mirrors:
            url = base + name
            print(f"downloading {url} -> {target}", file=sys.stderr, flush=True)
            remove_tool_dir(partial)  # left by a download that was killed
            make_tool_dir(partial)
            downloader = functools.partial(_download, progress=progress)
            try:
                os.replace(registry(dataset, base, partial).fetch(name, downloader=downloader), target)
                return target
            except ValueError as e:  # pooch: the checksum differs (and the temporary file is removed)
                got = re.search(r"but got (\w+)", str(e))
                failures.append(f"{url}: checksum differs: got {got.group(1) if got else '?'}, published {known_hash}")
            except requests.exceptions.RequestException as e:
                failures.append(f"{url}: {_reason(e)}")
    except TooSlowError as e:
        raise DataError(f"{name}: download given up: {e} (nothing was written; rerun to retry)") from None
    except OSError as e:
        raise DataError(f"{target}: cannot be written ({e.strerror or type(e).__name__})") from None
    finally:
        remove_tool_dir(partial)
    raise DataError(f"{name}: download failed: " + "; ".join(failures) + " (nothing was written; rerun to retry)")


def _member_problem(member: tarfile.TarInfo) -> str | None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or "\\" in member.name:
        return "a path outside the target folder"
    if member.issym() or member.islnk():
        return f"a link (to {member.linkname!r})"
    if not (member.isfile() or member.isdir()):
        return "not a regular file or folder"
    return None


def extract_tar(archive: str | Path, target: str | Path, *, expect_folder: str, expect_files: Sequence[str]) -> Path:
    """Extract the ``.tar.gz`` ``archive`` into ``target/expect_folder``, all or nothing; returns that folder.

    Every member is checked before anything is written: a regular file or folder, a relative path without
    ``..``, at most :data:`ARCHIVE_LIMITS` members and bytes. The members go to a marked folder in ``target``,
    renamed only when every one of ``expect_files`` is in it.

    Raises:
        DataError: one line naming the archive: not a readable tar.gz, a refused member, over the limits, or an
            expected file missing.
    """
    archive, target = Path(archive), Path(target)
    final = target / expect_folder
    staging = target / f".{expect_folder}.partial-{os.getpid()}"
    for stale in target.glob(f".{expect_folder}.partial-*"):  # left by a process killed mid-extraction
        remove_tool_dir(stale)
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members, total = [], 0
                for member in tar:  # streams the headers; stops at the first refused member
                    problem = _member_problem(member)
                    if problem:
                        raise DataError(f"{archive}: member {member.name!r} is {problem}; nothing was extracted")
                    members.append(member)
                    total += member.size
                    if len(members) > ARCHIVE_LIMITS["members"] or total > ARCHIVE_LIMITS["bytes"]:
                        raise DataError(f"{archive}: holds more than {ARCHIVE_LIMITS['members']} members or "
                                        f"{ARCHIVE_LIMITS['bytes'] >> 20} MiB; nothing was extracted")
                make_tool_dir(staging)
                guard = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python 3.10.12+, 3.11.4+
                tar.extractall(staging, members=members, **guard)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:  # not gzip/tar, truncated, disk full
            first = (str(e).strip().splitlines() or [""])[0]
            first = first if len(first) <= 300 else first[:297] + "..."
            raise DataError(f"{archive}: cannot be extracted: not a complete tar.gz archive or an unwritable "
                            f"{target} ({type(e).__name__}: {first}); nothing was extracted") from None
        extracted = staging / expect_folder
        missing = [n for n in expect_files if not (extracted / n).is_file()]
        if missing:
            raise DataError(f"{archive}: lacks {expect_folder}/{missing[0]} ({len(missing)} expected files missing)")
        if final.exists():  # an incomplete folder (the data check found it wanting): moved aside, never deleted
            final.rename(final.with_name(f"{expect_folder}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}"))
        extracted.rename(final)
        return final
    finally:
        remove_tool_dir(staging)


def ensure_dataset(dataset: str, data_dir: str | Path, *, download: bool, extra: bool = False,
                   progress: bool = False) -> list[str]:
    """Make ``dataset``'s files readable under ``data_dir``: use what is there, else extract CIFAR-10's archive if
    it is there (verified; also without ``download``), else with ``download`` fetch what is missing. ``extra``:
    also SVHN's ``extra_32x32.mat``. Without ``download`` and without the files nothing happens (the reader then
    says what is missing); ``"digits"`` needs nothing. Returns one line per action.

    Raises:
        DataError: one line naming the file, for any download, checksum or extraction fault.
    """
    if dataset not in SOURCES:
        return []
    root = Path(data_dir).expanduser()
    if not download and not root.is_dir():
        return []
    missing = [p for p in (root, *root.parents) if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{root}: cannot be created ({e.strerror or type(e).__name__})") from None
    lock = FolderLock(root)
    try:
        lock.acquire("--data-dir", wait=lambda: print(f"waiting for another download into {root} to finish",
                                                      file=sys.stderr, flush=True))
        if dataset == "cifar10":
            return _ensure_cifar10(root, download=download, progress=progress)
        if dataset == "mnist":
            present = find_files(root, MNIST_DIRS, MNIST_FILES, gz=True)
            names = [n for n in SOURCES["mnist"].files if not (root / n.removesuffix(".gz")).is_file()]
        else:
            names = [n for n in SOURCES["svhn"].files if extra or n not in SOURCES["svhn"].optional]
            present = find_files(root, SVHN_DIRS, names)
        if present is not None or not download:
            return []
        return [f"fetched {fetch(dataset, name, root, progress=progress)}" for name in names]
    except BaseException:
        for p in missing:  # the folders this call created, if nothing went into them
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
    finally:
        lock.release()


def _ensure_cifar10(root: Path, *, download: bool, progress: bool) -> list[str]:
    if find_files(root, CIFAR10_DIRS, CIFAR10_FILES) is not None:
        return []
    archive, known = root / CIFAR10_ARCHIVE, SOURCES["cifar10"].files[CIFAR10_ARCHIVE]
    done = []
    if download:
        fetch("cifar10", CIFAR10_ARCHIVE, root, progress=progress)
        done.append(f"fetched {archive}")
    elif not archive.is_file():
        return []
    elif not _hash_matches(archive, known):
        raise DataError(f"{archive}: checksum differs from the published {known} (a partial or damaged copy): "
                        "delete it, or rerun with --download to fetch it again")
    final = extract_tar(archive, root, expect_folder=CIFAR10_FOLDER, expect_files=CIFAR10_FILES)
    return [*done, f"extracted {archive} -> {final}"]


class _Stopped(BaseException):
    """SIGINT or SIGTERM, raised where the process is so that every ``finally`` removes what it wrote."""


def _stop(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def main(argv: Sequence[str] | None = None) -> None:
    """``wage-data``: exit 0 with one line per action, 2 with one line on a fault, 128 + the signal number on
    SIGINT or SIGTERM (one line; no temporary file is left)."""
    p = argparse.ArgumentParser(
        prog="wage-data",
        description="Download MNIST, CIFAR-10 or SVHN from their canonical sources into --data-dir, verified "
        "against the published checksums (also extracts a cifar-10-python.tar.gz already there).",
        epilog="Base URLs can be replaced with WAGE_MNIST_URL, WAGE_CIFAR10_URL, WAGE_SVHN_URL.",
    )
    p.add_argument("dataset", choices=(*SOURCES, "all"))
    p.add_argument("--data-dir", required=True, help="the folder to fill (then pass it to wage-train --data-dir)")
    p.add_argument("--svhn-extra", action="store_true",
                   help="SVHN: also extra_32x32.mat (1.3 GB; the paper's training set is train + extra)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    progress = not args.no_progress and sys.stderr.isatty()
    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for name in list(SOURCES) if args.dataset == "all" else [args.dataset]:
            done = ensure_dataset(name, args.data_dir, download=True, extra=args.svhn_extra, progress=progress)
            for line in done or [f"{name}: already in {args.data_dir}"]:
                print(line, flush=True)
    except DataError as e:
        sys.stderr.write(f"wage-data: error: {e}\n")
        raise SystemExit(2) from None
    except (_Stopped, KeyboardInterrupt) as e:
        for s in old:  # a further signal while exiting changes nothing
            signal.signal(s, signal.SIG_IGN)
        signum = e.args[0] if isinstance(e, _Stopped) else signal.SIGINT
        sys.stderr.write(f"wage-data: {signal.Signals(signum).name}: interrupted; no partial file was kept, rerun "
                         "to continue\n")
        raise SystemExit(128 + signum) from None
    finally:
        for s, handler in old.items():
            if signal.getsignal(s) is _stop:
                signal.signal(s, handler)
