"""Exactness headroom of WAGE training steps: per layer and step, the largest partial sum against 2^24.

    python -m benchmarks.headroom [--model vgg7|mlp|lenet5] [--batch 128 512] [--steps 8]

Every WAGE product is exact; a float32 sum of them is exact in any order, so bit-identical on any backend,
while every partial sum stays within 2^24 units of its grids (``wage_jax.checked.sum_bounds``). The static
bound (``wage_jax.integer.exact_in_float32``) fails for the convolutions' kernel gradients; this measures
the actual sums: before each step of the host reference (the trajectories' own, or one built here on the
CPU), ``wage_jax.checked.layer_sum_bounds`` on that step's parameters, batch and key. The figure is
``max bound / 2^24`` per layer and product (the headroom is its inverse): at most 1, the step is exact in any
order there; above 1, the CPU/GPU identity holds only where the sums happen not to round. The suite's
trajectory phase reports one row per layer (its worst product) and every step in its JSON.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import jax
import numpy as np

from benchmarks.core import row
from wage_jax.checked import EXACT_SUM_LIMIT, layer_sum_bounds

__all__ = ["Probe", "headroom_rows", "measure", "table"]


class Probe:
    """``layer_sum_bounds`` compiled for a ``benchmarks.steps.Runner``: ``probe()`` measures the step the runner
    takes next (its parameters, batch and key), on the runner's device."""

    def __init__(self, runner: Any) -> None:
        model = runner.spec.build(runner.variant)

        def bounds(p, x, y, key):
            return layer_sum_bounds(model, p, x, y, rngs=None if key is None else {"wage": key})

        self.runner = runner
        with jax.default_device(runner.device):
            self.compiled = jax.jit(bounds).lower(runner.params, *runner.data[0], runner.keys[0]).compile()

    def __call__(self) -> dict[str, dict[str, float]]:
        r = self.runner
        x, y = r.data[r.steps % len(r.data)]
        out = jax.device_get(self.compiled(r.params, x, y, r.keys[r.steps % len(r.keys)]))
        return {layer: {p: float(v) / EXACT_SUM_LIMIT for p, v in b.items()} for layer, b in out.items()}


def measure(runner: Any, steps: int, after_step: Any = None) -> dict[str, dict[str, list[float]]]:
    """``steps`` steps of ``runner``, each measured before it runs: ``{layer: {product: [bound / 2^24 per step]}}``.
    ``after_step()`` runs after each step (the trajectories record the reference's state there)."""
    probe = Probe(runner)
    per_step = []
    for _ in range(steps):
        per_step.append(probe())
        runner.dispatch()
        if after_step is not None:
            after_step()
    return {layer: {p: [s[layer][p] for s in per_step] for p in per_step[0][layer]} for layer in per_step[0]}


def headroom_rows(label: str, headroom: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """One row per layer: the largest ``bound / 2^24`` of its three products over the steps (target: at most 1);
    the note gives each product's largest and the step of the worst."""
    rows = []
    for layer, products in headroom.items():
        worst = {p: max(ratios) for p, ratios in products.items()}
        product = max(worst, key=worst.get)
        step = int(np.argmax(products[product]))
        figure = worst[product]
        rows.append(row(f"headroom {label} {layer}", figure, "x 2^24", target="figure <= 1", note=(
            ", ".join(f"{p} {v:.3g}" for p, v in worst.items()) + f"; worst: {product} at step {step}; "
            + ("exact in any order" if figure <= 1 else "past 2^24: float32 sums may round (identity within "
               "the bound only)"))))
    return rows


def table(headrooms: dict[str, dict[str, dict[str, list[float]]]]) -> str:
    """Markdown: one row per layer, one column per (run, product): the largest ``bound / 2^24`` over the steps."""
    runs = list(headrooms)
    products = ("forward", "input_grad", "kernel_grad")
    head = ["layer", *(f"{run} {p}" for run in runs for p in products)]
    layers = list(headrooms[runs[0]])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for layer in layers:
        cells = [f"{max(headrooms[run][layer][p]):.3g}" for run in runs for p in products]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.steps import VARIANTS, ModelSpec, Runner, batches, init_params, step_keys

    parser = argparse.ArgumentParser(prog="python -m benchmarks.headroom", description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("vgg7", "mlp", "lenet5"), default="vgg7")
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--nearest", action="store_true", help="every rounding nearest (default: the paper's modes)")
    args = parser.parse_args(argv)
    if args.steps < 1 or min(args.batch) < 1:
        parser.error("--steps and --batch must be positive")
    spec = {"vgg7": ModelSpec("vgg7", (32, 32, 3)), "lenet5": ModelSpec("lenet5", (28, 28, 1)),
            "mlp": ModelSpec("mlp", (28, 28), (("hidden", (1024,)),))}[args.model]
    v = VARIANTS["wage nearest" if args.nearest else "wage"]
    host = jax.devices("cpu")[0]
    print(f"{spec.describe()}, {v.name}, {args.steps} steps on {host.device_kind} (the suite's data, init and keys)",
          flush=True)
    headrooms = {}
    for batch in args.batch:
        runner = Runner(spec, v, host, init_params(spec, v), batches(spec, batch),
                        step_keys(args.steps) if v.stochastic else None)
        headrooms[f"b{batch}"] = measure(runner, args.steps)
        print(f"  b{batch}: done", flush=True)
    print()
    print("Largest partial sum over the steps, in units of its grids / 2^24 (> 1: float32 sums may round):")
    print()
    print(table(headrooms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
