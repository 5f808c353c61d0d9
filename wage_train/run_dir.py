"""The run directory (``--out-dir``): what counts as a run, the run lock, and ``--overwrite``'s swap.

``--overwrite`` trains in ``<out-dir>.new-<pid>`` and, after its first checkpoint, exchanges it with the old run
(moved to ``<out-dir>.old-<time>``, never deleted). A staging folder is the tool's only when it holds
:data:`STAGING_MARK`: a user's folder that merely has the name is never touched. Every process working on
``<out-dir>`` holds its lock, so whoever holds it may treat every unlocked, marked ``.new-<pid>`` folder as left by
a process that has ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from wage_data.files import TOOL_MARK, FolderLock, make_tool_dir, remove_tool_dir
from wage_train.checkpoints import checkpoints_newest_first
from wage_train.config import UsageError

__all__ = ["STAGING_MARK", "RunLock", "check_out_dir", "mark_staging", "run_kind", "staging_dir", "swap_into_place",
           "tidy_staging"]

STAGING_MARK = TOOL_MARK  # inside every staging folder the tool creates, until it becomes the run
_RUN_FILES = ("config.json", "checkpoints", "metrics.json", "metrics.csv")


def run_kind(directory: Path) -> str:
    """``"none"`` (no run file), ``"run"`` (a ``config.json`` naming framework, bits and dataset, or an
    ``epoch_NNNN`` checkpoint), else ``"foreign"``."""
    if not directory.is_dir() or not any((directory / name).exists() for name in _RUN_FILES):
        return "none"
    if _has_checkpoint(directory):
        return "run"
    try:
        cfg = json.loads((directory / "config.json").read_bytes())
    except (OSError, ValueError):
        return "foreign"
    return "run" if isinstance(cfg, dict) and {"framework", "bits", "dataset"} <= set(cfg) else "foreign"


def _enclosing_run(path: Path) -> Path | None:
    """The nearest proper ancestor of ``path`` (made absolute) that holds a run of this tool, else None."""
    return next((p for p in Path(os.path.abspath(path)).parents if run_kind(p) == "run"), None)


def _has_checkpoint(directory: Path) -> bool:
    return bool(checkpoints_newest_first(directory / "checkpoints"))


def check_out_dir(out_dir: Path, *, overwrite: bool) -> None:
    """:class:`UsageError` for an ``--out-dir`` not valid as UTF-8 (Orbax's C++ writer needs it), inside a run of
    this tool, or (``overwrite``) the working directory or one of its ancestors (renamed under the process)."""
    absolute = os.path.abspath(out_dir)
    try:
        absolute.encode("utf-8")
    except UnicodeEncodeError:
        shown = absolute.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        raise UsageError(f"--out-dir {shown}: the path is not valid UTF-8, which the checkpoint writer needs; "
                         "choose a folder whose path is valid UTF-8") from None
    # Through the path as given and as it resolves: a symlink into a run's checkpoints is a folder inside the run.
    outer = _enclosing_run(out_dir) or _enclosing_run(Path(os.path.realpath(out_dir)))
    if outer is not None:
        raise UsageError(f"--out-dir {out_dir} is inside the run in {outer}; writing there would damage that run: "
                         "choose a folder outside it")
    if overwrite and Path(absolute).resolve() in (cwd := Path.cwd().resolve(), *cwd.parents):
        raise UsageError(f"--overwrite --out-dir {out_dir}: that is the working directory or one of its ancestors, "
                         "which cannot be moved aside; run from another folder or choose another --out-dir")


class RunLock(FolderLock):
    """The run's lock on ``--out-dir`` (:class:`wage_data.files.FolderLock`): a second run in the folder is
    refused in one line naming the pid that holds it."""

    error = UsageError


def staging_dir(out_dir: Path) -> Path:
    """``<out-dir>.new-<pid>`` (absolute), where ``--overwrite`` trains until its first checkpoint."""
    absolute = Path(os.path.abspath(out_dir))
    return absolute.with_name(f"{absolute.name}.new-{os.getpid()}")


def _aside_name(path: Path) -> Path:
    """A free ``<path>.old-<time>[-n]`` next to ``path``."""
    path = Path(os.path.abspath(path))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    names = (path.with_name(f"{path.name}.old-{stamp}{f'-{n}' if n else ''}") for n in itertools.count())
    return next(p for p in names if not p.exists())


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back in the block, then deliver them in order to the previous handlers, so that a pair
    of renames is never cut in half (Python-level: the kernel hands a signal to any thread not masking it)."""
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield
        return
    pending: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for signum in pending:
            signal.raise_signal(signum)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths with libc's ``renameat2(RENAME_EXCHANGE)`` (``os`` lacks it); False where the
    kernel or libc lacks it. Only the exchange leaves no instant at which ``--out-dir`` holds no run."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap_into_place(staging: Path, final: Path, old_lock: RunLock | None, new_lock: RunLock | None) -> Path:
    """Put the run in ``staging`` at ``final`` and the run at ``final`` at a fresh ``.old-<time>`` name, with
    signals held; returns the latter. The locks (on ``final``, on ``staging``) follow their folders; ``old_lock``
    is released."""
    final = Path(os.path.abspath(final))
    aside = _aside_name(final)
    with signals_held():
        if _exchange(staging, final):
            os.rename(staging, aside)  # staging's name now holds the previous run
        else:
            os.rename(final, aside)
            os.rename(staging, final)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(final / STAGING_MARK)  # the folder is the run now, no longer a staging folder
        if new_lock is not None:
            new_lock.directory = final
        if old_lock is not None:
            old_lock.directory = aside
            old_lock.release()
    return aside


mark_staging = make_tool_dir  # a staging folder with its STAGING_MARK (FileExistsError if anything is there)


def tidy_staging(out_dir: Path, lock: RunLock, *, resume: bool, log: Callable[[str], None] = print) -> RunLock:
    """Deal with the marked, unlocked ``<out-dir>.new-<pid>`` folders of interrupted ``--overwrite`` runs: without
    a checkpoint removed; with one, moved into an empty ``out_dir`` on ``resume`` (the run an interrupted swap
    displaced), else moved aside to ``<out-dir>.old-<time>``. Returns the lock now held on ``out_dir``."""
    absolute = Path(os.path.abspath(out_dir))
    pattern = re.compile(re.escape(absolute.name) + r"\.new-\d+")
    siblings = absolute.parent.iterdir() if absolute.parent.is_dir() else ()
    for stale in sorted(p for p in siblings
                        if pattern.fullmatch(p.name) and not p.is_symlink() and (p / STAGING_MARK).is_file()):
        other = RunLock(stale)
        try:
            other.acquire()
        except UsageError:
            continue  # a live process owns it (it is not ours to touch)
        try:
            if not _has_checkpoint(stale):
                remove_tool_dir(stale)
                log(f"note: removed {stale} (left by an interrupted --overwrite run before its first checkpoint)")
            elif resume and not os.listdir(out_dir):
                with signals_held():
                    os.rename(stale, out_dir)  # out_dir is empty: replaced atomically, with its lock
                    os.unlink(Path(out_dir) / STAGING_MARK)
                    lock.release()
                    lock, other = other, lock
                    lock.directory = Path(out_dir)
                log(f"note: --resume: recovered the run that an interrupted --overwrite left in {stale}")
            else:
                aside = _aside_name(out_dir)
                os.rename(stale, aside)
                os.unlink(aside / STAGING_MARK)  # a run moved aside, no longer a staging folder
                log(f"note: moved {stale} (left by an interrupted --overwrite run) to {aside}")
        finally:
            other.release()
    return lock
