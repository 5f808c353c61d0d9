"""The ``wage-train`` command and its pieces: run configuration, the JAX and torch runners, checkpoints, metrics
and plots, and the torch<->Flax weight conversion. The data sets come from :mod:`wage_data`.

Each framework is imported only when a run asks for it: a JAX run needs neither torch nor qtorch. Needs the
``train`` extra (scikit-learn, scipy, tqdm, matplotlib, orbax-checkpoint, pooch).

A saved run predicts in one call: ``wage_train.load_run(run_dir)`` (:class:`wage_train.saved_run.LoadedRun`).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["LoadedRun", "RunConfig", "load_run"]
_LAZY = {"load_run": "saved_run", "LoadedRun": "saved_run", "RunConfig": "config"}


def __getattr__(name: str) -> Any:
    # Imported on first use: ``import wage_train`` stays free of JAX, torch and the data readers.
    if name in _LAZY:
        return getattr(importlib.import_module(f"wage_train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'wage_train' has no attribute {name!r}")
