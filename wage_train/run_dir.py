"""The run directory (``--out-dir``) of ``wage-train``: what counts as a run, the run lock, and ``--overwrite``'s swap.

* :func:`run_kind`: ``"none"``, ``"run"`` (a run of this tool) or ``"foreign"`` (files a run would overwrite,
  but not a run of this tool).
* :func:`check_out_dir`: refuses an ``--out-dir`` inside a run, an undecodable path, and an ``--overwrite`` of
  the working directory or one of its ancestors.
* :class:`RunLock`: an exclusive ``fcntl.flock`` on ``<out-dir>/.wage-train.lock`` held for the run's life. The
  kernel drops it when the process dies, so a lock file left by a killed run is never mistaken for a live one
  (stale-lock safe); a second run in the same folder is refused in one line naming the holder's pid.
* :func:`swap_into_place`: ``--overwrite``'s exchange of the new run (trained in ``<out-dir>.new-<pid>``) and
  the old one (moved to ``<out-dir>.old-<time>``), with SIGINT/SIGTERM held back, atomically
  (``renameat2(RENAME_EXCHANGE)``) where the kernel offers it.
* :func:`tidy_staging`: what an interrupted ``--overwrite`` left beside ``<out-dir>``: a ``.new-<pid>`` folder
  without a checkpoint is removed, one with a checkpoint is recovered (``--resume`` moves it into place when
  ``<out-dir>`` holds no run) or moved aside, never deleted.

Every process working on ``<out-dir>`` holds the lock file found at ``<out-dir>/.wage-train.lock``, so whoever
holds it may treat every ``<out-dir>.new-<pid>`` folder as left behind by a process that has ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from wage_train.checkpoints import checkpoints_newest_first
from wage_train.config import UsageError

__all__ = [
    "LOCK_NAME",
    "RUN_FILES",
    "RunLock",
    "aside_name",
    "check_out_dir",
    "enclosing_run",
    "holds_a_run",
    "run_kind",
    "staging_dir",
    "swap_into_place",
    "tidy_staging",
]

LOCK_NAME = ".wage-train.lock"
RUN_FILES = ("config.json", "checkpoints", "metrics.json", "metrics.csv")


def run_kind(directory: Path) -> str:
    """``"none"`` (no run file), ``"run"`` (a run of this tool: a ``config.json`` naming a framework and bits,
    or a ``checkpoints/`` folder holding an ``epoch_NNNN`` checkpoint), else ``"foreign"``."""
    if not directory.is_dir() or not any((directory / name).exists() for name in RUN_FILES):
        return "none"
    if _has_checkpoint(directory):
        return "run"
    try:
        import json

        cfg = json.loads((directory / "config.json").read_bytes())
    except (OSError, ValueError):
        return "foreign"
    return "run" if isinstance(cfg, dict) and {"framework", "bits", "dataset"} <= set(cfg) else "foreign"


def holds_a_run(directory: Path) -> bool:
    """True when ``directory`` holds a run of this tool (:func:`run_kind`)."""
    return run_kind(directory) == "run"


def enclosing_run(path: Path) -> Path | None:
    """The nearest proper ancestor of ``path`` (made absolute) that holds a run of this tool, else None."""
    for parent in Path(os.path.abspath(path)).parents:
        if holds_a_run(parent):
            return parent
    return None


def _has_checkpoint(directory: Path) -> bool:
    return bool(checkpoints_newest_first(directory / "checkpoints"))


def check_out_dir(out_dir: Path, *, overwrite: bool) -> None:
    """Refuse (:class:`UsageError`, one line) an ``--out-dir`` that cannot hold a run safely.

    * a path the file system cannot take (not encodable as UTF-8, as Orbax's C++ writer needs);
    * a folder inside a run of this tool (its checkpoints would be rewritten under the run's manifest);
    * with ``overwrite``: the working directory or one of its ancestors (it would be renamed under the process).
    """
    absolute = os.path.abspath(out_dir)
    try:
        absolute.encode("utf-8")
    except UnicodeEncodeError:
        shown = absolute.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        raise UsageError(f"--out-dir {shown}: the path is not valid UTF-8, which the checkpoint writer needs; "
                         "choose a folder whose path is valid UTF-8") from None
    outer = enclosing_run(out_dir)
    if outer is not None:
        raise UsageError(f"--out-dir {out_dir} is inside the run in {outer}; writing there would damage that run: "
                         "choose a folder outside it")
    if overwrite:
        cwd = Path.cwd().resolve()
        target = Path(absolute).resolve()
        if target == cwd or target in cwd.parents:
            raise UsageError(f"--overwrite --out-dir {out_dir}: that is the working directory or one of its "
                             "ancestors, which cannot be moved aside; run from another folder or choose "
                             "another --out-dir")


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``directory/.wage-train.lock``, held until :meth:`release`.

    The file holds the holder's pid (for the refusal message); :meth:`release` removes it. A lock file left by a
    killed process is not locked (the kernel released it), so it is taken over. After taking the lock the
    file's inode is compared with the one at the path, so a file removed by its previous holder in between is
    never mistaken for the lock.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        """Where the lock file is now (it moves with its folder)."""
        return self.directory / LOCK_NAME

    def acquire(self, what: str = "--out-dir") -> RunLock:
        """Take the lock or raise :class:`UsageError` naming the folder and the pid holding it."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise UsageError(f"{what} {self.directory}: cannot create its lock file "
                                 f"({os.strerror(e.errno) if e.errno else type(e).__name__})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise UsageError(f"{what} {self.directory} is in use by another wage-train run (pid {holder}); "
                                     f"wait for it to end or choose another {what}") from None
                raise UsageError(f"{what} {self.directory}: cannot lock it ({os.strerror(e.errno)})") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file after we opened it: try again
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd = fd
            return self

    @property
    def held(self) -> bool:
        """True between :meth:`acquire` and :meth:`release`."""
        return self._fd is not None

    def move_into(self, directory: Path) -> None:
        """Move the (held) lock file into ``directory``, replacing any lock file there; the lock stays held."""
        target = Path(directory) / LOCK_NAME
        os.replace(self.path, target)
        self.directory = Path(directory)

    def release(self) -> None:
        """Remove the lock file (while still holding it) and drop the lock; a no-op when not held."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def staging_dir(out_dir: Path, pid: int | None = None) -> Path:
    """``<out-dir>.new-<pid>``, where ``--overwrite`` trains until its first checkpoint (absolute path)."""
    absolute = Path(os.path.abspath(out_dir))
    return absolute.with_name(f"{absolute.name}.new-{os.getpid() if pid is None else pid}")


def aside_name(path: Path) -> Path:
    """A free ``<path>.old-<time>[-n]`` next to ``path``."""
    path = Path(os.path.abspath(path))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.old-{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.old-{stamp}-{n}")
        n += 1
    return candidate


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM arriving inside the block are held back and delivered, in order, to the handlers in place
    before it once it ends, so that a pair of renames is never cut in half. (Python-level: a signal mask would
    not do, since the kernel hands a process's signal to any thread that does not block it.)"""
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
    """Atomically exchange two paths (``renameat2(RENAME_EXCHANGE)``); False where the kernel or libc lacks it.

    Kept by hand (``os`` has no ``renameat2``, so ctypes reaches libc's): the two-rename fallback with signals held
    and :func:`tidy_staging`'s recovery already lose nothing, but only the exchange leaves no instant at which
    ``--out-dir`` holds no run (a program reading the folder never finds it missing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
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
    """Put the run in ``staging`` at ``final`` and the run that was at ``final`` at a fresh ``.old-<time>`` name.

    Uninterruptible: SIGINT/SIGTERM are held back throughout, and where the kernel can exchange two names
    atomically there is no instant without a run at ``final``. ``old_lock`` (held on ``final``) and
    ``new_lock`` (held on ``staging``) follow their folders; ``old_lock`` is released afterwards.

    Returns:
        where the previous run now is.
    """
    final = Path(os.path.abspath(final))
    aside = aside_name(final)
    with signals_held():
        if _exchange(staging, final):
            os.rename(staging, aside)  # staging's name now holds the previous run
        else:
            os.rename(final, aside)
            os.rename(staging, final)
        if new_lock is not None:
            new_lock.directory = final
        if old_lock is not None:
            old_lock.directory = aside
            old_lock.release()
    return aside


def _staging_siblings(out_dir: Path) -> list[Path]:
    absolute = Path(os.path.abspath(out_dir))
    if not absolute.parent.is_dir():
        return []
    pattern = re.compile(re.escape(absolute.name) + r"\.new-\d+")
    return sorted(p for p in absolute.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir())


def tidy_staging(out_dir: Path, lock: RunLock, *, resume: bool, log: Callable[[str], None] = print) -> None:
    """Deal with the ``<out-dir>.new-<pid>`` folders of interrupted ``--overwrite`` runs; ``lock`` (held on
    ``out_dir``) guarantees that their processes have ended (a folder whose own lock is held is left alone).

    * no checkpoint in it: removed (its run was interrupted before its first epoch; nothing to resume);
    * a checkpoint and ``out_dir`` holds no run: with ``resume``, moved into place (the run an interrupted
      swap displaced), else moved aside to ``<out-dir>.old-<time>``;
    * a checkpoint and ``out_dir`` holds a run: moved aside to ``<out-dir>.old-<time>`` (never deleted).
    """
    for stale in _staging_siblings(out_dir):
        other = RunLock(stale)
        if (stale / LOCK_NAME).exists():
            try:
                other.acquire()
            except UsageError:
                continue  # a live process owns it (it is not ours to touch)
        try:
            if not _has_checkpoint(stale):
                other.release()
                shutil.rmtree(stale, ignore_errors=True)
                log(f"note: removed {stale} (left by an interrupted --overwrite run before its first checkpoint)")
            elif resume and not holds_a_run(out_dir) and set(os.listdir(out_dir)) <= {LOCK_NAME}:
                with signals_held():
                    lock.move_into(stale)  # out_dir is now empty: the rename below replaces it atomically
                    other.release()  # the stale folder's own lock file was replaced by ours
                    os.rename(stale, out_dir)
                    lock.directory = Path(out_dir)
                log(f"note: --resume: recovered the run that an interrupted --overwrite left in {stale}")
            else:
                aside = aside_name(out_dir)
                other.release()
                os.rename(stale, aside)
                log(f"note: moved {stale} (left by an interrupted --overwrite run) to {aside}")
        finally:
            other.release()
