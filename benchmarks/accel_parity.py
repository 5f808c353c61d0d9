"""Phase (a) of ``benchmarks.accelerator``: the parity corpus's quantizer cases on two backends, bit for bit.

Every case of ``wage_parity.cases`` (every public wage_jax function: ``fixed_point_quantize``,
``fixed_point_quantize_with_mask``, ``shift``, ``C``, ``QW``, ``QG``, ``wage_quantize`` forward and
backward) is run as one ``jax.jit`` program on the device under test and on the host CPU backend, in
the same process, with the same inputs and the same explicit draws (``noise``); the outputs are
compared on their float32 bit patterns. Only the wage_jax side of the cases is used: the torch
reference is never computed, so neither qtorch nor wage_torch is needed (torch is, for the draws).

The corpus's stochastic cases take explicit draws; ``keyed_cases`` adds the same functions drawing
from PRNG keys (``wage_jax._src.fixed_point.uniform``, the unrolled Threefry hash the training steps use),
so that the device's own random bits are compared too.

``--smoke`` runs, per function, the case with the fewest calls, and the keyed cases.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np

import wage_jax as wj
from benchmarks.accel_common import Budget, Devices, differing_elements, log
from wage_parity.cases import FUNCTIONS, Call, Case, cases
from wage_parity.corpus import fixed_point_inputs, gradient_like

__all__ = ["keyed_cases", "run_parity", "select_cases"]

_KEY_SEED = 2024
# The torch draws of the corpus's stochastic cases come from torch's one global generator: taken under a
# lock, so that the cases running in parallel threads each get their own reproducible draws.
_ARGS_LOCK = threading.Lock()


def _keyed_call(name: str, fn: Callable[..., Any], x: np.ndarray, *extra: np.ndarray, outputs=("out",)) -> Call:
    key_data = np.asarray(jax.random.key_data(jax.random.key(_KEY_SEED + zlib.crc32(name.encode()) % 1000)))

    def args():
        return (x, *extra, key_data)

    def jax_fn(*a):
        *arrays, data = a
        return fn(*arrays, key=jax.random.wrap_key_data(data))

    return Call(name, lambda: (), jax_fn, args, outputs)


def keyed_cases() -> list[Case]:
    """Each stochastic function drawing from a PRNG key (one case per function, 2- and 8-bit formats)."""
    x8 = fixed_point_inputs(8, 7, seed=8)
    x2 = fixed_point_inputs(2, 1, seed=2)
    g8 = gradient_like(x8, 8, 0, seed=8)
    finite8 = np.where(np.isfinite(x8), x8, np.float32(0.0)).astype(np.float32)

    def wage_fwd_bwd(bits_A: int, bits_E: int, A_mode: str, E_mode: str):
        def fn(x, g, key):
            y, vjp = jax.vjp(lambda v: wj.wage_quantize(v, bits_A, bits_E, A_mode, E_mode, key=key), x)
            return y, vjp(g)[0]

        return fn

    return [
        Case("fixed_point_quantize", "key", (
            _keyed_call("wl=8 fl=7 stochastic", lambda x, key: wj.fixed_point_quantize(
                x, 8, 7, symmetric=True, rounding="stochastic", key=key), x8),
            _keyed_call("wl=2 fl=1 stochastic", lambda x, key: wj.fixed_point_quantize(
                x, 2, 1, symmetric=True, rounding="stochastic", key=key), x2),
        )),
        Case("fixed_point_quantize_with_mask", "key", (
            _keyed_call("wl=8 fl=7 stochastic", lambda x, key: wj.fixed_point_quantize_with_mask(
                x, 8, 7, symmetric=True, rounding="stochastic", key=key), x8, outputs=("out", "mask")),
        )),
        Case("QW", "key", (
            _keyed_call("bits=2 scale=1 stochastic", lambda x, key: wj.QW(x, 2, 1.0, "stochastic", key=key), x2),
            _keyed_call("bits=2 scale=4 stochastic", lambda x, key: wj.QW(x, 2, 4.0, "stochastic", key=key), x2),
            _keyed_call("bits=8 scale=1 stochastic", lambda x, key: wj.QW(x, 8, 1.0, "stochastic", key=key), x8),
        )),
        Case("QG", "key", (
            _keyed_call("bits=8 lr=8 stochastic", lambda x, key: wj.QG(x, 8, 8.0, "stochastic", key=key), finite8),
            _keyed_call("bits=8 lr=0.1 stochastic", lambda x, key: wj.QG(x, 8, 0.1, "stochastic", key=key), g8),
        )),
        Case("wage_quantize", "key", (
            _keyed_call("8/8 stochastic/stochastic", wage_fwd_bwd(8, 8, "stochastic", "stochastic"), x8, g8,
                        outputs=("out", "grad")),
            _keyed_call("8/8 nearest/stochastic", wage_fwd_bwd(8, 8, "nearest", "stochastic"), x8, g8,
                        outputs=("out", "grad")),
        )),
    ]


def select_cases(smoke: bool) -> list[Case]:
    """The corpus's cases of every function (with ``smoke``: the one with the fewest calls), then the keyed ones."""
    selected: list[Case] = []
    for function in FUNCTIONS:
        found = cases(function)
        if smoke:
            found = [next(c for c in sorted(found, key=lambda c: len(c.calls)) if _has_elements(c))]
        selected += found
    return selected + keyed_cases()


