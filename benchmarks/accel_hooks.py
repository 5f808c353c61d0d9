"""Phase (d) of ``benchmarks.accelerator``: what runs only where the project has it.

* ``torch_cuda_parity``: wage_torch's own torch backend (no qtorch) on CUDA against the same functions
  on the CPU, bit for bit. Runs when torch sees a CUDA device and ``wage_torch`` imports and has
  ``set_backend``; otherwise it returns why not (``{"skipped": reason}``). If ``wage_torch`` provides a
  comparison of its own (``wage_torch.device_parity(device) -> dict``), that is called instead.
* Integer mode of the WAGE layers (timed in ``benchmarks.accelerator``'s speed phase) is detected by
  ``benchmarks.accel_train.has_integer_mode``.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.accel_common import differing_elements

__all__ = ["torch_cuda_parity"]


def _skip(reason: str) -> dict[str, Any]:
    return {"skipped": reason}


def torch_cuda_parity(smoke: bool) -> dict[str, Any]:
    """wage_torch's torch backend on ``cuda`` against ``cpu``: elements compared and differing, per function."""
    if importlib.util.find_spec("torch") is None:
        return _skip("torch is not installed")
    import torch

    if not torch.cuda.is_available():
        return _skip("torch sees no CUDA device")
    try:
        import wage_torch
    except ImportError as exc:  # wage_torch on qtorch only: qtorch is not installed on the accelerator machine
        return _skip(f"wage_torch does not import here: {exc}")
    set_backend = getattr(wage_torch, "set_backend", None)
    if set_backend is None:
        return _skip("wage_torch has no set_backend: no torch backend to run on CUDA yet")
    own = getattr(wage_torch, "device_parity", None)
    get_backend = getattr(wage_torch, "get_backend", None)
    previous = get_backend() if callable(get_backend) else None
    try:
        set_backend("torch")
        if callable(own):
            return {"source": "wage_torch.device_parity", **own("cuda")}
        return {"source": "benchmarks.accel_hooks", **_compare(wage_torch, torch, smoke)}
    except Exception as exc:  # noqa: BLE001 - an optional hook reports its failure, the rest of the run goes on
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if previous is not None:
            set_backend(previous)


def _accepts(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _compare(wt: Any, torch: Any, smoke: bool, devices: tuple[str, str] = ("cuda", "cpu")) -> dict[str, Any]:
    """The documented API (``shift``, ``C``, ``QW``, ``QG``, ``WAGEQuantizer`` forward and backward) on the
    parity corpus's inputs, nearest rounding, on ``devices[0]`` against ``devices[1]``; stochastic too where
    a function takes explicit ``noise`` (torch's CUDA and CPU generators draw different numbers from one
    seed)."""
    from wage_parity.corpus import fixed_point_inputs, gradient_like

    x_np = fixed_point_inputs(8, 7, seed=8)
    if smoke:
        x_np = x_np[:4096]
    x_np = np.where(np.isfinite(x_np), x_np, np.float32(0.0)).astype(np.float32)
    g_np = gradient_like(x_np, 8, 0, seed=8)
    noise_np = np.random.default_rng(0).random(x_np.shape, dtype=np.float32)

    def on(device: str) -> dict[str, np.ndarray]:
        x = torch.from_numpy(x_np).to(device)
        out = {
            "shift": wt.shift(x),
            "C bits=2": wt.C(x, 2),
            "QW bits=2 nearest": wt.QW(x, 2, 1.0, "nearest"),
            "QW bits=8 scale=4 nearest": wt.QW(x, 8, 4.0, "nearest"),
            "QG bits=8 lr=8 nearest": wt.QG(x, 8, 8.0, "nearest"),
        }
        if _accepts(wt.QW, "noise"):
            noise = torch.from_numpy(noise_np).to(device)
            out["QW bits=2 stochastic (noise)"] = wt.QW(x, 2, 1.0, "stochastic", noise=noise)
            out["QG bits=8 stochastic (noise)"] = wt.QG(x, 8, 8.0, "stochastic", noise=noise)
        xr = x.clone().requires_grad_()
        y = wt.WAGEQuantizer(8, 8, "nearest", "nearest")(xr)
        y.backward(torch.from_numpy(g_np).to(device))
        out["WAGEQuantizer 8/8 nearest forward"] = y
        out["WAGEQuantizer 8/8 nearest backward"] = xr.grad
        return {k: v.detach().cpu().numpy() for k, v in out.items()}

    tested, reference = on(devices[0]), on(devices[1])
    functions = {k: {"compared": int(v.size), "differ": differing_elements(tested[k], v)} for k, v in reference.items()}
    return {
        "functions": functions,
        "compared": sum(f["compared"] for f in functions.values()),
        "differ": sum(f["differ"] for f in functions.values()),
    }
