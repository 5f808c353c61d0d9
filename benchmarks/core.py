"""The measurement core of the benchmark suite: timing, budget, bit counts, memory per phase, result rows.

Every figure the suite prints is measured in the run that prints it. Timings dispatch many calls per
synchronisation (``time_per_call``), so a fast operation is not charged the host's round trip; results
are medians over repeats. Each figure becomes a row ``{name, figure, unit, ratio, target, passed}``
(``row``): ``target`` reads ``"ratio <= 1.05"`` or ``"figure == 0"``, ``passed`` is True/False, or None
where no target applies.

Imports jax and numpy only (the accelerator machine has no qtorch; torch is looked up, never required).
"""

from __future__ import annotations

import operator
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

__all__ = ["Budget", "CompileCounter", "PhaseMemory", "Timing", "differing_elements", "log", "median", "row",
           "table", "time_per_call", "tree_differing_elements"]

_OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq, "<": operator.lt, ">": operator.gt}


def log(message: str) -> None:
    """A progress line, printed at once (the output is read while the command runs)."""
    print(message, flush=True)


def median(values: Any) -> float:
    s = sorted(values)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def row(name: str, figure: float | None, unit: str, *, ratio: float | None = None, target: str | None = None,
        note: str = "") -> dict[str, Any]:
    """One result: ``target`` (``"figure >= 17000"``, ``"ratio <= 1.05"``) is checked here; None: no target."""
    passed = None
    if target is not None and figure is not None:
        which, op, value = target.split()
        measured = ratio if which == "ratio" else figure
        passed = None if measured is None else bool(_OPS[op](measured, float(value)))
    return {"name": name, "figure": figure, "unit": unit, "ratio": ratio, "target": target, "passed": passed,
            "note": note}


@dataclass
class Budget:
    """The run's wall-clock budget: work asks ``allows(estimate_s, what)`` first; ``skipped`` says what did not fit."""

    total_s: float
    start: float = field(default_factory=time.monotonic)
    skipped: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return self.total_s - self.elapsed()

    def allows(self, estimate_s: float, what: str) -> bool:
        ok = self.remaining() >= estimate_s
        if not ok:
            self.skipped.append(f"{what} (needs ~{estimate_s:.0f} s, {max(self.remaining(), 0):.0f} s left)")
        return ok


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median, min and max over ``reps`` repeats of ``calls`` calls each, one sync per repeat."""

    median: float
    minimum: float
    maximum: float
    calls: int
    reps: int


def time_per_call(fn: Callable[[], Any], *, reps: int = 5, target_s: float = 0.05, max_calls: int = 1000,
                  sync: Callable[[Any], Any] = jax.block_until_ready) -> Timing:
    """Time ``fn()`` (which may return before its work is done) dispatching many calls per synchronisation.

    Two warm-up calls (compilation, allocator), then one synchronised call sets ``calls`` so that a repeat
    lasts about ``target_s``; each repeat dispatches ``calls`` calls and waits for the last one's result
    (a device runs one program after another, in order). Synchronising after every call would add the
    dispatch and the host round trip to each: at 2^24 elements on a GPU that is as long as the work.
    """
    sync(fn())
    sync(fn())
    t0 = time.perf_counter()
    sync(fn())
    calls = int(min(max_calls, max(1, target_s / max(time.perf_counter() - t0, 1e-9))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = None
        for _ in range(calls):
            out = fn()
        sync(out)
        times.append((time.perf_counter() - t0) / calls)
    return Timing(median(times), min(times), max(times), calls, reps)


def differing_elements(a: Any, b: Any) -> int:
    """How many elements of two arrays differ in their bit patterns (float32 compared as int32; all on a mismatch)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return int(max(a.size, b.size))
    if a.dtype == np.float32:
        return int(np.count_nonzero(a.view(np.int32) != b.view(np.int32)))
    return int(np.count_nonzero(a != b))


def tree_differing_elements(a: Any, b: Any) -> int:
    """``differing_elements`` summed over the leaves of two pytrees of the same structure."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    if len(la) != len(lb):
        raise ValueError(f"the trees differ in structure: {len(la)} and {len(lb)} leaves")
    return sum(differing_elements(x, y) for x, y in zip(la, lb, strict=True))


class CompileCounter:
    """Counts XLA compilations (and their seconds) through jax's ``backend_compile_duration`` monitoring event.

    Every executable the run builds is counted, the small eager ones (a ``device_put``'s, a key split's)
    included; a compilation served from a persistent cache is not one.
    """

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self) -> None:
        self.count, self.seconds = 0, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **_: Any) -> None:
        if event == self.EVENT:
            self.count += 1
            self.seconds += duration

    def close(self) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)


def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PhaseMemory:
    """The memory peak of one phase: on a device, the rise of its allocator's peak above what was in use when
    the phase began; on the host, the resident-set peak (``VmHWM``, reset through ``/proc/self/clear_refs``)
    above the resident set at the start. A device's peak counter cannot be reset: a phase whose peak stays
    under an earlier phase's reads ``None`` with ``"below earlier peak"``."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.stats0 = self._stats()
        self.rss0 = None
        if self.stats0 is None:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS
                self.rss0 = _status_kb("VmRSS")
            except OSError:
                pass

    def _stats(self) -> dict[str, int] | None:
        try:
            stats = self.device.memory_stats()
        except Exception:  # noqa: BLE001 - not every backend keeps statistics (the CPU does not)
            return None
        return stats if stats and "peak_bytes_in_use" in stats else None

    def stop(self) -> dict[str, Any]:
        if self.stats0 is not None:
            stats = self._stats() or {}
            peak, peak0 = stats.get("peak_bytes_in_use", 0), self.stats0["peak_bytes_in_use"]
            rise = peak - self.stats0.get("bytes_in_use", 0) if peak > peak0 else None
            return {"kind": "device allocator", "peak MB": None if rise is None else rise / 2**20,
                    "below earlier peak": rise is None, "process peak MB": peak / 2**20}
        hwm = _status_kb("VmHWM")
        if self.rss0 is None or hwm is None:
            return {"kind": "unavailable", "peak MB": None}
        return {"kind": "host RSS", "peak MB": (hwm - self.rss0) / 1024}


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def fmt(value: Any, spec: str = "{:.4g}") -> str:
    """``value`` formatted, ``-`` for None."""
    if value is None:
        return "-"
    try:
        return spec.format(value)
    except (TypeError, ValueError):
        return str(value)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
