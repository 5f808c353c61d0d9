"""Reading files this run did not write without trusting them, and writing a run's files whole or not at all.

Every fault is a :class:`DataError` whose one-line message names the file. The tool's temporary folders hold
:data:`TOOL_MARK`, and only a folder holding it is ever removed (a user's folder of the same name never is).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import pickle
import pickletools
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "DataError",
    "MANIFEST",
    "TOOL_MARK",
    "atomic_write",
    "fault",
    "first_line",
    "make_tool_dir",
    "one_line",
    "read_json_object",
    "remove_tool_dir",
    "safe_unpickle",
    "verify_manifest",
    "write_manifest",
]

MANIFEST = "MANIFEST.sha256"
TOOL_MARK = ".wage-train-temporary"

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


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type's name when the message is empty."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


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


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write_manifest(directory: str | Path) -> None:
    """Write ``directory/MANIFEST.sha256``: the sha256 of every file under it, as ``sha256sum`` prints them."""
    root = Path(directory)
    with open(root / MANIFEST, "w") as f:
        f.writelines(f"{h}  {name}\n" for name, h in _digests(root).items())
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
    actual = _digests(root)
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            raise fault(root / name, "missing from the checkpoint")
        if name not in expected:
            raise fault(root / name, "not listed in the checkpoint manifest")
        if actual[name] != expected[name]:
            raise fault(root / name, "sha256 differs from the checkpoint manifest (corrupted or truncated)")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **open_kwargs: Any) -> Iterator[Any]:
    """Open a temporary sibling of ``path``; when the block ends, fsync it and rename it to ``path``.

    On any error (a full disk) the temporary file is removed and ``path`` keeps its previous content or stays
    absent; an ``OSError`` names ``path``, not the temporary file."""
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
