"""The parity comparisons, defined once: wage_jax against wage_torch / qtorch on the fixed corpus.

A ``Call`` is one call of a wage_jax function with fixed static arguments, and the torch reference
of the same call on the same inputs. A ``Case`` groups the calls of one function that share a
compilation: ``Case.compare(mode)`` runs them eagerly (``"eager"``) or as one ``jax.jit`` program
(``"jit"``; one compilation per case instead of one per call keeps the suite fast) and compares
every output with the reference bit for bit. The pytest modules parametrize over ``cases(function)``;
``wage-parity`` runs ``cases(f)`` for each ``f`` in ``FUNCTIONS``. (Each call jitted on its
own, as a user would, is what ``test_properties`` does for random arguments.)

Stochastic rounding is compared exactly: qtorch draws ``torch.rand_like`` from torch's default
generator, so after ``torch.manual_seed(seed)`` the draws are reproduced (``torch_draws``) and handed
to wage_jax as ``noise`` (``noise_A``/``noise_E`` for ``wage_quantize``, whose torch module draws for
the activations in the forward, then for the errors in the backward, from the same generator).
``cases(function, draws=numpy_draws)`` makes the inputs without torch, for comparisons that compute no
torch reference (the benchmark's device against the host): torch is imported only by a reference or by
the default draws.
"""

from __future__ import annotations

import functools
import importlib
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

import wage_jax as wj
from wage_parity.bits import BitDiff, bit_diff, torch_draws
from wage_parity.corpus import (
    F32,
    fixed_point_inputs,
    gradient_like,
    random_tensors,
    shift_inputs,
    special_values,
    subnormal_gradient,
)
from wage_parity.names import FUNCTIONS, MODES

__all__ = ["FUNCTIONS", "MODES", "Call", "Case", "Draws", "cases"]

# draws(seed, *likes) -> one float32 array of uniform draws in [0, 1) shaped like each of likes
Draws = Callable[..., list[np.ndarray]]


class _OnFirstUse:
    """A module imported at its first attribute access. The references (wage_torch on qtorch, whose C++
    kernels load at import) are only needed when a reference is computed: the wage_jax side of every case
    (``Call.jax_fn``, ``Call.jax_args``) runs where qtorch is not installed."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        if self._name.startswith("qtorch"):
            # Through wage_torch's loader: qtorch's kernels load from (or build into) the environment's build,
            # with a QtorchBuildWarning saying where and why if they must compile.
            from wage_torch.backend import qtorch_modules

            if qtorch_modules() is None:
                raise ImportError(f"the reference needs {self._name}, which could not be imported or built")
        return getattr(importlib.import_module(self._name), attr)


class _Torch:
    """torch, imported at its first attribute access (only references and torch's draws need it)."""

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module("torch"), attr)


torch = _Torch()
wt = _OnFirstUse("wage_torch")
_qtorch_quant = _OnFirstUse("qtorch.quant")
_qtorch_kernels = _OnFirstUse("qtorch.quant.quant_function")

ROUNDINGS = ("nearest", "stochastic")
WIDTHS = tuple(range(2, 17))
# Formats other than WAGE's fl = wl - 1: integer steps, steps of 4, a fraction longer than the word, and
# the longest word (its tie grid sampled).
OTHER_FORMATS = ((8, 0), (8, -2), (4, 10), (24, 23))
CLAMP_SYMMETRIC = tuple(itertools.product((True, False), (True, False)))
QW_SCALES = (1.0, 2.0, 4.0, 8.0, 3.0)
QW_OTHER_SCALES = (0.5, 1.5, 1.8, 1.9, 2.0**40, 2.0**110)
QG_LRS = (8.0, 1.0, 0.125, 0.1)
SEED = 1234


