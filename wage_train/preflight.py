"""Checks and answers that come before a ``wage-train`` run touches data or disk.

* :func:`require_torch`: ``--framework torch`` / ``--compare`` without torch installed end in one line naming
  the ``torch`` extra (exit 2), before any output directory is created;
* :func:`print_config`: ``--print-config`` prints the resolved configuration as JSON and exits.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from wage_train.config import UsageError

__all__ = ["print_config", "require_torch"]


def require_torch(framework: str) -> None:
    """Import torch now, or raise :class:`UsageError` in one line saying how to install it.

    Args:
        framework: the run's ``framework`` (``"torch"`` or ``"compare"``), named in the message.

    Raises:
        UsageError: torch cannot be imported (not installed, or broken: the import's own first line is quoted).
    """
    try:
        import torch  # noqa: F401
    except ImportError as e:  # also a torch whose own import fails (a missing shared library)
        option = "--compare" if framework == "compare" else f"--framework {framework}"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(
            f"{option} needs torch, which cannot be imported ({reason}): install the torch extra, "
            "pip install \".[torch]\" from a clone (install your torch build first), or train with --framework jax"
        ) from None


def print_config(cfg: dict[str, Any]) -> NoReturn:
    """Print ``cfg`` (the resolved configuration, preset and defaults applied) as JSON, one key a line; exit 0.

    ``lr`` is ``null`` for ``--float`` without ``--lr``: its default depends on the data's image size, known only
    once the data is read.
    """
    # One key per line, each value on its line (lists stay readable: "bits": [2, 8, 8, 8]); valid JSON.
    rows = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in cfg.items()]
    sys.stdout.write("{\n" + ",\n".join(rows) + "\n}\n")
    sys.stdout.flush()
    raise SystemExit(0)
