"""wage_torch's torch backend against the contract (qtorch's CPU kernel), on the parity corpus, on any device.

``torch_backend_device_parity(device)`` re-runs the torch reference of every corpus case (the calls
``wage_parity.cases`` compares wage_jax with) on wage_torch's torch backend, with the inputs on
``device`` and, optionally, the wage_torch functions under ``torch.compile``, and counts the bits that
differ from qtorch's CPU results. Stochastic rounding draws its uniforms on the CPU from torch's
default generator and moves them to ``device``: the same draws as qtorch's, so the comparison is exact
there too. Used by the parity suite (CPU) and by the accelerator benchmark (CUDA, MPS).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from types import SimpleNamespace

import numpy as np
import torch

import wage_torch as wt
from wage_parity import cases as _cases
from wage_parity.bits import bit_diff
from wage_torch import torch_kernels
from wage_torch.backend import get_backend, set_backend

__all__ = ["torch_backend_device_parity", "torch_backend_outputs"]


def _cpu_draw(x: torch.Tensor) -> torch.Tensor:
    return torch.rand_like(x, device="cpu").to(x.device)


@contextlib.contextmanager
def torch_backend(device: str | torch.device = "cpu", compile: bool = False) -> Iterator[None]:
    """Within: ``wage_parity.cases``'s references run on wage_torch's torch backend on ``device``.

    qtorch's kernels called directly by the references are replaced by ``wage_torch.torch_kernels``;
    ``compile=True`` wraps the wage_torch functions and modules in ``torch.compile``.
    """
    device = torch.device(device)
    previous_backend, previous_draw = get_backend(), torch_kernels.draw
    saved = {name: getattr(_cases, name) for name in ("_t", "_qtorch_quant", "_qtorch_kernels", "wt")}

    def fp(x, wl, fl, clamp=True, symmetric=False, rounding="stochastic"):
        return torch_kernels.fixed_point_quantize(x, wl, fl, clamp, symmetric, rounding)

    def masked(rounding):
        return lambda x, wl, fl, symmetric: torch_kernels.fixed_point_quantize_with_mask(x, wl, fl, symmetric, rounding)

    def compiled(fn):
        return torch.compile(fn, dynamic=False) if compile else fn

    def quantizer(*args, **kwargs):
        return compiled(wt.WAGEQuantizer(*args, **kwargs))

    set_backend("torch")
    torch_kernels.draw = _cpu_draw if device.type != "cpu" else previous_draw
    _cases._t = lambda x: saved["_t"](x).to(device)
    _cases._qtorch_quant = SimpleNamespace(fixed_point_quantize=compiled(fp))
    _cases._qtorch_kernels = SimpleNamespace(
        quant_cpu=SimpleNamespace(
            fixed_point_quantize_nearest_mask=compiled(masked("nearest")),
            fixed_point_quantize_stochastic_mask=compiled(masked("stochastic")),
        )
    )
    _cases.wt = SimpleNamespace(
        shift=compiled(wt.shift), C=compiled(wt.C), QW=compiled(wt.QW), QG=compiled(wt.QG), WAGEQuantizer=quantizer
    )
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(_cases, name, value)
        torch_kernels.draw = previous_draw
        set_backend(previous_backend)


def torch_backend_outputs(case: _cases.Case) -> list[list[np.ndarray]]:
    """The outputs of ``case``'s torch reference calls, as NumPy arrays (call ``torch_backend`` first)."""
    return [[_cases._to_numpy(_cpu(r)) for r in _cases._as_tuple(c.reference())] for c in case.calls]


def _cpu(t: object) -> object:
    return t.detach().cpu() if isinstance(t, torch.Tensor) else t


def _qtorch_reference(case: _cases.Case) -> list[list[np.ndarray]]:
    """``case``'s reference outputs from qtorch's CPU kernel (whatever backend is selected)."""
    previous = get_backend()
    if set_backend("qtorch") != "qtorch":
        raise RuntimeError("the torch backend's parity check needs qtorch (the reference) importable")
    try:
        return _cases._reference(case)
    finally:
        set_backend(previous)


def torch_backend_device_parity(
    device: str | torch.device = "cpu", compile: bool = False, functions: Sequence[str] = _cases.FUNCTIONS
) -> dict[str, int]:
    """Bits of wage_torch's torch backend on ``device`` that differ from qtorch's CPU kernel, per function.

    Args:
        device: a torch device (``"cpu"``, ``"cuda"``, ``"mps"``...).
        compile: run the wage_torch functions under ``torch.compile`` (set
            ``torch._inductor.config.fallback_random = True`` to keep torch's eager draws).
        functions: names from ``wage_parity.cases.FUNCTIONS``.

    Returns:
        ``{function: number of differing output bits}`` over the whole corpus; 0 everywhere is parity.
    """
    counts: dict[str, int] = {}
    for function in functions:
        total = 0
        for case in _cases.cases(function):
            expected = _qtorch_reference(case)
            with torch_backend(device, compile):
                actual = torch_backend_outputs(case)
            for act, exp in zip(actual, expected, strict=True):
                for a, e in zip(act, exp, strict=True):
                    total += bit_diff(a, e, nan_equal=case.nan_equal).differ
        counts[function] = total
    return counts