@dataclass(frozen=True)
class Call:
    """One call: ``jax_fn(*jax_args())`` (arrays in, an array or a tuple of arrays out) against ``reference()``.

    ``reference`` and ``jax_args`` are evaluated lazily; ``jax_fn`` has its static arguments bound.
    """

    name: str
    reference: Callable[[], Sequence[object]]
    jax_fn: Callable[..., object]
    jax_args: Callable[[], Sequence[object]]
    outputs: tuple[str, ...] = ("out",)


@dataclass(frozen=True)
class Case:
    """The calls of one function compared together (one ``jax.jit`` compilation in ``"jit"`` mode)."""

    function: str
    label: str
    calls: tuple[Call, ...]
    nan_equal: bool = False

    @property
    def id(self) -> str:
        return f"{self.function}[{self.label}]"

    def run_jax(self, mode: str) -> list[list[np.ndarray]]:
        """wage_jax's outputs, per call, as NumPy arrays: eagerly or under one ``jax.jit``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

        def run(all_args):
            return [_as_tuple(c.jax_fn(*args)) for c, args in zip(self.calls, all_args, strict=True)]

        fn = jax.jit(run) if mode == "jit" else run
        out = fn([tuple(c.jax_args()) for c in self.calls])
        return [[np.asarray(o) for o in outs] for outs in out]

    def compare(self, mode: str) -> list[tuple[str, BitDiff]]:
        """``(call and output name, BitDiff)`` for every output of every call."""
        expected = _reference(self)
        actual = self.run_jax(mode)
        result = []
        for call, act, exp in zip(self.calls, actual, expected, strict=True):
            if not len(act) == len(exp) == len(call.outputs):
                raise AssertionError(f"{self.id} {call.name}: {len(act)} outputs, the reference has {len(exp)}")
            for name, a, e in zip(call.outputs, act, exp, strict=True):
                result.append((f"{call.name} {name}", bit_diff(a, e, nan_equal=self.nan_equal)))
        return result


def _as_tuple(out: object) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


# The torch outputs of the most recent cases (eager and jit compare with the same; kept few: they are large).
_REFERENCES: OrderedDict[str, list[list[np.ndarray]]] = OrderedDict()
_KEEP_REFERENCES = 2


def _reference(case: Case) -> list[list[np.ndarray]]:
    if case.id not in _REFERENCES:
        _REFERENCES[case.id] = [[_to_numpy(r) for r in _as_tuple(c.reference())] for c in case.calls]
        while len(_REFERENCES) > _KEEP_REFERENCES:
            _REFERENCES.popitem(last=False)
    return _REFERENCES[case.id]


def _to_numpy(t: object) -> np.ndarray:
    if type(t).__module__.startswith("torch"):
        t = t.detach()
        return t.numpy().astype(np.bool_) if t.dtype == torch.uint8 else t.numpy()
    return np.asarray(t)


def _t(x: np.ndarray):
    return torch.from_numpy(np.array(x, F32, copy=True))


@functools.lru_cache(maxsize=64)
def _fp_inputs(wl: int, fl: int) -> np.ndarray:
    return fixed_point_inputs(wl, fl, seed=wl)


def _formats() -> list[tuple[int, int]]:
    return [(wl, wl - 1) for wl in WIDTHS] + list(OTHER_FORMATS)


def _nonfinite() -> np.ndarray:
    return np.array([np.nan, -np.nan, np.inf, -np.inf, 1.0, -0.0, 0.25, -3e38], F32)


def _torch_draws(seed: int, *likes: np.ndarray) -> list[np.ndarray]:
    """``torch_draws`` for NumPy arrays: what qtorch draws after ``torch.manual_seed(seed)``."""
    return torch_draws(seed, *(_t(x) for x in likes))


def _noise(draws: Draws, seed: int, x: np.ndarray, mode: str) -> np.ndarray | None:
    return draws(seed, x)[0] if mode == "stochastic" else None


# --- fixed_point_quantize and fixed_point_quantize_with_mask -------------------------------------------------


def _fp_call(wl: int, fl: int, clamp: bool, symmetric: bool, rounding: str, inputs, seed: int, draws: Draws) -> Call:
    def reference():
        torch.manual_seed(seed)
        return _qtorch_quant.fixed_point_quantize(
            _t(inputs()), wl, fl, clamp=clamp, symmetric=symmetric, rounding=rounding
        )

    def fn(x, noise):
        return wj.fixed_point_quantize(x, wl, fl, clamp=clamp, symmetric=symmetric, rounding=rounding, noise=noise)

    name = f"clamp={clamp} symmetric={symmetric} {rounding}"
    return Call(name, reference, fn, lambda: (inputs(), _noise(draws, seed, inputs(), rounding)))


def _mask_call(wl: int, fl: int, symmetric: bool, rounding: str, inputs, seed: int, draws: Draws) -> Call:
    def reference():
        torch.manual_seed(seed)
        kernel = getattr(_qtorch_kernels.quant_cpu, f"fixed_point_quantize_{rounding}_mask")
        return kernel(_t(inputs()), wl, fl, symmetric)

    def fn(x, noise):
        return wj.fixed_point_quantize_with_mask(x, wl, fl, symmetric=symmetric, rounding=rounding, noise=noise)

    args = lambda: (inputs(), _noise(draws, seed, inputs(), rounding))  # noqa: E731
    return Call(f"symmetric={symmetric} {rounding}", reference, fn, args, ("out", "mask"))


def _fixed_point_cases(draws: Draws) -> Iterator[Case]:
    for wl, fl in _formats():
        inputs = functools.partial(_fp_inputs, wl, fl)
        calls = [
            _fp_call(wl, fl, clamp, symmetric, rounding, inputs, SEED + 10 * wl + i, draws)
            for i, ((clamp, symmetric), rounding) in enumerate(itertools.product(CLAMP_SYMMETRIC, ROUNDINGS))
        ]
        yield Case("fixed_point_quantize", f"wl={wl} fl={fl}", tuple(calls))
    calls = [
        _fp_call(8, 7, clamp, symmetric, rounding, _nonfinite, SEED + i, draws)
        for i, ((clamp, symmetric), rounding) in enumerate(itertools.product(CLAMP_SYMMETRIC, ROUNDINGS))
    ]
    yield Case("fixed_point_quantize", "wl=8 fl=7 NaN/Inf", tuple(calls), nan_equal=True)


def _mask_cases(draws: Draws) -> Iterator[Case]:
    for wl, fl in _formats():
        inputs = functools.partial(_fp_inputs, wl, fl)
        calls = [
            _mask_call(wl, fl, symmetric, rounding, inputs, SEED + 10 * wl + i, draws)
            for i, (symmetric, rounding) in enumerate(itertools.product((True, False), ROUNDINGS))
        ]
        yield Case("fixed_point_quantize_with_mask", f"wl={wl} fl={fl}", tuple(calls))
    calls = [
        _mask_call(4, 3, symmetric, rounding, _nonfinite, SEED + i, draws)
        for i, (symmetric, rounding) in enumerate(itertools.product((True, False), ROUNDINGS))
    ]
    yield Case("fixed_point_quantize_with_mask", "wl=4 fl=3 NaN/Inf", tuple(calls), nan_equal=True)


# --- shift ------------------------------------------------------------------------------------------------------


def _shift_cases(draws: Draws) -> Iterator[Case]:
    by_shape: dict[tuple[int, ...], list[Call]] = {}
    for name, x in shift_inputs(SEED):
        call = Call(name, lambda x=x: wt.shift(_t(x)), wj.shift, lambda x=x: (x,))
        by_shape.setdefault(x.shape, []).append(call)
    for shape, calls in by_shape.items():
        yield Case("shift", f"shape={shape}", tuple(calls))


# --- C ----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _clip_inputs() -> np.ndarray:
    bounds = np.array([1.0 - 2.0 ** -(b - 1) for b in range(2, 25)] + [1.0], F32)
    near = np.concatenate([bounds, np.nextafter(bounds, F32(np.inf)), np.nextafter(bounds, F32(0))])
    parts = [near, -near, special_values(), np.array([np.inf, -np.inf], F32)]
    parts += [t.ravel() for _, t in random_tensors(SEED)]
    return np.concatenate(parts).astype(F32)


def _clip_call(bits: int, inputs) -> Call:
    return Call(f"bits={bits}", lambda: wt.C(_t(inputs()), bits), lambda x: wj.C(x, bits), lambda: (inputs(),))


def _clip_cases(draws: Draws) -> Iterator[Case]:
    yield Case("C", "bits 1..20, 24, 31", tuple(_clip_call(b, _clip_inputs) for b in (*range(1, 21), 24, 31)))
    yield Case("C", "NaN/Inf", (_clip_call(8, _nonfinite), _clip_call(1, _nonfinite)), nan_equal=True)


# --- QW ---------------------------------------------------------------------------------------------------------


def _qw_call(bits: int, scale: float, mode: str, seed: int, draws: Draws) -> Call:
    inputs = functools.partial(_fp_inputs, bits, bits - 1)

    def reference():
        torch.manual_seed(seed)
        return wt.QW(_t(inputs()), bits, scale, mode)

    def fn(x, noise):
        return wj.QW(x, bits, scale, mode, noise=noise)

    return Call(f"scale={scale:g} {mode}", reference, fn, lambda: (inputs(), _noise(draws, seed, inputs(), mode)))


def _qw_cases(draws: Draws) -> Iterator[Case]:
    for bits in WIDTHS:
        scales = QW_SCALES if bits in (2, 4, 8, 16) else (1.0, 3.0)
        combos = [(s, "nearest") for s in scales] + [(1.0, "stochastic")]
        if bits in (2, 8):
            combos += [(s, "stochastic") for s in QW_SCALES[1:]]
            combos += [(s, "nearest") for s in QW_OTHER_SCALES]
        calls = [_qw_call(bits, s, mode, SEED + 20 * bits + i, draws) for i, (s, mode) in enumerate(combos)]
        yield Case("QW", f"bits={bits}", tuple(calls))


# --- QG ---------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _qg_tie_grid() -> np.ndarray:
    """Multiples of 2^-13 in [-1, 1] with neighbours: max|x| = 1, so shift(x) = x and lr * x meets ties."""
    grid = (np.arange(-(2**13), 2**13 + 1, dtype=np.float64) / 2**13).astype(F32)
    grid = np.concatenate([grid, np.nextafter(grid, F32(np.inf)), np.nextafter(grid, F32(-np.inf))])
    return grid[np.abs(grid) <= 1]


@functools.lru_cache(maxsize=1)
def _qg_mixed() -> np.ndarray:
    """A gradient of mixed magnitudes (1e-6 .. 1e5), signed zeros and subnormals."""
    rng = np.random.default_rng(SEED)
    shape = _qg_tie_grid().shape  # one shape for both: eager jax compiles each operation once per shape
    mixed = rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 6, shape)
    mixed.flat[:6] = [0.0, -0.0, 1e-40, -1e-42, 2.0**-126, 3.0e-39]
    return mixed.astype(F32)


_QG_SPECIAL = (
    "max+2^0",
    "max-2^1",
    "max=2^-126",
    "max+2^-127",
    "max=2^-149",
    "max=2^-140",
    "zeros",
    "-0.0 only",
    "subnormals",
    "smallest subnormal",
    "one subnormal",
    "huge",
)


def _qg_call(bits: int, lr: float, mode: str, name: str, x: np.ndarray, seed: int, draws: Draws,
             traced: bool = False) -> Call:
    def reference():
        torch.manual_seed(seed)
        return wt.QG(_t(x), bits, lr, mode)

    if traced:
        fn = lambda x, noise, lr: wj.QG(x, bits, lr, mode, noise=noise)  # noqa: E731
        args = lambda: (x, _noise(draws, seed, x, mode), jnp.float32(lr))  # noqa: E731
    else:
        fn = lambda x, noise: wj.QG(x, bits, lr, mode, noise=noise)  # noqa: E731
        args = lambda: (x, _noise(draws, seed, x, mode))  # noqa: E731
    return Call(f"lr={lr:g}{' (array)' if traced else ''} {mode} {name}", reference, fn, args)


def _qg_cases(draws: Draws) -> Iterator[Case]:
    grid, mixed = _qg_tie_grid(), _qg_mixed()
    special = [(n, x) for n, x in shift_inputs(SEED) if n in _QG_SPECIAL]
    for bits in WIDTHS:
        lrs = QG_LRS if bits in (2, 8, 16) else (8.0, 0.1)
        calls = [_qg_call(bits, lr, "nearest", "tie grid", grid, 0, draws) for lr in lrs]
        if bits in (2, 8, 16):
            calls += [_qg_call(bits, lr, "nearest", "mixed", mixed, 0, draws) for lr in QG_LRS]
            calls += [
                _qg_call(bits, lr, "stochastic", name, x, SEED + 30 * bits + i, draws)
                for i, (lr, (name, x)) in enumerate(itertools.product(QG_LRS, (("tie grid", grid), ("mixed", mixed))))
            ]
        yield Case("QG", f"bits={bits}", tuple(calls))
    combos = [(8.0, "nearest"), (0.1, "nearest"), (8.0, "stochastic")]
    calls = [
        _qg_call(8, lr, mode, name, x, SEED + 40 + i, draws)
        for i, ((lr, mode), (name, x)) in enumerate(itertools.product(combos, special))
    ]
    yield Case("QG", "bits=8 special gradients", tuple(calls))
    # lr as a float32 array: traced under jit (an optax schedule's value), concrete when eager.
    for bits in (2, 16):
        calls = [
            _qg_call(bits, lr, mode, "tie grid", grid, SEED + 50 * bits + i, draws, traced=True)
            for i, (lr, mode) in enumerate(itertools.product(QG_LRS, ROUNDINGS))
        ]
        calls.append(_qg_call(bits, 0.1, "nearest", "mixed", mixed, 0, draws, traced=True))
        yield Case("QG", f"bits={bits} lr array", tuple(calls))


# --- wage_quantize ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _wage_inputs(bits: int) -> np.ndarray:
    """Activations: the tie grid of ``bits`` (sampled to 6000 points beyond 12 bits) and the rest of the corpus."""
    return fixed_point_inputs(bits, bits - 1, seed=bits, max_points=6000)


def _wage_call(bits_A: int, bits_E: int, A_mode: str, E_mode: str, exponent: int | None, seed: int,
               draws: Draws) -> Call:
    """``exponent``: ``max|g| = 2^exponent`` (``gradient_like``; below -126 ``subnormal_gradient``);
    ``None``: an all-zero gradient of both signs."""
    needs_A = A_mode == "stochastic" and bits_A != -1
    needs_E = E_mode == "stochastic" and bits_E != -1

    def inputs():
        x = _wage_inputs(8 if bits_A == -1 else bits_A)
        if exponent is None:
            return x, np.where(np.arange(x.size) % 3 == 0, F32(-0.0), F32(0.0)).astype(F32)
        if exponent < -126:
            return x, subnormal_gradient(x.shape, exponent, seed)
        return x, gradient_like(x, bits_E, exponent, seed)

    def reference():
        x, g = inputs()
        xt = _t(x).requires_grad_()
        torch.manual_seed(seed)
        y = wt.WAGEQuantizer(bits_A, bits_E, A_mode, E_mode)(xt)
        y.backward(_t(g))
        return y, xt.grad

    def args():
        x, g = inputs()
        # The torch module draws r_A = rand_like(x) in its forward, then r_E = rand_like(grad) in its backward.
        drawn = iter(draws(seed, *(a for a, needed in ((x, needs_A), (g, needs_E)) if needed)))
        return x, g, next(drawn) if needs_A else None, next(drawn) if needs_E else None

    def fn(x, g, noise_A, noise_E):
        def quantize(v):
            return wj.wage_quantize(v, bits_A, bits_E, A_mode, E_mode, noise_A=noise_A, noise_E=noise_E)

        y, vjp = jax.vjp(quantize, x)
        return y, vjp(g)[0]

    name = f"bits_E={bits_E} {A_mode}/{E_mode} " + ("g=±0" if exponent is None else f"max|g|=2^{exponent}")
    return Call(name, reference, fn, args, ("out", "grad"))


def _wage_combos(bits_A: int) -> list[tuple[int, str, str]]:
    """The (bits_E, A_mode, E_mode) compared for one bits_A: every width with itself and with -1 (both
    ways), a few unequal pairs, stochastic rounding for every pair of (-1, 2, 8, 16), and mixed modes."""
    if bits_A == -1:
        combos = [(e, "nearest", "nearest") for e in (-1, *WIDTHS)]
    else:
        combos = [(e, "nearest", "nearest") for e in (-1, bits_A)]
    combos += {
        2: [(8, "nearest", "nearest")],
        8: [(2, "nearest", "nearest"), (16, "nearest", "nearest")],
        4: [(16, "nearest", "nearest")],
        16: [(4, "nearest", "nearest")],
        3: [(5, "nearest", "nearest")],
    }.get(bits_A, [])
    if bits_A in (-1, 2, 8, 16):
        combos += [(e, "stochastic", "stochastic") for e in (-1, 2, 8, 16)]
    combos += {
        -1: [(8, "nearest", "stochastic")],
        2: [(8, "nearest", "stochastic")],
        3: [(5, "stochastic", "nearest")],
        8: [(8, "nearest", "stochastic"), (-1, "nearest", "stochastic"), (8, "stochastic", "nearest")],
    }.get(bits_A, [])
    return combos


def _wage_cases(draws: Draws) -> Iterator[Case]:
    exponents = (0, -20, 7, -100, 100, 3, -1)
    for bits_A in (-1, *WIDTHS):
        calls = [
            _wage_call(bits_A, bits_E, a_mode, e_mode, exponents[(i + bits_A) % len(exponents)], SEED + 60 * bits_A + i,
                       draws)
            for i, (bits_E, a_mode, e_mode) in enumerate(_wage_combos(bits_A))
        ]
        if bits_A in (-1, 8):
            # An all-zero upstream gradient (shift returns it unchanged), and subnormal ones (shift scales
            # them up by as much as 2^149).
            calls += [
                _wage_call(bits_A, bits_E, "nearest", e_mode, exponent, SEED + 7 + bits_A + i, draws)
                for i, (bits_E, e_mode, exponent) in enumerate(
                    [(8, "nearest", None), (8, "stochastic", None), (8, "nearest", -149), (2, "stochastic", -149)]
                    + [(8, "nearest", -140), (16, "nearest", -127)]
                )
            ]
        yield Case("wage_quantize", f"bits_A={bits_A}", tuple(calls))


# --- the registry -----------------------------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[[Draws], Iterator[Case]]] = {
    "fixed_point_quantize": _fixed_point_cases,
    "fixed_point_quantize_with_mask": _mask_cases,
    "shift": _shift_cases,
    "C": _clip_cases,
    "QW": _qw_cases,
    "QG": _qg_cases,
    "wage_quantize": _wage_cases,
}
assert tuple(_BUILDERS) == FUNCTIONS, "wage_parity.names.FUNCTIONS names the registry's functions"


def cases(function: str, draws: Draws | None = None) -> list[Case]:
    """Every case of one wage_jax function.

    ``draws(seed, *likes)`` makes the stochastic calls' uniform draws; the default reproduces qtorch's
    (``torch_draws``, which imports torch). ``wage_parity.corpus.numpy_draws`` makes them without torch, for
    comparisons that compute no torch reference.
    """
    return list(_BUILDERS[function](draws or _torch_draws))
