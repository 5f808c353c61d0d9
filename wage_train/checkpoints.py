"""Per-epoch checkpoints of a ``wage-train`` run, written atomically and verified before they are restored.

Layout: ``checkpoints/epoch_NNNN/`` holds each runner's files (``jax/`` by Orbax, ``torch.pt``), ``state.json``
and ``MANIFEST.sha256`` (the sha256 of every other file). A checkpoint is written into ``epoch_NNNN.tmp``,
its manifest written and re-verified, then renamed into place; ``latest`` names it. The previous good
checkpoint is kept (two in all) so that a damaged newest one falls back to it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from wage_train.reporting import write_json
from wage_train.safe_io import DataError, fault, one_line, read_json_object, verify_manifest, write_manifest

__all__ = [
    "KEEP",
    "CheckpointWriteError",
    "NonFiniteError",
    "checkpoints_newest_first",
    "file_system_fault",
    "latest_checkpoint",
    "restore_checkpoint",
    "save_checkpoint",
]

KEEP = 2  # the newest checkpoint and the previous good one
STATE_KEYS = ("epoch", "data_rng", "history", "compare")


class NonFiniteError(ValueError):
    """A runner holds a NaN or an infinity (never written to a checkpoint)."""


class CheckpointWriteError(DataError):
    """A checkpoint could not be written (disk full, read-only, permission denied, ...); its temporary folder
    was removed and the previous checkpoint kept. The message is one line naming the folder and the cause."""


# The file-system faults worth naming, as strerror and as Orbax/TensorStore spell them in their messages.
_FS_FAULTS = {
    "ENOSPC": "No space left on device",
    "EROFS": "Read-only file system",
    "EACCES": "Permission denied",
    "EDQUOT": "Disk quota exceeded",
    "EBUSY": "Device or resource busy",
    "EIO": "Input/output error",
}


def file_system_fault(e: BaseException) -> str:
    """``"ENOSPC: No space left on device"`` and the like for an OSError or an error whose message names one;
    else the error's type and first line."""
    import errno as errno_names

    if isinstance(e, OSError) and e.errno is not None:
        return f"{errno_names.errorcode.get(e.errno, e.errno)}: {e.strerror}"
    text = str(e)
    for name, words in _FS_FAULTS.items():
        if words.lower() in text.lower():
            return f"{name}: {words}"
    return f"{type(e).__name__}: {one_line(text, 120)}"


def non_finite_weights(runners: list[Any]) -> str | None:
    """``"<framework> <name>"`` of the first raw weight/state array holding a NaN or Inf, else None."""
    for r in runners:
        for name, v in r.raw_weights().items():
            a = np.asarray(v)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                return f"{r.framework} {name}"
    return None


_DROP_ALL = logging.Filter("\0never")  # matches no logger name: drops every record
# Where Orbax's writer threads report a failure: absl (its own logs), asyncio (a failed write whose future
# nobody awaited: "Future exception was never retrieved", with the OSError's traceback).
_LIBRARY_LOGGERS = ("absl", "asyncio")


def _mute_library_logs(mute: bool = True) -> None:
    for name in _LIBRARY_LOGGERS:
        if mute:
            logging.getLogger(name).addFilter(_DROP_ALL)
        else:
            logging.getLogger(name).removeFilter(_DROP_ALL)


@contextlib.contextmanager
def _library_logs_muted() -> Iterator[None]:
    """Orbax's background threads log each failure (a full disk, a read-only folder) with a traceback through
    absl and asyncio, including "Event loop is closed" from their asyncio teardown; the caller reports the
    failure in one line instead. A filter, not a level: the runners set absl's level themselves."""
    _mute_library_logs()
    try:
        yield
    finally:
        _mute_library_logs(False)


