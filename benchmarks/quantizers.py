"""Throughput of the WAGE quantizers: wage_jax (jit) vs wage_torch (qtorch's CPU kernels) vs plain torch.

    python -m benchmarks.quantizers [--quick] [--markdown]

For each operation and size ``n`` (2^10 .. 2^24 elements, float32) the table gives the median time of
one call and the throughput in elements/s and GB/s. GB/s counts the *least* memory traffic the
operation needs (``bytes/elem`` column: read the input, write the output, plus one extra read of the
input for the ``max|x|`` of ``shift``, plus the one-byte clamp mask of the WAGE quantizer), so every
implementation is charged the same bytes and the figure is comparable with the copy ceiling.

The ceiling is a jitted ``x + 1`` of the same size (8 bytes per element: one read, one write; XLA folds
``x + 0`` and ``x * 1`` into a plain copy, so a non-foldable op is used), timed right before each jax
timing of the same size so that both see the same load from other processes. ``jax x ceil`` is the jax
time over the ceiling's time for the operation's bytes: 1.0 means it runs at the memory bandwidth.

Implementations:

* ``jax``: ``wage_jax`` under ``jax.jit``, ``block_until_ready`` on the result; stochastic modes draw
  their uniforms inside the jitted function from a PRNG key (``jax.random.uniform``'s values).
* ``qtorch``: ``wage_torch`` (qtorch's C++ CPU kernels, ``torch.rand_like`` for stochastic rounding);
  the WAGE quantizer is ``WAGEQuantizer`` forward, then ``backward`` of a gradient through it.
* ``wt-torch``: ``wage_torch`` on its torch backend (``wage_torch.set_backend("torch")``: the same
  bits as qtorch's CPU kernel from plain torch operations, eager, torch's threads); ``wt-compiled``: the
  same functions under ``torch.compile`` (inductor, ``fallback_random=True`` so the draws stay torch's).
* ``torch``: the same arithmetic as a plain torch expression (``clamp(round(x * 2^fl) / 2^fl, lo, hi)``,
  ``floor(x * 2^fl + rand) / 2^fl`` for stochastic; ``shift`` from a float ``log2``), which is *not* bit
  exact (round-half-even of ``x * 2^fl`` instead of the kernel's float32 ``+ 0.5``); for scale only.

The last table, uniform draws alone (``wage_jax._src.fixed_point.uniform``, equal to ``jax.random.uniform``;
``torch.rand_like`` in both torch columns), shows what stochastic rounding adds to a nearest one.
Timings are medians after warm-up calls; run through ``benchmarks.run`` (or this module's ``main``)
glibc keeps freed buffers for reuse (``benchmarks.common.steady_malloc``), so that no call pays for
page-faulting fresh output buffers.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks.common import Timing, format_table, si, steady_malloc, time_call

# bits/modes as WAGE 2-8-8-8 uses them: W 2 bits (layer scale 16, a typical conv layer's), G/A/E 8 bits.
BITS_W, SCALE_W, BITS, LR = 2, 16.0, 8, 8.0

FULL_SIZES = [2**e for e in range(10, 25, 2)]
QUICK_SIZES = [2**10, 2**16, 2**22]
TARGET_SIZE = 2**22
IMPLS = ("jax", "qtorch", "wt-torch", "wt-compiled", "torch")


@dataclass(frozen=True)
class Op:
    """One benchmarked operation: its name and the least bytes per element it must move."""

    name: str
    bytes_per_elem: int
    target: bool = True  # False: shown for explanation, not held to the targets


OPS = [
    Op("QW nearest (2 bit, scale 16)", 8),
    Op("QG nearest (8 bit)", 12),
    Op("QG stochastic (8 bit)", 12),
    Op("fixed_point nearest (8 bit)", 8),
    Op("fixed_point stochastic (8 bit)", 8),
    Op("wage_quantize fwd+bwd nearest", 22),
    Op("wage_quantize fwd+bwd E stochastic", 22),
    Op("uniform draws only (what stochastic adds)", 4, target=False),
]


def _jax_ops() -> dict[str, Callable[[int], Callable[[], object]]]:
    import jax

    import wage_jax as wj
    from wage_jax._src.fixed_point import uniform

    key = jax.random.key(0)

    def wq_fb(E_mode: str):
        def f(a, g, k):
            out, vjp = jax.vjp(lambda t: wj.wage_quantize(t, BITS, BITS, "nearest", E_mode, key=k), a)
            return out, vjp(g)[0]

        return jax.jit(f)

    jitted = {
        OPS[0].name: jax.jit(lambda a: wj.QW(a, BITS_W, SCALE_W)),
        OPS[1].name: jax.jit(lambda a: wj.QG(a, BITS, LR)),
        OPS[2].name: jax.jit(lambda a, k: wj.QG(a, BITS, LR, "stochastic", key=k)),
        OPS[3].name: jax.jit(lambda a: wj.fixed_point_quantize(a, BITS, BITS - 1, symmetric=True)),
        OPS[4].name: jax.jit(
            lambda a, k: wj.fixed_point_quantize(a, BITS, BITS - 1, symmetric=True, rounding="stochastic", key=k)
        ),
        OPS[5].name: wq_fb("nearest"),
        OPS[6].name: wq_fb("stochastic"),
        OPS[7].name: jax.jit(lambda a, k: uniform(k, a.shape)),
    }
    two_args = {OPS[2].name, OPS[4].name, OPS[7].name}
    fwd_bwd = {OPS[5].name: None, OPS[6].name: key}

    def make(name: str) -> Callable[[int], Callable[[], object]]:
        f = jitted[name]

        def setup(n: int) -> Callable[[], object]:
            x = jax.device_put(_data(n, 0))
            g = jax.device_put(_data(n, 1))
            if name in two_args:
                return lambda: jax.block_until_ready(f(x, key))
            if name in fwd_bwd:
                k = fwd_bwd[name]
                return lambda: jax.block_until_ready(f(x, g, k))
            return lambda: jax.block_until_ready(f(x))

        return setup

    return {op.name: make(op.name) for op in OPS}


def _torch_unary(fn: Callable[[object], object]) -> Callable[[int], Callable[[], object]]:
    """A benchmark setup: ``n`` -> a call of ``fn`` on a float32 torch tensor of ``n`` elements."""

    def setup(n: int) -> Callable[[], object]:
        import torch

        x = torch.from_numpy(_data(n, 0))
        return lambda: fn(x)

    return setup


def _torch_forward_backward(q: Callable[[object], object]) -> Callable[[int], Callable[[], object]]:
    """Setup of a torch quantizer module's forward and backward at ``n`` elements (input gradient returned)."""
    import torch

    def setup(n: int):
        x, g = torch.from_numpy(_data(n, 0)), torch.from_numpy(_data(n, 1))

        def run():
            xr = x.detach().requires_grad_()
            q(xr).backward(g)
            return xr.grad

        return run

    return setup


