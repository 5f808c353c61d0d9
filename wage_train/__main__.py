"""``python -m wage_train`` and the ``wage-train`` command (:func:`wage_train.cli.main`), one line on Ctrl-C from
the first instant: importing the command's modules takes seconds, and a signal then would print a traceback."""

from __future__ import annotations

import signal

from wage_train.interrupt import stop_before_training


def main() -> None:
    """Import :mod:`wage_train.cli` with SIGINT/SIGTERM answered in one line (status 130), then run it."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, stop_before_training)
    from wage_train.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
