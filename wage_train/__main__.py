"""``python -m wage_train`` and the ``wage-train`` command (:func:`wage_train.cli.main`), one line on Ctrl-C from
the first instant: importing the command's modules takes seconds, and a signal then would print a traceback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

CREATED: list[Path] = []  # folders this invocation created before training, removed on a signal if still unused


def stop_before_training(signum: int, frame: object) -> None:
    """SIGINT/SIGTERM before training starts: one line, status 130, at once (a ``KeyboardInterrupt`` raised
    inside an import of a C extension or a garbage-collector callback would crash it or be lost). The folders
    in :data:`CREATED` go when they hold nothing of a run (a staging folder holds only its mark)."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    for folder in reversed(CREATED):
        with contextlib.suppress(OSError):
            if len(os.listdir(folder)) <= 1 and not (folder / "config.json").exists():
                shutil.rmtree(folder)
    os.write(2, b"wage-train: interrupted before training started; nothing to resume from this invocation\n")
    os._exit(130)


def main() -> None:
    """Import :mod:`wage_train.cli` with SIGINT/SIGTERM answered in one line (status 130), then run it."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop_before_training)
    from wage_train.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