def _qtorch_ops() -> dict[str, Callable[[int], Callable[[], object]]]:
    import torch
    from qtorch.quant import fixed_point_quantize

    import wage_torch as wt

    def wq_fb(E_mode: str):
        return _torch_forward_backward(wt.WAGEQuantizer(BITS, BITS, "nearest", E_mode))

    return {
        OPS[0].name: _torch_unary(lambda x: wt.QW(x, BITS_W, SCALE_W)),
        OPS[1].name: _torch_unary(lambda x: wt.QG(x, BITS, LR)),
        OPS[2].name: _torch_unary(lambda x: wt.QG(x, BITS, LR, "stochastic")),
        OPS[3].name: _torch_unary(
            lambda x: fixed_point_quantize(x, BITS, BITS - 1, clamp=True, symmetric=True, rounding="nearest")
        ),
        OPS[4].name: _torch_unary(
            lambda x: fixed_point_quantize(x, BITS, BITS - 1, clamp=True, symmetric=True, rounding="stochastic")
        ),
        OPS[5].name: wq_fb("nearest"),
        OPS[6].name: wq_fb("stochastic"),
        OPS[7].name: _torch_unary(torch.rand_like),
    }


def _torch_backend_ops(compiled: bool) -> dict[str, Callable[[int], Callable[[], object]]]:
    """wage_torch's torch backend (select it with ``set_backend("torch")`` before timing), eager or compiled."""
    import torch
    import torch._inductor.config as inductor_config

    import wage_torch as wt
    from wage_torch import torch_kernels

    inductor_config.fallback_random = True  # torch.rand_like's own draws under compile (bit parity)

    def c(fn):
        return torch.compile(fn, dynamic=False) if compiled else fn

    def wq_fb(E_mode: str):
        return _torch_forward_backward(c(wt.WAGEQuantizer(BITS, BITS, "nearest", E_mode)))

    fp = c(torch_kernels.fixed_point_quantize)
    return {
        OPS[0].name: _torch_unary(c(lambda x: wt.QW(x, BITS_W, SCALE_W))),
        OPS[1].name: _torch_unary(c(lambda x: wt.QG(x, BITS, LR))),
        OPS[2].name: _torch_unary(c(lambda x: wt.QG(x, BITS, LR, "stochastic"))),
        OPS[3].name: _torch_unary(lambda x: fp(x, BITS, BITS - 1, True, True, "nearest")),
        OPS[4].name: _torch_unary(lambda x: fp(x, BITS, BITS - 1, True, True, "stochastic")),
        OPS[5].name: wq_fb("nearest"),
        OPS[6].name: wq_fb("stochastic"),
        OPS[7].name: _torch_unary(torch.rand_like),
    }


