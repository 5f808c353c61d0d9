"""Reading files that this project did not write, without trusting them, and the folders and locks its tools use.

Every fault is a :class:`DataError` whose one-line message names the file. The tools' temporary folders hold
:data:`TOOL_MARK`, and only a folder holding it is ever removed (a user's folder of the same name never is).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import io
import os
import pickle
import pickletools
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["DEFLATE_MAX_RATIO", "TOOL_MARK", "DataError", "FolderLock", "fault", "make_tool_dir", "one_line",
           "remove_tool_dir", "safe_unpickle"]

TOOL_MARK = ".wage-train-temporary"
DEFLATE_MAX_RATIO = 1032  # deflate expands at most 1032-fold: n compressed bytes hold at most ~1032 n

# The globals a pickled dict of numpy arrays, lists, str, bytes and ints needs (a CIFAR-10 batch); nothing else.
_ALLOWED_GLOBALS = frozenset({
    *((m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5: bytes -> array, no code
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol 2 written by Python 3: numpy arrays' raw data
})
# Protocol 2 stores b"" as ``bytes()``: admitted without arguments only (``bytes(n)`` would allocate n bytes).
_EMPTY_BYTES_GLOBALS = frozenset({("__builtin__", "bytes"), ("builtins", "bytes")})


class DataError(Exception):
    """A file is missing, unreadable or malformed; the message names the file and what is wrong (one line)."""


def one_line(text: str, limit: int = 160) -> str:
    """``text`` as one printable ASCII line of at most ``limit`` characters (anything else escaped)."""
    flat = text.encode("ascii", "backslashreplace").decode("ascii")
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def fault(path: str | Path, what: str) -> DataError:
    """``DataError("<path>: <what>")``, ``what`` made one line."""
    return DataError(f"{path}: {one_line(what, 300)}")


def _empty_bytes(*args: Any) -> bytes:
    if args:
        raise pickle.UnpicklingError("bytes() with arguments is not data")
    return b""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _EMPTY_BYTES_GLOBALS:
            return _empty_bytes
        if (module, name) not in _ALLOWED_GLOBALS:
            raise fault(self._path, f"refused pickle global {module}.{name} (a data file may only hold "
                                    "dicts, lists, str, bytes, ints and numpy arrays)")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise fault(self._path, "refused pickle persistent id")


def safe_unpickle(path: str | Path, data: bytes | None = None) -> Any:
    """Unpickle ``path`` (``.gz`` decompressed; or ``data`` read from it) admitting only numpy's array globals.

    Raises:
      DataError: unreadable, not a pickle, truncated, a length prefix beyond the file, or any other global
        (refused before it is looked up: no code in the file runs).
    """
    path = Path(path)
    if data is None:
        try:
            with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as f:
                data = f.read()
        except (OSError, EOFError, zlib.error) as e:
            raise fault(path, f"cannot read ({type(e).__name__}: {e})") from None
    try:
        # The opcodes first, building nothing: a length prefix beyond the file would otherwise be allocated.
        for _ in pickletools.genops(data):
            pass
        return _RestrictedUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except RecursionError:
        raise fault(path, "not a pickle (nesting too deep)") from None
    except MemoryError:
        raise fault(path, "not a pickle (asks for more memory than available)") from None
    except Exception as e:  # any malformed stream: UnpicklingError, EOFError, ValueError, OverflowError, ...
        raise fault(path, f"not a pickle or truncated ({type(e).__name__}: {one_line(str(e), 80)})") from None


def make_tool_dir(path: str | Path) -> Path:
    """Create the folder ``path`` holding :data:`TOOL_MARK` (``FileExistsError`` if anything is there)."""
    path = Path(path)
    path.mkdir()
    (path / TOOL_MARK).write_bytes(b"")
    return path


def remove_tool_dir(path: str | Path) -> bool:
    """Remove ``path`` if it is a real folder holding :data:`TOOL_MARK`; True if it was removed."""
    path = Path(path)
    if path.is_symlink() or not (path / TOOL_MARK).is_file():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def _lock_holder(fd: int) -> str:
    """The pid holding a ``flock`` on the file open at ``fd``, read from ``/proc/locks`` ("unknown" elsewhere)."""
    st = os.fstat(fd)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "FLOCK" in fields and inode in fields:
                return fields[fields.index(inode) - 1]
    return "unknown"


class FolderLock:
    """An exclusive ``flock`` on a folder's inode, held until :meth:`release`: no file to delete or replace, no
    symlink followed, it follows the folder through a rename, and the kernel drops it when the process dies (a
    killed process never blocks the next). Faults are :attr:`error` (a subclass may raise its own)."""

    error: type[Exception] = DataError

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None

    def acquire(self, what: str = "--out-dir", wait: Callable[[], None] | None = None) -> FolderLock:
        """Take the lock or raise :attr:`error` naming the folder and the pid holding it; with ``wait``,
        call it and wait for the holder instead."""
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise self.error(f"{what} {self.directory}: cannot open it to lock it "
                             f"({os.strerror(e.errno) if e.errno else type(e).__name__})") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if wait is None:
                    raise
                wait()
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            holder = _lock_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise self.error(f"{what} {self.directory} is in use by another wage-train run (pid {holder}); "
                                 f"wait for it to end or choose another {what}") from None
            raise self.error(f"{what} {self.directory}: cannot lock it ({os.strerror(e.errno)})") from None
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (a no-op when not held)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
