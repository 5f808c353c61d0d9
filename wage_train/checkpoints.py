"""Per-epoch checkpoints of a ``wage-train`` run on Orbax's ``CheckpointManager``, verified before they are restored.

``checkpoints/epoch_NNNN/`` is one Orbax step: an item per runner (``jax/``, ``torch/``: its flat
``checkpoint_state()``), ``state/`` (the loop's JSON state) and ``MANIFEST.sha256``. Saves are synchronous: a
failed write raises in the caller. The manifest is checked before Orbax reads a step, since Orbax checks neither
its JSON item nor its metadata (a flipped digit restores another history), and a damaged or (on a save) short
array file makes TensorStore report on stderr after Orbax has closed its event loop: hence also the free-space
check and :func:`_orbax_records_held` (Orbax's threads log a failed write before the caller's one line).
"""

from __future__ import annotations

import contextlib
import errno as errno_names
import json
import logging
import logging.handlers
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from wage_data.files import DataError, fault, one_line
from wage_train.safe_io import verify_manifest, write_manifest

__all__ = ["KEEP", "CheckpointWriteError", "NonFiniteError", "checkpoints_newest_first", "file_system_fault",
           "latest_checkpoint", "non_finite_weights", "restore_checkpoint", "save_checkpoint"]

KEEP = 2  # the newest checkpoint and the previous good one
STATE_KEYS = ("epoch", "data_rng", "history", "compare")
PREFIX = "epoch"  # steps are named epoch_NNNN


class NonFiniteError(ValueError):
    """A runner holds a NaN or an infinity (never written to a checkpoint)."""


class CheckpointWriteError(DataError):
    """A checkpoint could not be written; what it had written is removed and the previous checkpoint kept."""


# The file-system faults worth naming, as Orbax/TensorStore spell them in their messages.
_FS_FAULTS = {"ENOSPC": "No space left on device", "EROFS": "Read-only file system", "EACCES": "Permission denied",
              "EDQUOT": "Disk quota exceeded", "EBUSY": "Device or resource busy", "EIO": "Input/output error"}


def file_system_fault(e: BaseException) -> str:
    """``"ENOSPC: No space left on device"`` and the like for an OSError or an error whose message names one;
    else the error's type and first line."""
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


@contextlib.contextmanager
def _orbax_records_held() -> Iterator[None]:
    """Hold what Orbax logs (through absl) in the block; pass it on if the block succeeds, drop it if it raises."""
    logger, held = logging.getLogger("absl"), logging.handlers.BufferingHandler(capacity=sys.maxsize)
    handlers, propagate = logger.handlers, logger.propagate
    logger.handlers, logger.propagate = [held], False
    try:
        yield
    finally:
        logger.handlers, logger.propagate = handlers, propagate
    for record in held.buffer:  # reached only without an error
        logger.handle(record)


def _manager(root: Path) -> Any:
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(Path(root).resolve(), options=ocp.CheckpointManagerOptions(
        max_to_keep=KEEP, enable_async_checkpointing=False, save_root_metadata=False,  # checkpoints/: the steps only
        step_name_format=ocp.step.standard_name_format(step_prefix=PREFIX, step_format_fixed_length=4)))


HEADROOM = 1 << 20  # for Orbax's metadata files and the file system's blocks


def save_checkpoint(root: Path, epoch: int, runners: list[Any], state: dict[str, Any], main: bool = True) -> Path:
    """Write ``root/epoch_NNNN`` (the runners' states, the JSON ``state``, the manifest); Orbax keeps it and the
    previous one. In a multi-process job every process calls it (Orbax's multi-process save); only the ``main``
    one checks the free space and writes the manifest. Raises :class:`NonFiniteError` (nothing written) or
    :class:`CheckpointWriteError` (the previous checkpoint kept)."""
    import orbax.checkpoint as ocp

    bad = non_finite_weights(runners)
    if bad is not None:
        raise NonFiniteError(f"refusing to checkpoint epoch {epoch}: {bad} holds a NaN or an infinity")
    trees = {r.framework: r.checkpoint_state() for r in runners}
    target = root / f"{PREFIX}_{epoch:04d}"
    try:
        if main:
            root.mkdir(parents=True, exist_ok=True)
            need = sum(np.asarray(a).nbytes for tree in trees.values() for a in tree.values()) + len(json.dumps(state))
            if shutil.disk_usage(root).free < need + HEADROOM:  # refused before TensorStore fails (see above)
                raise OSError(errno_names.ENOSPC, os.strerror(errno_names.ENOSPC), str(root))
        items = {name: ocp.args.StandardSave(tree) for name, tree in trees.items()}
        with _orbax_records_held(), _manager(root) as manager:
            if epoch in manager.all_steps():  # written by an earlier, interrupted invocation: replace it
                manager.delete(epoch)
            manager.save(epoch, args=ocp.args.Composite(state=ocp.args.JsonSave(state), **items), force=True)
        if main:
            write_manifest(target)
            verify_manifest(target)
    except Exception as e:  # OSError, or Orbax's own errors wrapping one (disk full, read-only, permissions)
        for partial in root.glob(f"{target.name}*") if main else ():  # the step, or Orbax's temporary folder
            shutil.rmtree(partial, ignore_errors=True)
        previous = checkpoints_newest_first(root)
        kept = f"the checkpoint {previous[0]} is kept" if previous else "no earlier checkpoint exists"
        raise CheckpointWriteError(f"cannot write the checkpoint of epoch {epoch} in {root} ({file_system_fault(e)}); "
                                   f"{kept}; free space or fix the folder's permissions, then continue with "
                                   "--resume (or choose another --out-dir)") from None
    return target


