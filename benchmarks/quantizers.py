"""Quantizer throughput on any backend against the measured copy bandwidth, wage_torch beside it on the CPU,
and the float32 matmul rate (the bound on convolution-heavy steps).

Each operation is jitted on the device under test and timed with ``core.time_per_call`` (many calls per
sync). ``bytes/elem`` is the least memory traffic the operation needs (read its inputs, write its outputs,
plus one more read of the input for ``shift``'s ``max|x|``, plus the 1-byte clamp mask of the WAGE
quantizer); ``x copy`` is the time over what the copy ``x + 1`` of the same size (8 bytes/element, measured
just before: other processes change the bandwidth from minute to minute) would take for those bytes:
1.0 is the memory bandwidth; a stochastic operation's ``x copy`` is over (its uniform draws alone + that time).
``QW`` with scale 3 divides (scale not a power of two), reported apart from the power-of-two scale.
On the CPU, wage_torch runs the same operations on qtorch's kernels (``qtorch``, where installed) and on
its torch backend (``wt-torch``); ``qtorch / jax`` is held to >= 20.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import wage_jax as wj
from benchmarks.core import Budget, row, time_per_call
from wage_jax._src.threefry import uniform

__all__ = ["OPS", "measure", "measure_matmul"]


def _wq(x, g, key, E_mode="stochastic"):
    y, vjp = jax.vjp(lambda v: wj.wage_quantize(v, 8, 8, "nearest", E_mode, key=key), x)
    return y, vjp(g)[0]


def _wt_wq(wt, x, g):
    xr = x.detach().requires_grad_()
    wt.WAGEQuantizer(8, 8, "nearest", "stochastic")(xr).backward(g)
    return xr.grad


DRAWS = "uniform draws alone"
# name: (jax fn(x, g, key), wage_torch fn(wt, x, g) or None, least bytes/elem, x-copy target or None)
OPS: dict[str, tuple[Any, Any, int, float | None]] = {
    DRAWS: (lambda x, g, k: uniform(k, x.shape), None, 4, None),  # first: the stochastic ops are held to it
    "QW 2-bit nearest, scale 16": (lambda x, g, k: wj.QW(x, 2, 16.0), lambda wt, x, g: wt.QW(x, 2, 16.0), 8, 1.5),
    "QW 2-bit nearest, scale 3 (division)": (lambda x, g, k: wj.QW(x, 2, 3.0), lambda wt, x, g: wt.QW(x, 2, 3.0), 8,
                                             1.5),
    "QG 8-bit nearest": (lambda x, g, k: wj.QG(x, 8, 8.0), lambda wt, x, g: wt.QG(x, 8, 8.0), 12, 2.0),
    "QG 8-bit stochastic": (lambda x, g, k: wj.QG(x, 8, 8.0, "stochastic", key=k),
                            lambda wt, x, g: wt.QG(x, 8, 8.0, "stochastic"), 12, 1.3),
    "fixed_point 8-bit nearest": (lambda x, g, k: wj.fixed_point_quantize(x, 8, 7, symmetric=True), None, 8, 1.5),
    "fixed_point 8-bit stochastic": (lambda x, g, k: wj.fixed_point_quantize(
        x, 8, 7, symmetric=True, rounding="stochastic", key=k), None, 8, 1.3),
    "wage_quantize fwd+bwd, E stochastic": (_wq, _wt_wq, 22, 1.3),
}
TARGET_QTORCH = 20.0
SMOKE_OPS = (DRAWS, "QW 2-bit nearest, scale 3 (division)", "QG 8-bit stochastic")


def _torch_impls() -> dict[str, Any]:
    """wage_torch on each backend this machine has (CPU only: qtorch's kernels are CPU kernels)."""
    try:
        import wage_torch
    except ImportError:
        return {}
    from wage_torch.backend import qtorch_modules

    return {"wt-torch": (wage_torch, "torch"), **({"qtorch": (wage_torch, "qtorch")} if qtorch_modules() else {})}


def measure(device: Any, sizes: list[int], budget: Budget, smoke: bool) -> list[dict[str, Any]]:
    """One row per (operation, size): ms per call, GB/s, ``x copy``; then wage_torch's ratios on the CPU."""
    reps, target_s = (2, 0.005) if smoke else (5, 0.05)
    torch_impls = _torch_impls() if device.platform == "cpu" else {}
    previous = next(iter(torch_impls.values()))[0].get_backend() if torch_impls else None
    try:
        return _measure(device, sizes, budget, smoke, torch_impls, reps, target_s)
    finally:  # wage_torch's backend is process-wide: leave it as it was
        if previous is not None:
            next(iter(torch_impls.values()))[0].set_backend(previous)


def _measure(device, sizes, budget, smoke, torch_impls, reps, target_s) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        held = n == sizes[-1] and not smoke  # the targets are for the largest size (smaller ones: dispatch shows)
        rng = np.random.default_rng(n)
        x_np, g_np = rng.standard_normal(n, np.float32), rng.standard_normal(n, np.float32) * np.float32(1e-3)
        with jax.default_device(device):
            x, g, key = jax.device_put(x_np, device), jax.device_put(g_np, device), jax.random.key(6)
            copy = jax.jit(lambda a: a + np.float32(1.0))
            draws = 0.0
            for name, (fn, torch_fn, nbytes, target) in OPS.items():
                if smoke and name not in SMOKE_OPS:
                    continue
                if not budget.allows(1.0, f"quantizer {name} at 2^{n.bit_length() - 1}"):
                    return rows
                ideal = time_per_call(lambda c=copy, x=x: c(x), reps=reps, target_s=target_s).median * nbytes / 8
                jitted = jax.jit(fn)
                t = time_per_call(lambda f=jitted, a=(x, g, key): f(*a), reps=reps, target_s=target_s).median
                if name == DRAWS:
                    draws = t
                elif "stochastic" in name:
                    ideal += draws  # the hash is compute-bound on a CPU: held to (draws alone + the copy's time)
                rows.append(row(f"{name}, 2^{n.bit_length() - 1}", t * 1e3, "ms", ratio=t / ideal,
                                target=None if target is None or not held else f"ratio <= {target}",
                                note=f"{nbytes * n / t / 1e9:.2f} GB/s"))
                for impl, (wt, backend) in torch_impls.items() if torch_fn else ():
                    import torch

                    wt.set_backend(backend)
                    xt, gt = torch.from_numpy(x_np), torch.from_numpy(g_np)
                    tt = time_per_call(lambda f=torch_fn, a=(wt, xt, gt): f(*a), reps=reps, target_s=target_s,
                                       sync=lambda out: out).median
                    rows.append(row(f"{name}, 2^{n.bit_length() - 1}: {impl} / jax", tt / t, "x",
                                    target=f"figure >= {TARGET_QTORCH:g}" if impl == "qtorch" and held else None,
                                    note=f"{impl} {tt * 1e3:.3g} ms"))
    return rows


def measure_matmul(device: Any, n: int, smoke: bool) -> list[dict[str, Any]]:
    """TFLOP/s of an ``n x n`` float32 matmul at ``Precision.HIGHEST`` and at the backend's default."""
    rows = []
    with jax.default_device(device):
        rng = np.random.default_rng(7)
        a, b = (jax.device_put(rng.standard_normal((n, n), np.float32), device) for _ in range(2))
        for name, p in (("HIGHEST (float32)", lax.Precision.HIGHEST), ("DEFAULT", lax.Precision.DEFAULT)):
            f = jax.jit(lambda a, b, p=p: jnp.matmul(a, b, precision=p))
            t = time_per_call(lambda f=f: f(a, b), reps=2 if smoke else 5).median
            rows.append(row(f"matmul {n}x{n} {name}", 2 * n**3 / t / 1e12, "TFLOP/s"))
    return rows
