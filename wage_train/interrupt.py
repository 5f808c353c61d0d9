"""``wage-train``'s answer to SIGINT/SIGTERM before training starts: one line, status 130, at once.

Installed by :mod:`wage_train.__main__` before the slow imports and by :func:`wage_train.cli.main` until training
starts, when :class:`wage_train.loop.StopSignals` takes over. It exits with ``os._exit``: a ``KeyboardInterrupt``
raised inside a C extension's import or a garbage-collector callback would crash it or be lost."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

CREATED: list[Path] = []  # folders this invocation created before training, removed on a signal if still unused


def stop_before_training(signum: int, frame: object) -> None:
    """The signal handler; the folders in :data:`CREATED` go when they hold nothing of a run (a staging folder
    holds only its mark)."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    for folder in reversed(CREATED):
        with contextlib.suppress(OSError):
            if len(os.listdir(folder)) <= 1 and not (folder / "config.json").exists():
                shutil.rmtree(folder)
    os.write(2, b"wage-train: interrupted before training started; nothing to resume from this invocation\n")
    os._exit(130)