def _plain_torch_ops() -> dict[str, Callable[[int], Callable[[], object]]]:
    import torch

    s = 2.0 ** (BITS - 1)
    hi = 1.0 - 1.0 / s
    sw = 2.0 ** (BITS_W - 1)
    hw = 1.0 - 1.0 / sw

    def shift(x):
        return x / 2.0 ** torch.ceil(torch.log2(x.abs().max()))

    def fp(y, stochastic: bool, clamp: bool = True):
        r = torch.floor(y * s + torch.rand_like(y)) if stochastic else torch.round(y * s)
        r = r / s
        return torch.clamp(r, -hi, hi) if clamp else r

    def fwd_bwd(stochastic: bool):
        def setup(n: int):
            x, g = torch.from_numpy(_data(n, 0)), torch.from_numpy(_data(n, 1))

            def run():
                r = torch.round(x * s) / s
                mask = (r > hi) | (r < -hi)
                out = torch.clamp(r, -hi, hi)
                e = fp(shift(g), stochastic).masked_fill_(mask, 0.0)
                return out, e

            return run

        return setup

    norm = LR / s
    return {
        OPS[0].name: _torch_unary(lambda x: torch.clamp(torch.round(x * sw) / sw, -hw, hw) / SCALE_W),
        OPS[1].name: _torch_unary(lambda x: fp(norm * shift(x), False, clamp=False)),
        OPS[2].name: _torch_unary(lambda x: fp(norm * shift(x), True, clamp=False)),
        OPS[3].name: _torch_unary(lambda x: fp(x, False)),
        OPS[4].name: _torch_unary(lambda x: fp(x, True)),
        OPS[5].name: fwd_bwd(False),
        OPS[6].name: fwd_bwd(True),
        OPS[7].name: _torch_unary(torch.rand_like),
    }


def _data(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.5).astype(np.float32)


def ceiling_setup(n: int) -> Callable[[], object]:
    """A jitted ``x + 1`` over ``n`` float32: one read and one write per element, nothing else."""
    import jax

    f = jax.jit(lambda a: a + np.float32(1.0))
    x = jax.device_put(_data(n, 0))
    return lambda: jax.block_until_ready(f(x))


