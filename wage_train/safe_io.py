"""Reading files this project did not write in this run, without trusting them.

One error type (:class:`DataError`, the message always names the file) and the helpers every reader uses:

* :func:`safe_unpickle`: a restricted unpickler that admits only the globals a genuine CIFAR-10 python batch
  needs (numpy's array reconstruction and dtype); anything else is refused *before* it is constructed.
* :func:`read_bytes`: a whole file, or a ``DataError`` naming it.
* :func:`file_digests` / :func:`write_manifest` / :func:`verify_manifest`: a sha256 manifest of every file in a
  directory, written with a checkpoint and checked before it is restored.
* :func:`read_json_object`: a JSON object (``config.json``) or a ``DataError`` naming the file.
* :func:`atomic_write`: a file written whole or not at all (temporary name, fsync, rename), for a run's outputs.
* :func:`make_tool_dir` / :func:`remove_tool_dir`: the tool's temporary folders carry :data:`TOOL_MARK`, and
  only a folder holding it is ever removed (a user's folder of the same name is never touched).

A reader for another format (e.g. SVHN's ``.mat``) raises :class:`DataError` through :func:`fault`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "ALLOWED_PICKLE_GLOBALS",
    "DataError",
    "MANIFEST",
    "TOOL_MARK",
    "atomic_write",
    "make_tool_dir",
    "remove_tool_dir",
    "fault",
    "one_line",
    "file_digests",
    "read_bytes",
    "read_json_object",
    "safe_unpickle",
    "verify_manifest",
    "write_manifest",
]

MANIFEST = "MANIFEST.sha256"
TOOL_MARK = ".wage-train-temporary"  # inside every temporary folder the tool creates (staging, partial downloads)

# (module, name) pairs a pickled dict of numpy arrays, lists, str, bytes and ints needs; nothing else.
ALLOWED_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol-5 pickles of numpy arrays: bytes -> array, no code
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol-2 pickles of bytes written by Python 3 (numpy arrays' raw data)
})


class DataError(Exception):
    """A file is missing, unreadable or malformed; the message names the file and what is wrong (one line)."""


def one_line(text: str, limit: int = 160) -> str:
    """``text`` as one printable line of at most ``limit`` characters (control and non-ASCII bytes escaped)."""
    flat = text.encode("ascii", "backslashreplace").decode("ascii")
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def fault(path: str | Path, what: str) -> DataError:
    """``DataError("<path>: <what>")``, the one form of a data-file fault (always a single printable line)."""
    return DataError(f"{path}: {one_line(what, 300)}")


def read_bytes(path: str | Path) -> bytes:
    """The bytes of ``path`` (``.gz`` decompressed), or :class:`DataError` naming it."""
    import gzip
    import zlib

    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise fault(path, f"cannot read ({type(e).__name__}: {e})") from None


# Protocol-2 pickles written by Python 3 store an empty bytes object as ``__builtin__.bytes()`` (no arguments):
# admitted as a constructor of b"" only (``bytes(n)`` with an argument would allocate n bytes, so it is refused).
_EMPTY_BYTES_GLOBALS = frozenset({("__builtin__", "bytes"), ("builtins", "bytes")})


def _empty_bytes(*args: Any) -> bytes:
    if args:
        raise pickle.UnpicklingError("bytes() with arguments is not data")
    return b""


def _check_pickle_lengths(path: Path, raw: bytes) -> None:
    """Walk the opcodes without building anything: every length-prefixed argument (bytes, str, frames) must fit
    in the file, so unpickling never allocates more than the file's size for one (a length-prefix bomb)."""
    import pickletools

    try:
        for _ in pickletools.genops(raw):
            pass
    except Exception as e:  # ValueError for a length beyond the data, or any malformed stream
        raise fault(path, f"not a pickle or truncated ({type(e).__name__}: {one_line(str(e), 80)})") from None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _EMPTY_BYTES_GLOBALS:
            return _empty_bytes
        if (module, name) not in ALLOWED_PICKLE_GLOBALS:
            raise fault(self._path, f"refused pickle global {module}.{name} (a data file may only hold "
                                    "dicts, lists, str, bytes, ints and numpy arrays)")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise fault(self._path, "refused pickle persistent id")


def safe_unpickle(path: str | Path, data: bytes | None = None) -> Any:
    """Unpickle ``path`` (or ``data`` read from it) admitting only :data:`ALLOWED_PICKLE_GLOBALS`.

    Raises:
      DataError: not a pickle, truncated, or naming any other global (refused before it is looked up,
        so no code in the file runs).
    """
    path = Path(path)
    raw = read_bytes(path) if data is None else data
    _check_pickle_lengths(path, raw)
    try:
        return _RestrictedUnpickler(io.BytesIO(raw), path).load()
    except DataError:
        raise
    except RecursionError:
        raise fault(path, "not a pickle (nesting too deep)") from None
    except MemoryError:
        raise fault(path, "not a pickle (asks for more memory than available)") from None
    except Exception as e:  # any malformed stream: UnpicklingError, EOFError, ValueError, OverflowError, ...
        raise fault(path, f"not a pickle or truncated ({type(e).__name__}: {one_line(str(e), 80)})") from None


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON object from ``path``; :class:`DataError` naming it when missing, truncated or not an object."""
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise fault(path, f"cannot read ({type(e).__name__})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise fault(path, f"not valid JSON ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise fault(path, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def file_digests(directory: str | Path) -> dict[str, str]:
    """``{relative posix path: sha256 hex}`` of every file under ``directory`` except the manifest."""
    root = Path(directory)
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def write_manifest(directory: str | Path) -> None:
    """Write ``directory/MANIFEST.sha256`` (``<sha256>  <path>`` lines, as ``sha256sum`` does)."""
    root = Path(directory)
    lines = [f"{h}  {name}\n" for name, h in file_digests(root).items()]
    with open(root / MANIFEST, "w") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())


def verify_manifest(directory: str | Path) -> None:
    """Check every file under ``directory`` against its manifest; :class:`DataError` naming the first bad file."""
    root = Path(directory)
    path = root / MANIFEST
    try:
        text = path.read_text("ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise fault(path, f"checkpoint manifest missing or unreadable ({type(e).__name__})") from None
    expected = {}
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise fault(path, "malformed checkpoint manifest line")
        expected[name] = digest
    actual = file_digests(root)
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            raise fault(root / name, "missing from the checkpoint")
        if name not in expected:
            raise fault(root / name, "not listed in the checkpoint manifest")
        if actual[name] != expected[name]:
            raise fault(root / name, "sha256 differs from the checkpoint manifest (corrupted or truncated)")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[Any]:
    """Open ``path``'s temporary sibling ``.<name>.tmp-<pid>`` for writing; when the block ends, flush, fsync and
    rename it to ``path``. On any error (a full disk, say) the temporary file is removed and ``path`` keeps its
    previous content (or stays absent): never a truncated file. An ``OSError`` names ``path``, not the
    temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename != str(path):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def make_tool_dir(path: str | Path) -> Path:
    """Create the folder ``path`` (``FileExistsError`` if anything is there) holding :data:`TOOL_MARK`."""
    path = Path(path)
    path.mkdir()
    (path / TOOL_MARK).write_bytes(b"")
    return path


def remove_tool_dir(path: str | Path) -> bool:
    """Remove ``path`` if it is a folder of the tool's (a real folder holding :data:`TOOL_MARK`); True if it was."""
    path = Path(path)
    if path.is_symlink() or not (path / TOOL_MARK).is_file():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True
