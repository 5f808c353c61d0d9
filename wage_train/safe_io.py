"""A run's own files: written whole or not at all (:func:`atomic_write`), checkpoints checked against a sha256
manifest, and JSON read back with every fault a one-line :class:`~wage_data.DataError` naming the file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wage_data.files import fault

__all__ = ["MANIFEST", "atomic_write", "first_line", "read_json_object", "verify_manifest", "write_manifest"]

MANIFEST = "MANIFEST.sha256"


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type's name when the message is empty."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


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