def save_checkpoint(root: Path, epoch: int, runners: list[Any], state: dict[str, Any]) -> Path:
    """Write ``root/epoch_NNNN`` atomically (runners + state.json + manifest), point ``root/latest`` at it,
    keep it and the previous one.

    Raises:
      NonFiniteError: a runner holds a non-finite value (nothing is written).
    """
    bad = non_finite_weights(runners)
    if bad is not None:
        raise NonFiniteError(f"refusing to checkpoint epoch {epoch}: {bad} holds a NaN or an infinity")
    target = root / f"epoch_{epoch:04d}"
    tmp = root / f"epoch_{epoch:04d}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        with _library_logs_muted():
            for r in runners:
                r.save(tmp)
        write_json(tmp / "state.json", state)
        write_manifest(tmp)
        verify_manifest(tmp)
    except Exception as e:  # OSError, or Orbax's own errors wrapping one (disk full, read-only, permissions)
        # The run ends with one line: a writer thread that fails later must not print its traceback either.
        _mute_library_logs()
        for _ in range(5):  # a writer thread may still be finishing: remove what it leaves
            shutil.rmtree(tmp, ignore_errors=True)
            time.sleep(0.1)
            if not tmp.exists():
                break
        previous = checkpoints_newest_first(root)
        kept = f"the checkpoint {previous[0]} is kept" if previous else "no earlier checkpoint exists"
        raise CheckpointWriteError(f"cannot write the checkpoint of epoch {epoch} in {root} ({file_system_fault(e)}); "
                                   f"{kept}; free space or fix the folder's permissions, then continue with "
                                   "--resume (or choose another --out-dir)") from None
    if target.exists():  # an epoch written by an earlier, interrupted invocation: replace it
        aside = root / f"epoch_{epoch:04d}.old"
        shutil.rmtree(aside, ignore_errors=True)
        target.rename(aside)
        tmp.rename(target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        tmp.rename(target)
    pointer = root / "latest.tmp"
    pointer.write_text(target.name + "\n")
    pointer.replace(root / "latest")
    for old in checkpoints_newest_first(root)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def checkpoints_newest_first(root: Path) -> list[Path]:
    """The complete ``epoch_NNNN`` directories under ``root``, newest first (``.tmp`` ones are incomplete)."""
    found = []
    for p in root.glob("epoch_*") if root.is_dir() else ():
        suffix = p.name[len("epoch_"):]
        if p.is_dir() and suffix.isdigit():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint directory under ``root`` (not verified), or None."""
    found = checkpoints_newest_first(root)
    return found[0] if found else None


def _load_one(path: Path, runners: list[Any]) -> dict[str, Any]:
    verify_manifest(path)
    state = read_json_object(path / "state.json")
    missing = [k for k in STATE_KEYS if k not in state]
    if missing or not isinstance(state["epoch"], int) or not isinstance(state["history"], list):
        raise fault(path / "state.json", f"not a wage-train checkpoint state (missing or bad {missing or 'epoch'})")
    for r in runners:
        try:
            with _library_logs_muted():
                r.restore(path)
        except Exception as e:  # Orbax/torch errors for a file the manifest did not catch
            why = f"{type(e).__name__}: {one_line(str(e), 100)}"
            raise fault(path, f"{r.framework} state cannot be restored ({why})") from None
    bad = non_finite_weights(runners)
    if bad is not None:
        raise fault(path, f"{bad} holds a NaN or an infinity")
    return state


def restore_checkpoint(root: Path, runners: list[Any], warn: Any = print) -> tuple[Path, dict[str, Any]]:
    """Restore the newest checkpoint under ``root`` that verifies (manifest digests, readable state, finite
    values) into ``runners``; a refused one is reported with ``warn`` in one line and the previous one tried.

    Returns:
      ``(checkpoint directory, state dict)``.

    Raises:
      DataError: no checkpoint, or none verifies (the message names the newest one and what is wrong).
    """
    candidates = checkpoints_newest_first(root)
    if not candidates:
        raise DataError(f"--resume: no checkpoint in {root}")
    first_error: DataError | None = None
    for i, path in enumerate(candidates):
        try:
            return path, _load_one(path, runners)
        except DataError as e:
            first_error = first_error or e
            nxt = candidates[i + 1].name if i + 1 < len(candidates) else None
            if nxt:
                warn(f"warning: checkpoint refused: {e}; falling back to {nxt}")
    raise DataError(f"no usable checkpoint: {first_error}")
