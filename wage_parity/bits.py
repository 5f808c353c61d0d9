"""Shared helpers of the parity suite: float32 bit comparison and torch's reproducible uniform draws.

Parity means equal float32 bit patterns (``.view(np.int32)``): ``0.0`` and ``-0.0`` differ, and so do
two results that are close but not identical. Boolean masks are compared as 0/1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["BitDiff", "assert_bits_equal", "bit_diff", "f32_bits", "torch_draws"]

_CANONICAL_NAN = np.int32(0x7FC00000)


def _is_tensor(a: object) -> bool:
    """Whether ``a`` is a torch tensor, without importing torch (this module runs where torch is absent)."""
    return type(a).__module__.startswith("torch")


def f32_bits(a: object) -> np.ndarray:
    """The int32 bit patterns of ``a`` as float32 (booleans become 0/1), C-contiguous, any shape."""
    if _is_tensor(a):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.int32)
    if a.dtype != np.float32:
        raise TypeError(f"parity compares float32 results, got {a.dtype}")
    return np.ascontiguousarray(a).view(np.int32)


@dataclass
class BitDiff:
    """The outcome of comparing two arrays bit for bit: how many elements, how many differ, a few examples."""

    compared: int
    differ: int
    examples: list[tuple[tuple[int, ...], float | int, float | int]] = field(default_factory=list)

    def __bool__(self) -> bool:  # truthy when something differs
        return self.differ > 0

    def describe(self, what: str = "") -> str:
        """A one-line summary with up to the stored examples as ``index: actual vs expected`` (hex bits)."""
        head = f"{what}: " if what else ""
        if not self.differ:
            return f"{head}{self.compared} elements, all bit-identical"
        shown = "; ".join(f"{idx}: {_fmt(act)} vs {_fmt(exp)}" for idx, act, exp in self.examples)
        return f"{head}{self.differ} of {self.compared} elements differ, e.g. {shown}"


def _fmt(value: float | int) -> str:
    """A float with its bit pattern (``-0.0 (0x80000000)``); a mask element as it is."""
    if isinstance(value, float):
        return f"{value!r} ({np.float32(value).view(np.uint32):#010x})"
    return repr(value)


def bit_diff(actual: object, expected: object, *, nan_equal: bool = False, max_examples: int = 5) -> BitDiff:
    """Compare ``actual`` and ``expected`` (same shape, float32 or bool) element by element on their bits.

    ``nan_equal``: every NaN counts as the same value (NaN payloads and signs are not part of the
    contract); otherwise NaNs compare by their bits too. A shape mismatch counts every element as differing.
    """
    a, e = f32_bits(actual), f32_bits(expected)
    if a.shape != e.shape:
        n = max(a.size, e.size)
        return BitDiff(n, n, [((), float("nan"), float("nan"))])
    if nan_equal and np.asarray(actual).dtype != np.bool_:
        a = np.where(np.isnan(a.view(np.float32)), _CANONICAL_NAN, a)
        e = np.where(np.isnan(e.view(np.float32)), _CANONICAL_NAN, e)
    bad = np.argwhere(a != e)
    floats = np.asarray(actual).dtype != np.bool_ and np.asarray(expected).dtype != np.bool_
    examples = []
    for idx in bad[:max_examples]:
        idx = tuple(int(i) for i in idx)
        act, exp = a[idx], e[idx]
        if floats:
            examples.append((idx, float(act.view(np.float32)), float(exp.view(np.float32))))
        else:
            examples.append((idx, int(act), int(exp)))
    return BitDiff(int(a.size), int(len(bad)), examples)


def assert_bits_equal(actual: object, expected: object, what: str = "", *, nan_equal: bool = False) -> None:
    """Fail with the count of differing elements and a few examples unless the bit patterns are identical."""
    a, e = np.asarray(actual if not _is_tensor(actual) else actual.detach()), expected
    if _is_tensor(e):
        e = e.detach().numpy()
    assert a.shape == np.asarray(e).shape, f"{what}: shape {a.shape} != expected {np.asarray(e).shape}"
    diff = bit_diff(a, e, nan_equal=nan_equal)
    assert not diff, diff.describe(what)


def torch_draws(seed: int, *likes: torch.Tensor) -> list[np.ndarray]:
    """Reseed torch and draw ``torch.rand_like`` for each tensor in turn: the uniform draws qtorch's
    stochastic kernels make after ``torch.manual_seed(seed)`` (float32 arrays in ``[0, 1)``)."""
    import torch

    torch.manual_seed(seed)
    return [torch.rand_like(t).numpy() for t in likes]
