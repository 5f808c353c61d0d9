"""Per-epoch checkpoints of a ``wage-train`` run: ``checkpoints/epoch_NNNN`` and a ``latest`` pointer."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from wage_train.reporting import write_json

__all__ = ["latest_checkpoint", "save_checkpoint"]


def save_checkpoint(root: Path, epoch: int, runners: list[Any], state: dict[str, Any]) -> None:
    """Write ``root/epoch_NNNN`` (runners + state.json), point ``root/latest`` at it, drop older epochs."""
    target = root / f"epoch_{epoch:04d}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for r in runners:
        r.save(target)
    write_json(target / "state.json", state)
    tmp = root / "latest.tmp"
    tmp.write_text(target.name + "\n")
    tmp.replace(root / "latest")
    for old in root.glob("epoch_*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    latest = root / "latest"
    if not latest.is_file():
        return None
    path = root / latest.read_text().strip()
    return path if (path / "state.json").is_file() else None
