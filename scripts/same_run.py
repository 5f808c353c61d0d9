"""Check that two ``wage-train`` runs of one configuration agree bit for bit: every number of ``metrics.json``
(but the timings and the output folder) and every array of ``weights.npz``.

    python scripts/same_run.py RUN_DIR_A RUN_DIR_B

Prints one line per difference and exits 1 if there is any, else prints ``identical`` and exits 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

TIMINGS = {"time_s", "images_per_s", "train_time_s", "eval_time_s"}
WHERE = {"out_dir", "name", "data_dir"}  # where each run was written or read, not what it computed


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMINGS | WHERE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def differences(a: Path, b: Path) -> list[str]:
    """The differences between the runs in ``a`` and ``b`` (empty: bit for bit the same)."""
    out = []
    ma, mb = (_strip(json.loads((d / "metrics.json").read_text())) for d in (a, b))
    for key in sorted(set(ma) | set(mb)):
        if ma.get(key) != mb.get(key):
            out.append(f"metrics.json {key} differs")
    with np.load(a / "weights.npz") as wa, np.load(b / "weights.npz") as wb:
        if sorted(wa.files) != sorted(wb.files):
            out.append(f"weights.npz keys {sorted(wa.files)} != {sorted(wb.files)}")
        for k in sorted(set(wa.files) & set(wb.files)):
            if wa[k].dtype != wb[k].dtype or wa[k].tobytes() != wb[k].tobytes():
                out.append(f"weights.npz {k} differs")
    return out


if __name__ == "__main__":
    found = differences(Path(sys.argv[1]), Path(sys.argv[2]))
    print("\n".join(found) or "identical")
    sys.exit(1 if found else 0)
