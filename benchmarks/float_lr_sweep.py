"""How the float baseline's default lr was chosen: a sweep on a validation split, never the test set.

    python -m benchmarks.float_lr_sweep [--seeds 0,1] [--out DIR] [--quick]

For each offline data set the ``wage-train`` CLI reads (the 8x8 digits, and the digits upscaled to 28x28
and written as MNIST idx files), runs ``wage-train --float --validation 0.2`` at the data set's default
epochs and batch size for lrs ``rule * 2^k`` (``k = -3 .. 3``, ``rule = wage_train.config.float_lr``), and
prints the mean final validation accuracy per lr over the seeds, the best lr, and where the rule's lr stands;
then the multiplier ``2^k`` with the best accuracy averaged over the data sets (how the rule's constant,
``wage_train.config.FLOAT_LR``, is chosen). WAGE 2-8-8-8 at its defaults is run on the same split for
reference. The test set is not read by any run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

from wage_train.cli import run
from wage_train.config import float_lr
from wage_train.mnist_format import write_mnist_format_digits

VALIDATION = 0.2
EXPONENTS = (-3, -2, -1, 0, 1, 2, 3)
# The rule's lr counts as validated when its mean accuracy is within this of the best lr's.
TOLERANCE = 0.005


def _one_run(argv: list[str]) -> float | None:
    """Final validation accuracy of one wage-train invocation, or None when it diverged."""
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        try:
            summary = run([*argv, "--validation", str(VALIDATION), "--no-progress", "--out-dir", f"{out}/run"])
        except SystemExit as e:
            if e.code == 1:  # diverged: a non-finite loss or weight
                return None
            raise
    (fw,) = summary["frameworks"].values()
    return fw["final_test_acc"]  # the held-out validation split (see --validation)


def _pct(value: float | None) -> str:
    return "diverged" if value is None else f"{100 * value:.2f} %"


def sweep(name: str, data_args: list[str], image_shape: tuple[int, ...], seeds: list[int],
          exponents: tuple[int, ...]) -> dict:
    rule = float_lr(image_shape)
    rows = []
    for k in exponents:
        lr = rule * 2.0**k
        accs = [_one_run([*data_args, "--float", "--lr", repr(lr), "--seed", str(s)]) for s in seeds]
        finite = [a for a in accs if a is not None]
        mean = statistics.fmean(finite) if len(finite) == len(accs) else None
        rows.append({"exponent": k, "lr": lr, "accuracies": accs, "mean": mean})
        print(f"  {name:<14} float lr {lr:<11.4g} (rule x 2^{k:+d})  validation {_pct(mean)}", flush=True)
    wage = [_one_run([*data_args, "--seed", str(s)]) for s in seeds]
    wage_mean = statistics.fmean(wage) if None not in wage else None
    scored = [r for r in rows if r["mean"] is not None]
    best = max(scored, key=lambda r: r["mean"])
    at_rule = next(r for r in rows if r["exponent"] == 0)
    ok = at_rule["mean"] is not None and best["mean"] - at_rule["mean"] <= TOLERANCE
    print(f"  {name:<14} best float lr {best['lr']:.4g} ({_pct(best['mean'])}); rule lr {rule:.4g} "
          f"({_pct(at_rule['mean'])}): {'PASS' if ok else 'MISS'} (within {100 * TOLERANCE:.1f} points of the "
          f"best); WAGE 2-8-8-8 {_pct(wage_mean)}", flush=True)
    return {"data": name, "rule_lr": rule, "rows": rows, "best_lr": best["lr"], "best_mean": best["mean"],
            "rule_mean": at_rule["mean"], "rule_within_tolerance": ok, "wage_accuracies": wage,
            "wage_mean": wage_mean}


def _best_common_exponent(results: list[dict]) -> int:
    """The ``k`` whose lr ``rule * 2^k`` has the best validation accuracy averaged over the data sets."""
    means: dict[int, list[float]] = {}
    for r in results:
        for row in r["rows"]:
            means.setdefault(row["exponent"], []).append(row["mean"])
    scored = {k: statistics.fmean(v) for k, v in means.items() if None not in v}
    return max(scored, key=lambda k: (scored[k], -abs(k)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1", help="comma-separated run seeds (default 0,1)")
    p.add_argument("--out", type=Path, help="write sweep.json there")
    p.add_argument("--quick", action="store_true", help="3 lrs (rule x 1/2, 1, 2), 3 epochs: a smoke run")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    exponents = (-1, 0, 1) if args.quick else EXPONENTS
    extra = ["--epochs", "3"] if args.quick else []
    t0 = time.perf_counter()
    print(f"float lr sweep: {VALIDATION:.0%} of each training set held out (fixed split), seeds {seeds}, "
          "default epochs and batch size; the test set is never read", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        mnist_dir = write_mnist_format_digits(Path(tmp) / "mnist")
        results = [
            sweep("digits 8x8", ["--dataset", "digits", *extra], (8, 8, 1), seeds, exponents),
            sweep("MNIST-format", ["--dataset", "mnist", "--data-dir", str(mnist_dir), *extra], (28, 28, 1),
                  seeds, exponents),
        ]
    best_k = _best_common_exponent(results)
    print(f"best multiplier over both data sets: rule x 2^{best_k:+d}"
          f"{' (the rule as it stands)' if best_k == 0 else ''}; wall time {time.perf_counter() - t0:.0f} s",
          flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "sweep.json").write_text(json.dumps({"validation": VALIDATION, "seeds": seeds,
                                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