def measure(quick: bool = False, log: Callable[[str], None] = print) -> dict:
    """Run every (op, implementation, size).

    Returns ``{"sizes": [n], "ceiling": {(op, n): Timing}, "t": {(op, impl, n): Timing}}``.
    """
    import torch

    torch.set_num_threads(torch.get_num_threads())  # keep torch's default (all usable cores)
    sizes = QUICK_SIZES if quick else FULL_SIZES
    budget = 0.1 if quick else 0.4
    import wage_torch

    impls = {
        "jax": _jax_ops(),
        "qtorch": _qtorch_ops(),
        "wt-torch": _torch_backend_ops(compiled=False),
        "wt-compiled": _torch_backend_ops(compiled=True),
        "torch": _plain_torch_ops(),
    }
    result: dict = {"sizes": sizes, "ceiling": {}, "t": {}}
    ceilings = {n: ceiling_setup(n) for n in sizes}
    for op in OPS:
        log(f"  quantizers: {op.name}")
        for impl, table in impls.items():
            wage_torch.set_backend("torch" if impl.startswith("wt-") else "qtorch")
            for n in sizes:
                # Enough warm-up calls for the allocator to settle on reused buffers (see steady_malloc),
                # except for qtorch/torch at large sizes, whose single call takes 0.1-0.7 s.
                warmup = 1 if impl != "jax" and n >= 2**22 else (12 if n >= 2**20 else 5)
                if impl == "jax":
                    # The ceiling is re-measured next to every jax timing: other processes on the machine
                    # change the bandwidth available from minute to minute, so compare like with like.
                    result["ceiling"][(op.name, n)] = time_call(
                        ceilings[n], warmup=warmup, budget_s=budget / 2, max_reps=200
                    )
                result["t"][(op.name, impl, n)] = time_call(
                    table[op.name](n), warmup=warmup, min_reps=3, budget_s=budget, max_reps=200
                )
    return result


def ceiling(result: dict, n: int, op: Op | None = None) -> Timing:
    """The ceiling measured next to ``op``'s jax timing at size ``n`` (``op=None``: the fastest of them)."""
    if op is not None:
        return result["ceiling"][(op.name, n)]
    return min((t for (_, m), t in result["ceiling"].items() if m == n), key=lambda t: t.median)


def ideal_time(op: Op, ceil: Timing) -> float:
    """The time ``op`` would take at the copy ceiling's bandwidth for its least bytes."""
    return ceil.median * op.bytes_per_elem / 8.0


def tables(result: dict, markdown: bool = False) -> str:
    """The ceiling table and one table per operation."""
    sizes = result["sizes"]
    out = []
    rows = []
    for n in sizes:
        t = ceiling(result, n)
        slow = max((t for (_, m), t in result["ceiling"].items() if m == n), key=lambda t: t.median)
        rows.append([
            f"2^{int(math.log2(n))}", f"{t.median * 1e3:.3f}", si(n / t.median, "el/s"),
            f"{8 * n / t.median / 1e9:.1f}", f"{8 * n / slow.median / 1e9:.1f}",
        ])
    out.append(
        "Bandwidth ceiling: jitted x + 1 (8 bytes/element), measured next to each jax timing\n"
        + format_table(["n", "best ms", "elements/s", "best GB/s", "worst GB/s"], rows, markdown)
    )
    for op in OPS:
        rows = []
        for n in sizes:
            ceil = ceiling(result, n, op)
            row = [f"2^{int(math.log2(n))}"]
            tj = result["t"][(op.name, "jax", n)]
            for impl in IMPLS:
                t = result["t"][(op.name, impl, n)]
                row += [f"{t.median * 1e3:.3f}", f"{op.bytes_per_elem * n / t.median / 1e9:.2f}"]
            row += [
                f"{ceiling_ratio(op, tj, ceil):.2f}",
                f"{result['t'][(op.name, 'qtorch', n)].median / tj.median:.1f}",
                f"{result['t'][(op.name, 'torch', n)].median / tj.median:.1f}",
            ]
            tq = result["t"][(op.name, "qtorch", n)].median
            row += [f"{tq / result['t'][(op.name, impl, n)].median:.1f}" for impl in ("wt-torch", "wt-compiled")]
            rows.append(row)
        header = ["n"] + [h for impl in IMPLS for h in (f"{impl} ms", "GB/s")]
        header += ["jax x ceil", "qtorch/jax", "torch/jax", "qtorch/wt-torch", "qtorch/wt-compiled"]
        out.append(f"{op.name}  ({op.bytes_per_elem} bytes/elem)\n" + format_table(header, rows, markdown))
    return "\n\n".join(out)


def ceiling_ratio(op: Op, t: Timing, ceil: Timing) -> float:
    """``t`` over the ceiling-bandwidth time of ``op``'s bytes (1.0: at the bandwidth)."""
    return t.median / ideal_time(op, ceil)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sizes 2^10, 2^16, 2^22 and shorter repeats")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    steady_malloc()
    print(tables(measure(args.quick), args.markdown))


if __name__ == "__main__":
    main()
