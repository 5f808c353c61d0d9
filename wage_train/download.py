"""Fetch MNIST, CIFAR-10 and SVHN from their canonical sources, verified, into ``--data-dir``.

``wage-train --download`` fetches what a run reads; ``wage-data NAME --data-dir DIR`` fetches a data set on its
own. Files and checksums are the ones the data sets publish (and torchvision lists):

* MNIST: the four idx ``.gz`` files (MD5), from LeCun's site or the PyTorch S3 mirror; kept compressed
  (``wage_train.data`` reads ``.gz``);
* CIFAR-10: ``cifar-10-python.tar.gz`` (MD5) from the University of Toronto, extracted to
  ``cifar-10-batches-py/``;
* SVHN: ``train_32x32.mat``, ``test_32x32.mat`` (and with ``extra``, ``extra_32x32.mat``) from Stanford (MD5).

Every download goes to a temporary file in :data:`PARTIAL` (a marked folder in the target folder, removed
when the download ends and by the next run if a killed one left it), is checked against its checksum, and only
then renamed to its name (a ``pooch.create`` registry per data set does the hashing, :func:`_download` the
streaming, with an overall deadline and a minimum rate): an interrupted or corrupted download never leaves a
file under the real name, and a rerun fetches again what is missing or does not match. The target folder is
locked (``flock``) while files are fetched and extracted, so a second download into it waits and then finds
them; a folder the call created is removed again when nothing went into it.

Archives are extracted member by member after checks: regular files and folders only (no links,
devices or FIFOs), every path inside the target, a bound on the members' count and total size; into a
temporary folder renamed when complete. Data already on disk is used as it is: the files themselves, a torchvision root
(``MNIST/raw``, ``cifar-10-batches-py``, the SVHN ``.mat`` files), or ``cifar-10-python.tar.gz`` (verified, then
extracted).

The base URL of each data set can be replaced (a mirror, or a test's local server) with the environment variables
``WAGE_MNIST_URL``, ``WAGE_CIFAR10_URL``, ``WAGE_SVHN_URL``: the file names are appended to it.
``WAGE_DOWNLOAD_DEADLINE_S`` and ``WAGE_DOWNLOAD_MIN_RATE`` replace :data:`DEADLINE_S` and :data:`MIN_RATE`.
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

from wage_train.data import CIFAR10_FILES, MNIST_FILES
from wage_train.run_dir import RunLock
from wage_train.safe_io import DataError, make_tool_dir, remove_tool_dir

if TYPE_CHECKING:
    import pooch

__all__ = [
    "ARCHIVE_LIMITS",
    "SOURCES",
    "Source",
    "ensure_dataset",
    "extract_tar",
    "fetch",
    "main",
    "registry",
]


@dataclass(frozen=True)
class Source:
    """Where a data set's files come from.

    Attributes:
        mirrors: base URLs tried in order (each file name is appended).
        files: file name -> published checksum, ``"md5:<hex>"`` or ``"sha256:<hex>"`` (pooch's notation).
        env_var: the environment variable that replaces ``mirrors`` with one base URL.
        optional: files fetched only on request (SVHN's 1.3 GB ``extra_32x32.mat``).
    """

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
        optional=("extra_32x32.mat",),
    ),
}

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
# CIFAR-10's archive holds 8 files, 178 MB in all: these bounds stop a hostile or broken archive early.
ARCHIVE_LIMITS = {"members": 64, "bytes": 512 * 2**20}
TIMEOUT_S = 60.0  # connect and read timeout of each request
# A download's overall deadline and minimum rate (bytes/s, averaged over RATE_WINDOW_S), replaced with the
# environment variables WAGE_DOWNLOAD_DEADLINE_S and WAGE_DOWNLOAD_MIN_RATE: a server that trickles (a byte
# every few seconds restarts the read timeout every time) is given up in one line.
DEADLINE_S = 3 * 3600.0
MIN_RATE = 1024.0
RATE_WINDOW_S = 30.0
PARTIAL = ".wage-data.partial"  # the folder in --data-dir where downloads are written until verified


def _fault(name: str, what: str) -> DataError:
    return DataError(f"{name}: {what}")


def _base_urls(dataset: str) -> tuple[str, ...]:
    source = SOURCES[dataset]
    override = os.environ.get(source.env_var, "").strip()
    if override:
        return (override if override.endswith("/") else override + "/",)
    return source.mirrors


def _hash_matches(path: Path, known_hash: str) -> bool:
    import pooch

    alg, digest = known_hash.split(":")
    return bool(pooch.file_hash(str(path), alg=alg) == digest)


def registry(dataset: str, base_url: str, directory: str | Path) -> pooch.Pooch:
    """``dataset``'s published files and checksums as a ``pooch.create`` registry served from ``base_url`` into
    ``directory``. Its ``fetch`` keeps a file whose checksum matches, else downloads into a temporary file in
    ``directory``, checks it and only then moves it to its name (a failed or corrupted download leaves nothing)."""
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
    """pooch's downloader (``downloader(url, output_file, pooch)``): stream ``url`` into ``output_file`` with
    :data:`TIMEOUT_S` per read, and :class:`TooSlowError` past the deadline or below the minimum rate. On the
    main thread a one-second interval timer (``SIGALRM``) checks both, so a read that blocks is interrupted."""
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
    """A request failure in a few words: ``HTTPError 404``, ``ConnectionError (ECONNREFUSED)``, ..."""
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
    """Download one published file of ``dataset`` into ``directory``, verified against its checksum: from each
    base URL in turn (:func:`registry`), until one serves it.

    Args:
        dataset: ``"mnist"``, ``"cifar10"`` or ``"svhn"``.
        name: one of ``SOURCES[dataset].files``.
        directory: the folder to write to (created if needed).
        progress: show pooch's progress bar (on stderr).

    Returns:
        the path of the verified file.

    Raises:
        DataError: one line naming the file: every mirror failed (HTTP error, connection dropped, timeout,
            truncated body) or served bytes whose checksum differs from the published one.
    """
    import pooch
    import requests

    known_hash = SOURCES[dataset].files[name]
    target = Path(directory) / name
    if target.is_file() and _hash_matches(target, known_hash):
        return target
    pooch.get_logger().setLevel("WARNING")  # one line of ours per file instead of pooch's log
    partial = Path(directory) / PARTIAL
    failures = []
    try:
        for base in _base_urls(dataset):
            url = base + name
            print(f"downloading {url} -> {target}", file=sys.stderr, flush=True)
            remove_tool_dir(partial)  # left by a download that was killed
            make_tool_dir(partial)
            downloader = functools.partial(_download, progress=progress)
            try:
                os.replace(registry(dataset, base, partial).fetch(name, downloader=downloader), target)
                return target
            except ValueError as e:  # pooch: the downloaded file's hash differs (the temporary file is removed)
                got = re.search(r"but got (\w+)", str(e))
                failures.append(f"{url}: checksum differs: got {got.group(1) if got else '?'}, published {known_hash}")
            except requests.exceptions.RequestException as e:
                failures.append(f"{url}: {_reason(e)}")
    except TooSlowError as e:
        raise _fault(name, f"download given up: {e} (nothing was written; rerun to retry)") from None
    except OSError as e:
        raise _fault(str(target), f"cannot be written ({e.strerror or type(e).__name__})") from None
    finally:
        remove_tool_dir(partial)
    raise _fault(name, "download failed: " + "; ".join(failures) + " (nothing was written; rerun to retry)")


def _first_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return text if len(text) <= 300 else text[:297] + "..."


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` may not be extracted (None when it may)."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or member.name.startswith(("/", "\\")) or "\\" in member.name:
        return "a path outside the target folder"
    if member.issym() or member.islnk():
        return f"a link (to {member.linkname!r})"
    if not (member.isfile() or member.isdir()):
        return "not a regular file or folder"
    return None


def extract_tar(archive: str | Path, target: str | Path, *, expect_folder: str, expect_files: Sequence[str]) -> Path:
    """Extract ``archive`` (a ``.tar.gz``) into ``target/expect_folder``, safely and all or nothing.

    Every member is checked before anything is written: regular files and folders only, every path relative
    and without ``..``, at most ``ARCHIVE_LIMITS["members"]`` members and ``ARCHIVE_LIMITS["bytes"]`` bytes in
    all. The members go to a temporary folder in ``target`` (with tarfile's ``data`` filter as a second
    guard), which is renamed to ``expect_folder`` only when ``expect_files`` are all in it.

    Args:
        archive: the archive file.
        target: the folder that receives ``expect_folder``.
        expect_folder: the archive's top folder (CIFAR-10: ``cifar-10-batches-py``).
        expect_files: files that must be inside ``expect_folder`` afterwards.

    Returns:
        ``target / expect_folder``.

    Raises:
        DataError: one line naming the archive (and the member): not a readable tar.gz, a refused member,
            over the limits, or an expected file missing.
    """
    archive, target = Path(archive), Path(target)
    final = target / expect_folder
    staging = target / f".{expect_folder}.partial-{os.getpid()}"
    for stale in target.glob(f".{expect_folder}.partial-*"):  # left by a process killed mid-extraction
        remove_tool_dir(stale)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            total = 0
            for member in tar:  # streams the headers; stops at the first refused member
                problem = _member_problem(member)
                if problem:
                    raise _fault(str(archive), f"member {member.name!r} is {problem}; nothing was extracted")
                members.append(member)
                total += member.size
                if len(members) > ARCHIVE_LIMITS["members"] or total > ARCHIVE_LIMITS["bytes"]:
                    raise _fault(str(archive), f"holds more than {ARCHIVE_LIMITS['members']} members or "
                                               f"{ARCHIVE_LIMITS['bytes'] >> 20} MiB; nothing was extracted")
            remove_tool_dir(staging)
            make_tool_dir(staging)
            # tarfile's "data" filter (Python 3.10.12+, 3.11.4+, 3.12) as a second guard where it exists.
            guard = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, members=members, **guard)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:  # not gzip/tar, truncated, disk full
        remove_tool_dir(staging)
        raise _fault(str(archive), f"cannot be extracted: not a complete tar.gz archive or an unwritable {target} "
                                   f"({type(e).__name__}: {_first_line(e)}); nothing was extracted") from None
    except BaseException:
        remove_tool_dir(staging)
        raise
    extracted = staging / expect_folder
    missing = [n for n in expect_files if not (extracted / n).is_file()]
    if missing:
        remove_tool_dir(staging)
        raise _fault(str(archive), f"lacks {expect_folder}/{missing[0]} ({len(missing)} expected files missing)")
    if final.exists():  # an incomplete folder (the data check found it wanting): moved aside, never deleted
        final.rename(final.with_name(f"{expect_folder}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}"))
    extracted.rename(final)
    remove_tool_dir(staging)
    return final


def _mnist_present(root: Path) -> bool:
    return any(
        all((d / stem).is_file() or (d / f"{stem}.gz").is_file() for stem in MNIST_FILES)
        for d in (root, root / "mnist", root / "MNIST" / "raw")
    )


def _cifar_present(root: Path) -> bool:
    return any(all((d / n).is_file() for n in CIFAR10_FILES) for d in (root / CIFAR10_FOLDER, root))


def _svhn_present(root: Path, names: Sequence[str]) -> bool:
    return any(all((d / n).is_file() for n in names) for d in (root, root / "svhn", root / "SVHN"))


def ensure_dataset(dataset: str, data_dir: str | Path, *, download: bool, extra: bool = False,
                   progress: bool = False) -> list[str]:
    """Make ``dataset``'s files readable under ``data_dir``: use what is there, else extract, else download.

    * files already in a place ``wage_train.data`` reads (also torchvision's layout): nothing is done;
    * CIFAR-10: ``cifar-10-python.tar.gz`` in ``data_dir`` is verified and extracted (also without
      ``download``; a corrupt archive is refetched with ``download``, else reported);
    * otherwise, with ``download``: the missing files are fetched (:func:`fetch`) into ``data_dir``.
    Without ``download`` and without the files nothing happens (the reader then says what is missing).

    Args:
        dataset: ``"digits"`` (nothing to do), ``"mnist"``, ``"cifar10"`` or ``"svhn"``.
        data_dir: the ``--data-dir`` folder (created when downloading).
        download: fetch what is missing.
        extra: SVHN: also ``extra_32x32.mat`` (the paper's training set is train + extra).
        progress: show download progress bars.

    Returns:
        what was done, one line per action (empty when the data was already there).

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
        raise _fault(str(root), f"cannot be created ({e.strerror or type(e).__name__})") from None
    # Held while files are fetched and extracted: a second download into the folder waits, then finds them.
    lock = RunLock(root)
    try:
        lock.acquire("--data-dir", wait=lambda: print(f"waiting for another download into {root} to finish",
                                                      file=sys.stderr, flush=True))
        return _ensure(dataset, root, download=download, extra=extra, progress=progress)
    except BaseException:
        for p in missing:  # the folders this call created, if nothing went into them
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
    finally:
        lock.release()


def _ensure(dataset: str, root: Path, *, download: bool, extra: bool, progress: bool) -> list[str]:
    done: list[str] = []
    if dataset == "mnist":
        if _mnist_present(root) or not download:
            return done
        for name in SOURCES["mnist"].files:
            if not (root / name.removesuffix(".gz")).is_file():
                done.append(f"fetched {fetch('mnist', name, root, progress=progress)}")
        return done
    if dataset == "svhn":
        names = [n for n in SOURCES["svhn"].files if extra or n not in SOURCES["svhn"].optional]
        if _svhn_present(root, names) or not download:
            return done
        for name in names:
            done.append(f"fetched {fetch('svhn', name, root, progress=progress)}")
        return done
    # cifar10
    if _cifar_present(root):
        return done
    archive = root / CIFAR10_ARCHIVE
    known = SOURCES["cifar10"].files[CIFAR10_ARCHIVE]
    if not download and archive.is_file() and not _hash_matches(archive, known):
        raise _fault(str(archive), f"checksum differs from the published {known} (a partial or damaged "
                                       "copy): delete it, or rerun with --download to fetch it again")
    if download:
        fetch("cifar10", CIFAR10_ARCHIVE, root, progress=progress)
        done.append(f"fetched {archive}")
    elif not archive.is_file():
        return done
    final = extract_tar(archive, root, expect_folder=CIFAR10_FOLDER, expect_files=CIFAR10_FILES)
    done.append(f"extracted {archive} -> {final}")
    return done


def _parser() -> argparse.ArgumentParser:
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
    return p


def _stop(signum: int, frame: object) -> None:
    raise _Stopped(signum)


class _Stopped(BaseException):
    """SIGINT or SIGTERM: raised where the process is, so that every ``finally`` removes what it wrote."""


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point ``wage-data``: exit 0 with one line per action, 2 with one line on a fault, 130 on
    SIGINT and 143 on SIGTERM (one line; no temporary file is left)."""
    from wage_train.config import UsageError

    args = _parser().parse_args(argv)
    names = list(SOURCES) if args.dataset == "all" else [args.dataset]
    progress = not args.no_progress and sys.stderr.isatty()
    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for name in names:
            done = ensure_dataset(name, args.data_dir, download=True, extra=args.svhn_extra, progress=progress)
            for line in done or [f"{name}: already in {args.data_dir}"]:
                print(line, flush=True)
    except (DataError, UsageError) as e:
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


if __name__ == "__main__":  # python -m wage_train.download (= wage-data)
    main()
