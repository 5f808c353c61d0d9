"""Shared helpers for the benchmarks: timing (warm-up, then the median of repeats), the machine, memory.

Every figure is measured in one run of the script: nothing is cached between runs, and no number in a
printed table comes from anywhere but the process (or its workers) that prints it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "CpuShare",
    "Timing",
    "format_table",
    "load_average",
    "machine_info",
    "peak_rss_delta",
    "si",
    "steady_malloc",
    "time_call",
]


@dataclass(frozen=True)
class Timing:
    """Median and spread of ``reps`` timed calls (seconds), after ``warmup`` untimed ones."""

    median: float
    minimum: float
    maximum: float
    reps: int

    @property
    def spread(self) -> float:
        """``(max - min) / median``: how noisy the repeats were (other processes share the cores)."""
        return (self.maximum - self.minimum) / self.median if self.median > 0 else 0.0


def time_call(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    min_reps: int = 3,
    max_reps: int = 50,
    budget_s: float = 0.4,
) -> Timing:
    """Time ``fn()`` (which must block until its work is done) and return the median of the repeats.

    ``warmup`` calls run first (compilation, caches, page faults); the number of timed repeats is chosen
    from the last warm-up call so that they take about ``budget_s`` seconds, within ``[min_reps, max_reps]``.
    """
    last = 0.0
    for _ in range(max(warmup, 1)):
        t0 = time.perf_counter()
        fn()
        last = time.perf_counter() - t0
    reps = int(min(max_reps, max(min_reps, budget_s / max(last, 1e-9))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times), max(times), reps)


class CpuShare:
    """CPU time that *other* processes used between ``start()`` and ``stop()``, from ``/proc/stat``.

    The machine's busy time (all cores) minus this process's and its waited-for children's CPU time
    (``getrusage``). ``stop()`` returns ``(others_core_s, wall_s, cores)``; ``others_core_s / wall_s``
    is how many cores, on average, something else kept busy during the benchmark.
    """

    def __init__(self) -> None:
        self._t0 = self._busy0 = self._own0 = 0.0

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        guest = sum(fields[8:10]) if len(fields) > 9 else 0.0  # already counted in user/nice
        return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        import resource

        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def start(self) -> CpuShare:
        self._t0, self._busy0, self._own0 = time.perf_counter(), self._busy(), self._own()
        return self

    def stop(self) -> tuple[float, float, int]:
        wall = time.perf_counter() - self._t0
        others = max(0.0, (self._busy() - self._busy0) - (self._own() - self._own0))
        return others, wall, os.cpu_count() or 1


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (``uptime``); above the core count, others compete for the CPU."""
    return os.getloadavg()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags)
    except OSError:
        pass
    return ""


def machine_info() -> dict[str, str]:
    """CPU model and flags, cores usable by this process, memory, jax backend/devices, torch threads."""
    info = {
        "cpu": _cpu_model(),
        "cpu flags": _cpu_flags(),
        "cores (usable)": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "python": platform.python_version(),
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory"] = f"{pages * size / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    try:
        import jax

        devices = jax.devices()
        info["jax"] = f"{jax.__version__}, backend {jax.default_backend()}, devices {[d.device_kind for d in devices]}"
    except Exception as exc:  # noqa: BLE001 - report, do not fail
        info["jax"] = f"unavailable ({exc})"
    try:
        import torch

        info["torch"] = f"{torch.__version__}, {torch.get_num_threads()} threads, cuda {torch.cuda.is_available()}"
    except Exception as exc:  # noqa: BLE001
        info["torch"] = f"unavailable ({exc})"
    return info


# ---- memory: peak resident set size over a piece of work --------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -3, -4, -8


def steady_malloc() -> bool:
    """Make glibc keep and reuse freed memory, so that repeated calls stop page-faulting fresh buffers.

    By default glibc serves large blocks (XLA's output and temporary buffers, torch's tensors) with
    ``mmap`` and returns them to the kernel on ``free``: every call then touches new pages, and each
    first touch of a 4 KiB page is a page fault (about 1-2 us on this kind of VM: +15 ms for the 8192
    pages of a 2^22-element WAGE quantizer's two outputs). Measured that way, a benchmark mostly times
    the kernel zeroing pages, and bimodally. Here: one arena, no ``mmap``, no trimming, as a long
    training run reaches by itself once its buffers are recycled. Call before jax or torch start
    threads. Returns False where glibc's ``mallopt`` is not available (then nothing changes).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_ARENA_MAX, 1) and libc.mallopt(_M_MMAP_MAX, 0)
    ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    return bool(ok)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_rss_delta(fn: Callable[[], object], calls: int = 2) -> float | None:
    """Peak RSS above the RSS before ``calls`` calls of ``fn`` (bytes); None where Linux's counters are missing.

    Measures the transient working memory of ``fn`` (activations, gradients, temporaries), not what stays
    resident between calls (parameters). So that freed blocks leave the RSS instead of lingering in
    malloc's arenas, glibc is switched to serving every block of 64 KiB or more with ``mmap`` (released on
    ``free``) and trimmed first; the peak counter (``VmHWM``) is reset through ``/proc/self/clear_refs``.
    This changes the allocator's behaviour for the rest of the process: call it after the timings.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_MAX, 65536)
        libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)
        fn()  # one call under the new allocator policy, so that nothing left over from before is counted
        libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_kb("VmRSS")
        for _ in range(calls):
            fn()
        return (_status_kb("VmHWM") - base) * 1024.0
    except (OSError, KeyError, AttributeError):
        return None


# ---- formatting ---------------------------------------------------------------------------------------------


def si(value: float, unit: str = "", digits: int = 3) -> str:
    """``1.23e9 -> '1.23 G'`` + unit."""
    if value != value:  # NaN
        return "n/a"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}".rstrip()


def format_table(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """A plain-text (aligned) or markdown table."""
    cells = [header, *rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    if markdown:
        lines = ["| " + " | ".join(str(c) for c in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        return "\n".join(lines)
    fmt = "  ".join("{:>" + str(w) + "}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*(str(c) for c in r)) for r in rows]
    return "\n".join(lines)
