"""The parity corpus's cases on the device and on the host CPU, bit for bit (a GPU-only phase of the suite).

Every case of ``wage_parity.cases`` (every public wage_jax quantizer) runs as one ``jax.jit`` program on
both backends, in this process, with the same inputs and explicit draws; outputs are compared on their
float32 bit patterns. No torch: the torch reference is never computed, and the stochastic cases' draws
come from NumPy (``wage_parity.corpus.numpy_draws``). ``keyed_cases`` adds the stochastic functions
drawing from PRNG keys, so the device's own random bits are compared too.

``QW`` calls whose ``scale`` is not a power of two are counted apart (``"QW, scale not a power of two"``):
there ``QW`` divides (a power-of-two scale is multiplied by its exact reciprocal), and XLA:GPU may compile
a float32 division to an approximate instruction (docs/contract.md).
"""

from __future__ import annotations

import math
import re
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np

import wage_jax as wj
from benchmarks.core import Budget, differing_elements, log
from wage_parity.cases import FUNCTIONS, Call, Case, cases
from wage_parity.corpus import fixed_point_inputs, gradient_like, numpy_draws

__all__ = ["DIVISION", "keyed_cases", "run_parity", "select_cases"]

DIVISION = "QW, scale not a power of two"


def _keyed(name: str, fn: Any, *arrays: np.ndarray, outputs: tuple[str, ...] = ("out",)) -> Call:
    data = np.asarray(jax.random.key_data(jax.random.key(2024 + zlib.crc32(name.encode()) % 1000)))

    def jax_fn(*a):
        return fn(*a[:-1], key=jax.random.wrap_key_data(a[-1]))

    return Call(name, lambda: (), jax_fn, lambda: (*arrays, data), outputs)


def keyed_cases() -> list[Case]:
    """Each stochastic function drawing from a PRNG key (2- and 8-bit formats)."""
    x8, x2 = fixed_point_inputs(8, 7, seed=8), fixed_point_inputs(2, 1, seed=2)
    g8 = gradient_like(x8, 8, 0, seed=8)
    finite8 = np.where(np.isfinite(x8), x8, np.float32(0.0)).astype(np.float32)

    def wage(x, g, key):
        y, vjp = jax.vjp(lambda v: wj.wage_quantize(v, 8, 8, "stochastic", "stochastic", key=key), x)
        return y, vjp(g)[0]

    return [
        Case("fixed_point_quantize", "key", (_keyed("wl=8 stochastic", lambda x, key: wj.fixed_point_quantize(
            x, 8, 7, symmetric=True, rounding="stochastic", key=key), x8),)),
        Case("QW", "key", (_keyed("scale=4 stochastic", lambda x, key: wj.QW(x, 2, 4.0, "stochastic", key=key), x2),)),
        Case("QG", "key", (_keyed("lr=8 stochastic", lambda x, key: wj.QG(x, 8, 8.0, "stochastic", key=key), finite8),
                           _keyed("lr=0.1 stochastic", lambda x, key: wj.QG(x, 8, 0.1, "stochastic", key=key), g8))),
        Case("wage_quantize", "key", (_keyed("8/8 stochastic", wage, x8, g8, outputs=("out", "grad")),)),
    ]


def select_cases(smoke: bool) -> list[Case]:
    """The corpus's cases of every function, then the keyed ones; ``smoke``: QW's, QG's and wage_quantize's
    case with the fewest calls, and one keyed case."""
    selected: list[Case] = []
    for function in ("QW", "QG", "wage_quantize") if smoke else FUNCTIONS:
        found = cases(function, draws=numpy_draws)
        if smoke:
            found = [min((c for c in found if any(np.size(a) for a in c.calls[0].jax_args() if a is not None)),
                         key=lambda c: len(c.calls))]
        selected += found
    return selected + keyed_cases()[1:2] if smoke else selected + keyed_cases()


def _group(case: Case, call: Call) -> str:
    """The row a call counts in: its function, or ``DIVISION`` for a QW scale that is not a power of two."""
    found = re.match(r"scale=(\S+)", call.name)  # printed with 6 digits: 2^40 reads 1.09951e+12
    if case.function == "QW" and found and abs(math.log2(float(found.group(1))) % 1.0 - 0.5) < 0.5 - 1e-4:
        return DIVISION
    return case.function


def _run_on(case: Case, args: list[tuple], device: Any) -> list[list[np.ndarray]]:
    def run(all_args):
        return [tuple(o) if isinstance(o, (tuple, list)) else (o,)
                for o in (c.jax_fn(*a) for c, a in zip(case.calls, all_args, strict=True))]

    with jax.default_device(device):
        return [[np.asarray(o) for o in outs] for outs in jax.jit(run)(jax.device_put(args, device))]


def _compare(case: Case, device: Any, host: Any) -> list[tuple[str, int, int, str]]:
    """``(group, elements, differing, where)`` per output of every call."""
    args = [tuple(c.jax_args()) for c in case.calls]
    on_device, on_host = _run_on(case, args, device), _run_on(case, args, host)
    out = []
    for call, outs_d, outs_h in zip(case.calls, on_device, on_host, strict=True):
        for name, d, h in zip(call.outputs, outs_d, outs_h, strict=True):
            if case.nan_equal:  # NaN payloads are not part of the contract
                d, h = (np.where(np.isnan(a), np.float32(np.nan), a) if a.dtype == np.float32 else a for a in (d, h))
            out.append((_group(case, call), int(d.size), differing_elements(d, h), f"{case.id} {call.name} {name}"))
    return out


def run_parity(device: Any, host: Any, smoke: bool, budget: Budget, workers: int, limit_s: float) -> dict[str, Any]:
    """Compare the selected cases on both backends (``workers`` threads); no case starts after ``limit_s``."""
    t0 = time.monotonic()
    selected = select_cases(smoke)
    log(f"  {len(selected)} cases ({sum(len(c.calls) for c in selected)} calls), {workers} threads")

    def job(case: Case):
        if time.monotonic() - t0 > limit_s or budget.remaining() <= 0:
            return None
        return _compare(case, device, host)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        done = [r for r in pool.map(job, selected) if r is not None]
    skipped = len(selected) - len(done)
    if skipped:
        budget.skipped.append(f"parity: {skipped} of {len(selected)} cases (limit {limit_s:.0f} s or budget)")
    groups: dict[str, dict[str, int]] = {}
    failures = []
    for outputs in done:
        for group, n, differ, where in outputs:
            g = groups.setdefault(group, {"elements": 0, "differ": 0})
            g["elements"] += n
            g["differ"] += differ
            if differ:
                failures.append(f"{where}: {differ} of {n} elements differ")
    return {"groups": groups, "failures": failures[:50], "cases run": len(done), "cases selected": len(selected),
            "seconds": time.monotonic() - t0}