def _has_elements(case: Case) -> bool:
    """Whether the case's first call has a non-empty input (the corpus also holds empty tensors)."""
    return any(np.size(a) > 0 for a in case.calls[0].jax_args() if a is not None)


def _as_tuple(out: object) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _run_on(case: Case, args: Sequence[tuple], device: Any) -> list[list[np.ndarray]]:
    """The case's calls as one jitted program on ``device`` (inputs committed there); NumPy outputs."""

    def run(all_args):
        return [_as_tuple(c.jax_fn(*a)) for c, a in zip(case.calls, all_args, strict=True)]

    with jax.default_device(device):
        out = jax.jit(run)(jax.device_put(list(args), device))
        return [[np.asarray(o) for o in outs] for outs in out]


def _nan_canonical(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.float32:
        return a
    return np.where(np.isnan(a), np.float32(np.nan), a)


def _compare_case(case: Case, devices: Devices) -> dict[str, Any]:
    with _ARGS_LOCK:
        args = [tuple(c.jax_args()) for c in case.calls]
    t0 = time.perf_counter()
    on_accel = _run_on(case, args, devices.accel)
    t1 = time.perf_counter()
    on_host = _run_on(case, args, devices.host)
    t2 = time.perf_counter()
    compared = differ = 0
    failures = []
    for call, outs_a, outs_h in zip(case.calls, on_accel, on_host, strict=True):
        for name, a, h in zip(call.outputs, outs_a, outs_h, strict=True):
            if case.nan_equal:  # NaN payloads are not part of the contract (the corpus's NaN/Inf cases)
                a, h = _nan_canonical(a), _nan_canonical(h)
            n = differing_elements(a, h)
            compared += int(a.size)
            differ += n
            if n:
                failures.append(f"{case.id} {call.name} {name}: {n} of {a.size} elements differ")
    return {
        "function": case.function, "case": case.id, "calls": len(case.calls), "compared": compared,
        "differ": differ, "failures": failures, "accel_s": t1 - t0, "host_s": t2 - t1,
    }


def run_parity(devices: Devices, smoke: bool, budget: Budget, workers: int, deadline_s: float) -> dict[str, Any]:
    """Compare every selected case on both backends; stop starting new cases after ``deadline_s`` seconds.

    Returns ``{"functions": {name: {cases, calls, compared, differ}}, "failures": [...], "cases run",
    "cases selected", "seconds", "workers"}``; cases left out for time are counted in ``"cases skipped"``.
    """
    t0 = time.perf_counter()
    selected = select_cases(smoke)
    log(f"  parity: {len(selected)} cases ({sum(len(c.calls) for c in selected)} calls), {workers} threads")
    stop_at = time.monotonic() + deadline_s

    def job(case: Case) -> dict[str, Any] | None:
        if time.monotonic() > stop_at:
            return None
        return _compare_case(case, devices)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        rows = list(pool.map(job, selected))
    done = [r for r in rows if r is not None]
    skipped = len(rows) - len(done)
    if skipped:
        budget.skipped.append(f"parity: {skipped} of {len(rows)} cases (time limit {deadline_s:.0f} s)")
    functions: dict[str, dict[str, int]] = {}
    for r in done:
        f = functions.setdefault(r["function"], {"cases": 0, "calls": 0, "compared": 0, "differ": 0})
        for k in ("calls", "compared", "differ"):
            f[k] += r[k]
        f["cases"] += 1
    failures = [msg for r in done for msg in r["failures"]]
    slowest = sorted(done, key=lambda r: -(r["accel_s"] + r["host_s"]))[:5]
    return {
        "functions": functions,
        "compared": sum(f["compared"] for f in functions.values()),
        "differ": sum(f["differ"] for f in functions.values()),
        "failures": failures[:50],
        "cases selected": len(rows),
        "cases run": len(done),
        "cases skipped": skipped,
        "workers": workers,
        "seconds": time.perf_counter() - t0,
        "accel compile+run s": sum(r["accel_s"] for r in done),
        "host compile+run s": sum(r["host_s"] for r in done),
        "slowest cases": [{"case": r["case"], "accel_s": round(r["accel_s"], 2), "host_s": round(r["host_s"], 2)}
                          for r in slowest],
    }