def _epoch_of(path: Path) -> int:
    return int(path.name[len(PREFIX) + 1:])


def checkpoints_newest_first(root: Path) -> list[Path]:
    """The ``epoch_NNNN`` directories under ``root``, newest first (not Orbax's temporary folders)."""
    found = root.glob(f"{PREFIX}_*") if root.is_dir() else ()
    return sorted((p for p in found if p.is_dir() and p.name[len(PREFIX) + 1:].isdigit()),
                  key=lambda p: (_epoch_of(p), p), reverse=True)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint directory under ``root`` (not verified), or None."""
    return next(iter(checkpoints_newest_first(root)), None)


_ROW_NUMBERS = ("loss", "train_acc", "test_acc", "lr", "time_s", "images_per_s", "train_time_s", "eval_time_s")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _state_problem(state: Any, epoch: int) -> str | None:
    """What is wrong with a restored loop state of step ``epoch`` (types and ranges, read like user input)."""
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        return f"it must be an object with {', '.join(STATE_KEYS)}"
    if not _is_int(state["epoch"]) or state["epoch"] != epoch:
        return f"epoch {one_line(repr(state['epoch']), 40)} is not this step's {epoch}"
    if not isinstance(state["data_rng"], dict):
        return "data_rng must be an object"
    for key, row_ok in (("history", _history_row_ok), ("compare", lambda r, e: _is_int(r.get("epoch")))):
        rows = state[key]
        if not isinstance(rows, list) or not all(isinstance(r, dict) and row_ok(r, epoch) for r in rows):
            return f"{key} must be a list of per-epoch records of epochs 1 to {epoch}"
    return None


def _history_row_ok(row: dict[str, Any], epoch: int) -> bool:
    return (_is_int(row.get("epoch")) and 1 <= row["epoch"] <= epoch and row.get("framework") in ("jax", "torch")
            and all(isinstance(row.get(k), int | float) and not isinstance(row.get(k), bool) for k in _ROW_NUMBERS))


def _load_one(path: Path, runners: list[Any]) -> dict[str, Any]:
    import orbax.checkpoint as ocp

    verify_manifest(path)
    items = {r.framework: ocp.args.StandardRestore() for r in runners}
    try:
        with _orbax_records_held(), _manager(path.parent) as manager:
            restored = manager.restore(_epoch_of(path), args=ocp.args.Composite(state=ocp.args.JsonRestore(), **items))
    except Exception as e:  # a file the manifest did not catch, or a checkpoint of other runners
        raise fault(path, f"cannot be restored ({type(e).__name__}: {one_line(str(e), 100)})") from None
    state = restored["state"]
    problem = _state_problem(state, _epoch_of(path))
    if problem:
        raise fault(path / "state", f"not a wage-train checkpoint state ({problem})")
    for r in runners:
        try:
            r.load_checkpoint_state(restored[r.framework])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise fault(path, f"{r.framework} state cannot be restored ({one_line(str(e), 100)})") from None
    bad = non_finite_weights(runners)
    if bad is not None:
        raise fault(path, f"{bad} holds a NaN or an infinity")
    return state


def restore_checkpoint(root: Path, runners: list[Any], warn: Any = print) -> tuple[Path, dict[str, Any]]:
    """Restore the newest checkpoint under ``root`` that verifies (manifest, readable state, finite values) into
    ``runners``; returns ``(its directory, the loop state)``. A refused one is reported with ``warn`` and the
    previous one tried; :class:`DataError` when none is left (naming the newest one and what is wrong)."""
    candidates = checkpoints_newest_first(root)
    if not candidates:
        raise DataError(f"--resume: no checkpoint in {root}")
    if (candidates[0] / "state.json").exists():  # epoch_NNNN/{jax/, torch.pt, state.json}: the earlier layout
        raise DataError(f"{candidates[0]}: a checkpoint of an earlier wage-train layout, which this version does not "
                        "read; finish the run with the version that wrote it, or start again with --overwrite "
                        "(the old run is moved aside)")
    first_error: DataError | None = None
    for i, path in enumerate(candidates):
        try:
            return path, _load_one(path, runners)
        except DataError as e:
            first_error = first_error or e
            if i + 1 < len(candidates):
                warn(f"warning: checkpoint refused: {e}; falling back to {candidates[i + 1].name}")
    raise DataError(f"no usable checkpoint: {first_error}")
