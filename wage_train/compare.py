"""``--compare``'s bookkeeping: how far the JAX run is from the torch run, step by step and epoch by epoch.

Both runners train from torch's initial weights on the same batches; after each epoch the JAX accumulators are
compared bit for bit with ``C(torch accumulators)`` (torch keeps them unclipped, docs/contract.md §3), and so are
the test logits. The records go to ``compare.csv`` and ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wage_train.runner import Runner

__all__ = ["Comparison", "format_compare", "summary", "verdict"]


def _bits(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.int32)


class Comparison:
    """Counts the training steps whose logits differ (:meth:`step`) and appends a record per epoch to ``records``
    (a resumed run's, extended in place); torch's accumulators are clipped to ``bits_W`` before comparing."""

    def __init__(self, bits_W: int, records: list[dict[str, Any]]) -> None:
        self.bits_W, self.records, self.steps_differ = bits_W, records, 0

    def step(self, logits: dict[str, Any]) -> None:
        """One step's logits ``(B, K)`` by framework."""
        self.steps_differ += int(not np.array_equal(_bits(logits["torch"]), _bits(logits["jax"])))

    def end_epoch(self, runners: Sequence[Runner], steps: int, test_logits: dict[str, np.ndarray],
                  epoch: int) -> dict[str, Any]:
        """Record the epoch (``runners`` are ``[torch, jax]``) and start counting the next one's steps."""
        import torch

        from wage_torch.wage_qtorch import C

        torch_acc = [C(torch.from_numpy(a), self.bits_W).numpy() for a in runners[0].accumulators()]
        differ = sum(int((_bits(a) != _bits(b)).sum()) for a, b in zip(torch_acc, runners[1].accumulators(),
                                                                         strict=True))
        lt, lj = test_logits["torch"], test_logits["jax"]
        logits_differ = int((_bits(lt) != _bits(lj)).sum())
        record = {
            "epoch": epoch, "steps": steps, "steps_logits_differ": self.steps_differ,
            "accumulator_elements": sum(a.size for a in torch_acc), "accumulator_elements_differ": differ,
            "test_examples": len(lt), "test_predictions_differ": int((lt.argmax(-1) != lj.argmax(-1)).sum()),
            "test_logits_differ": logits_differ,
            "identical": self.steps_differ == 0 and differ == 0 and logits_differ == 0,
        }
        self.records.append(record)
        self.steps_differ = 0
        return record


def format_compare(c: dict[str, Any]) -> str:
    """The ``--compare`` line of one epoch record."""
    return (
        f"{'':>5}  jax==torch {'identical' if c['identical'] else 'DIFFERENT'}: train logits differ in "
        f"{c['steps_logits_differ']}/{c['steps']} steps; accumulators differ in "
        f"{c['accumulator_elements_differ']}/{c['accumulator_elements']} elements; test predictions differ in "
        f"{c['test_predictions_differ']}/{c['test_examples']} (test logits in {c['test_logits_differ']})"
    )


def summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``metrics.json``'s ``summary.compare``: identical in every epoch, else the first epoch that differs."""
    diverged = [c["epoch"] for c in records if not c["identical"]]
    return {"identical_all_epochs": not diverged, "first_divergent_epoch": diverged[0] if diverged else None}


def verdict(records: Sequence[dict[str, Any]]) -> str:
    """The run's last line about the comparison."""
    s = summary(records)
    return "jax vs torch: " + ("identical trajectories in every epoch" if s["identical_all_epochs"]
                               else f"trajectories differ from epoch {s['first_divergent_epoch']}")
