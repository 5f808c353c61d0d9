"""Quantizer throughput on the device against its measured copy bandwidth, and its float32 matmul rate.

Part of phase (c) of ``benchmarks.accelerator``. Each operation is jitted on the device under test and
timed with ``benchmarks.common.time_call`` (warm-up, then the median of repeats, each waiting for the
result). ``bytes`` is the least memory traffic the operation needs (read its inputs, write its outputs,
the random draws generated in registers); ``GB/s`` is those bytes over the median time, and ``of copy``
relates it to the stream ``y = 2 x`` of the same size (read 4 bytes, write 4 bytes per element), the
device's practical bandwidth ceiling. A fused quantizer reaches about 1.0; 0.5 means twice the traffic
(or time) of one pass.

The matmul rows time an ``n x n`` float32 product at ``Precision.HIGHEST`` (what the WAGE layers ask
for: full float32 products, on NVIDIA GPUs without TF32 tensor cores) and at the default precision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import wage_jax as wj
from benchmarks.accel_common import Budget
from benchmarks.common import time_call

__all__ = ["OPS", "measure_matmul", "measure_quantizers"]


@dataclass(frozen=True)
class Op:
    """A jittable ``fn(x, g, key)`` and its least memory traffic in bytes per element."""

    name: str
    fn: Callable[[jax.Array, jax.Array, jax.Array], Any]
    bytes_per_elem: float


def _wage_fwd_bwd(x, g, key):
    y, vjp = jax.vjp(lambda v: wj.wage_quantize(v, 8, 8, "nearest", "stochastic", key=key), x)
    return y, vjp(g)[0]


OPS = (
    Op("copy (y = 2x)", lambda x, g, key: x * 2.0, 8),
    Op("fixed_point_quantize 8-bit nearest", lambda x, g, key: wj.fixed_point_quantize(x, 8, 7, symmetric=True), 8),
    Op("fixed_point_quantize 8-bit stochastic (key)", lambda x, g, key: wj.fixed_point_quantize(
        x, 8, 7, symmetric=True, rounding="stochastic", key=key), 8),
    Op("QW 2-bit nearest", lambda x, g, key: wj.QW(x, 2, 1.0), 8),
    # shift's max|x| is a pass of its own before the quantizing pass: read twice, write once.
    Op("QG 8-bit stochastic (key)", lambda x, g, key: wj.QG(x, 8, 8.0, "stochastic", key=key), 12),
    # forward: read x, write y and the 1-byte clamp mask; backward: max|g| (read g), then read g and the
    # mask, write the error.
    Op("wage_quantize 8/8 fwd+bwd (E stochastic)", _wage_fwd_bwd, 22),
)


def _median_s(fn: Callable[..., Any], args: tuple, reps_budget_s: float) -> tuple[float, float]:
    """``fn(*args)`` jitted, timed to completion: (median seconds, spread)."""
    jitted = jax.jit(fn)
    t = time_call(lambda: jax.block_until_ready(jitted(*args)), warmup=2, min_reps=5, budget_s=reps_budget_s)
    return t.median, t.spread


def measure_quantizers(device: Any, sizes: list[int], budget: Budget, reps_budget_s: float) -> list[dict[str, Any]]:
    """One row per (operation, size): median ms, elements/s, GB/s and the fraction of the copy's GB/s."""
    rows = []
    for n in sizes:
        if not budget.allows(5.0, f"quantizer throughput at 2^{n.bit_length() - 1}"):
            continue
        rng = np.random.default_rng(n)
        x, g = rng.standard_normal(n, np.float32), rng.standard_normal(n, np.float32) * np.float32(1e-3)
        with jax.default_device(device):
            args = (jax.device_put(x, device), jax.device_put(g, device), jax.random.key(6))
            copy_gbs = None
            for op in OPS:
                t, spread = _median_s(op.fn, args, reps_budget_s)
                gbs = op.bytes_per_elem * n / t / 1e9
                copy_gbs = copy_gbs or gbs
                rows.append({
                    "op": op.name, "elements": n, "ms": t * 1e3, "spread": spread, "Gelem/s": n / t / 1e9,
                    "bytes/elem": op.bytes_per_elem, "GB/s": gbs, "of copy": gbs / copy_gbs,
                })
            del args
    return rows


def measure_matmul(device: Any, n: int, reps_budget_s: float) -> list[dict[str, Any]]:
    """TFLOP/s of an ``n x n`` float32 matmul at ``Precision.HIGHEST`` and at the backend's default."""
    rows = []
    with jax.default_device(device):
        rng = np.random.default_rng(7)
        a, b = (jax.device_put(rng.standard_normal((n, n), np.float32), device) for _ in range(2))
        for name, precision in (("HIGHEST (float32)", lax.Precision.HIGHEST), ("DEFAULT", lax.Precision.DEFAULT)):
            t, _ = _median_s(lambda a, b, p=precision: jnp.matmul(a, b, precision=p), (a, b), reps_budget_s)
            rows.append({"precision": name, "n": n, "ms": t * 1e3, "TFLOP/s": 2 * n**3 / t / 1e12})
    return rows
