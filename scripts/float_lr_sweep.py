"""How the float baseline's default lrs were chosen: a sweep on validation splits, never the test set.

    python scripts/float_lr_sweep.py [--seeds 0,1] [--lrs LR,...] [--only NAME,...] [--torch] [--out DIR] [--quick]

For every data set and model that ``wage-train`` reads (the embedded 8x8 digits with the MLP; MNIST-format
28x28 idx files with the MLP and LeNet-5; CIFAR-format 32x32x3 python batches with a narrow VGG7), it runs
``wage-train --float --validation 0.2`` (the standard recipe: softmax cross-entropy, SGD with momentum 0.9 on the
gradient clipped to norm 1, He init; ``wage_train.float_recipe``) over a grid of lrs in doublings (:data:`LRS`,
per model family) that holds the family's default (``wage_train.float_recipe.STANDARD_LR``) and 2x and 4x of it,
and WAGE 2-8-8-8 at its defaults on the same split. Same data,
augmentation and batch size (128) for both; the float lr is cosine-annealed to 0 over the run (the standard
recipe), WAGE's follows the paper's schedule (lr / 8 after 2/3 of the epochs, / 64 after 5/6); fewer epochs than
the defaults so that the sweep runs on a laptop CPU.

The MNIST- and CIFAR-format files are made here, in a temporary folder, from scikit-learn's digits upscaled
(``tests/fixtures.py``): there is no real MNIST or CIFAR-10 offline. The test sets are never read: 20 % of
each training set is held out by a fixed permutation (``--validation 0.2``: 1150 train / 287 validation images).

Printed per setting: the mean final validation accuracy per lr over the seeds, the best lr, where the default
stands, and the margin to instability: the smallest multiple of the default lr, above the best lr, at which
training breaks down (any seed diverges, or the mean accuracy falls more than ``BREAKDOWN`` below the sweep's
best). The default
passes when it is within noise of the best (one binomial standard error of an accuracy measured on the
validation images) and at least as accurate as WAGE 2-8-8-8 minus half a point, and 2x and 4x its lr still
train. ``--torch`` also trains the torch float baseline at the default lr (same recipe; its figures should agree
within noise). ``--out DIR`` keeps every run's result in ``DIR/runs.jsonl`` (a rerun with the same ``--out``
skips the runs already there) and writes ``DIR/sweep.json`` and the markdown tables ``DIR/sweep.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run from a checkout: import the wage_train next to this script, not another installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures import write_cifar_format_digits, write_mnist_format_digits  # noqa: E402
from wage_train.cli import run  # noqa: E402
from wage_train.float_recipe import STANDARD_LR  # noqa: E402

VALIDATION = 0.2
# Doublings around each family's default, up to where training breaks down.
LRS: dict[str, tuple[float, ...]] = {
    "mlp": (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56),
    "lenet5": (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56),
    "vgg7": (0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28),
}
# Training "breaks down" at an lr whose mean validation accuracy is this far below the sweep's best (or that
# diverges for some seed).
BREAKDOWN = 0.10
# The default must be at least as accurate as WAGE 2-8-8-8 minus this.
WAGE_MARGIN = 0.005

# name -> (model family, wage-train options without the data folder, which data folder, epochs)
SETTINGS: dict[str, tuple[str, list[str], str | None, int]] = {
    "digits MLP": ("mlp", ["--dataset", "digits"], None, 30),
    "MNIST-format MLP": ("mlp", ["--dataset", "mnist"], "mnist", 20),
    "MNIST-format LeNet-5": ("lenet5", ["--dataset", "mnist", "--model", "lenet5"], "mnist", 15),
    "CIFAR-format VGG7 16-32-64": (
        "vgg7", ["--dataset", "cifar10", "--widths", "16,32,64", "--vgg-hidden", "256"], "cifar", 15),
}


def _one_run(argv: list[str]) -> dict[str, Any]:
    """One wage-train invocation on the validation split: ``{"acc": final accuracy or None, "diverged": bool}``."""
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        try:
            summary = run([*argv, "--validation", str(VALIDATION), "--no-progress", "--out-dir", f"{out}/run"])
        except SystemExit as e:
            if e.code == 1:  # diverged: a non-finite loss or weight
                return {"acc": None, "diverged": True}
            raise
    (fw,) = summary["frameworks"].values()
    return {"acc": fw["final_test_acc"], "diverged": False}  # the held-out validation split (--validation)


class Runs:
    """Every run's result, by its options; kept in ``runs.jsonl`` when given (a rerun skips what is there).

    Options name the data folders as ``<mnist>`` / ``<cifar>`` (the files are made anew in a temporary folder each
    time), replaced by ``data_dirs`` when a run starts.
    """

    def __init__(self, path: Path | None, data_dirs: dict[str, str]) -> None:
        self.path, self.data_dirs, self.done = path, data_dirs, {}
        if path is not None and path.is_file():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                self.done[tuple(row["argv"])] = row["result"]

    def get(self, argv: list[str]) -> dict[str, Any]:
        key = tuple(argv)
        if key not in self.done:
            t0 = time.perf_counter()
            real = [self.data_dirs.get(a[1:-1], a) if a.startswith("<") else a for a in argv]
            self.done[key] = {**_one_run(real), "seconds": round(time.perf_counter() - t0, 1)}
            if self.path is not None:
                with self.path.open("a") as f:
                    f.write(json.dumps({"argv": argv, "result": self.done[key]}) + "\n")
        return self.done[key]


def _mean(results: list[dict[str, Any]]) -> float | None:
    """Mean accuracy over the seeds, None when any seed diverged."""
    if any(r["diverged"] for r in results):
        return None
    return statistics.fmean(r["acc"] for r in results)


def _pct(value: float | None) -> str:
    return "diverged" if value is None else f"{100 * value:.2f} %"


def _times(ratio: float) -> str:
    return f"x{ratio:g}" if ratio >= 1 else f"x1/{1 / ratio:g}"


def trains(mean: float | None, best: float) -> bool:
    """Whether a mean accuracy (None: a seed diverged) still trains: at most ``BREAKDOWN`` below the best."""
    return mean is not None and mean >= best - BREAKDOWN


def noise(accuracy: float, n: int) -> float:
    """One binomial standard error of an accuracy measured on ``n`` examples, ``sqrt(p (1 - p) / n)``."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n)


def sweep(name: str, runs: Runs, seeds: list[int], lrs: tuple[float, ...] | None, torch: bool,
          epochs: int | None = None) -> dict[str, Any]:
    """Sweep one setting (a key of :data:`SETTINGS`) over ``lrs`` (default: its family's :data:`LRS`); prints a
    line per lr and the verdict; returns the figures."""
    family, options, folder, default_epochs = SETTINGS[name]
    lrs = lrs or LRS[family]
    base = [*options, *(["--data-dir", f"<{folder}>"] if folder else []),
            "--epochs", str(epochs or default_epochs)]
    default = STANDARD_LR[family]
    rows = []
    for lr in lrs:
        results = [runs.get([*base, "--float", "--lr", repr(lr), "--seed", str(s)]) for s in seeds]
        rows.append({"ratio": round(lr / default, 9), "lr": lr, "accuracies": [r["acc"] for r in results],
                     "mean": _mean(results), "seconds": sum(r["seconds"] for r in results)})
        print(f"  {name:<28} float lr {lr:<9.4g} ({_times(lr / default):>6} default)  validation "
              f"{_pct(rows[-1]['mean'])}", flush=True)
    wage = [runs.get([*base, "--seed", str(s)]) for s in seeds]
    wage_mean = _mean(wage)
    torch_mean = None
    if torch:
        # The lr is explicit so that a kept run at another default is not taken for this one.
        torch_mean = _mean([runs.get([*base, "--float", "--lr", repr(default), "--framework", "torch", "--seed",
                                      str(s)]) for s in seeds])
    n_val = _validation_count()
    scored = [r for r in rows if r["mean"] is not None]
    best = max(scored, key=lambda r: r["mean"])
    at_default = next((r for r in rows if r["ratio"] == 1), None)
    # Breakdown: the smallest lr above both the best and the default that no longer trains.
    broken = [r["ratio"] for r in rows
              if r["ratio"] > 1 and r["lr"] > best["lr"] and not trains(r["mean"], best["mean"])]
    breaks_at = min(broken) if broken else None
    tol = noise(best["mean"], n_val)
    d = at_default["mean"] if at_default else None
    checks = {
        "within_noise_of_best": d is not None and best["mean"] - d <= tol,
        "wage_minus_half_point": d is not None and wage_mean is not None and d >= wage_mean - WAGE_MARGIN,
        "x2_x4_train": sum(1 for r in rows if r["ratio"] in (2, 4) and trains(r["mean"], best["mean"])) == 2,
    }
    margin = _margin(breaks_at, rows)
    print(f"  {name:<28} best lr {best['lr']:.4g} ({_pct(best['mean'])}); default {default:g} "
          f"({_pct(d) if at_default else 'not swept'}); "
          f"noise {100 * tol:.2f} points; breaks down at {margin} the default; WAGE 2-8-8-8 {_pct(wage_mean)}"
          + (f"; torch float {_pct(torch_mean)}" if torch else "")
          + f": {'PASS' if all(checks.values()) else 'MISS ' + ', '.join(k for k, v in checks.items() if not v)}",
          flush=True)
    return {"setting": name, "family": family, "epochs": epochs or default_epochs, "default_lr": default,
            "rows": rows, "best_lr": best["lr"], "best_mean": best["mean"], "default_mean": d,
            "noise": tol, "breaks_down_at": breaks_at, "wage_mean": wage_mean,
            "wage_accuracies": [r["acc"] for r in wage], "torch_mean": torch_mean, "checks": checks}


def choose(results: list[dict[str, Any]]) -> dict[str, float | None]:
    """The lr each model family's default should be: among the lrs swept on every setting of the family, those
    within noise of each setting's best whose 2x and 4x still train on every setting; of these, the one with the
    best mean accuracy over the family's settings (None when no lr qualifies)."""
    chosen: dict[str, float | None] = {}
    for family in dict.fromkeys(r["family"] for r in results):
        mine = [r for r in results if r["family"] == family]
        grids = [{row["lr"]: row["mean"] for row in r["rows"]} for r in mine]
        scores = {}
        for lr in set.intersection(*(set(g) for g in grids)):
            ok = True
            for r, g in zip(mine, grids, strict=True):
                acc = g[lr]
                ok &= acc is not None and r["best_mean"] - acc <= r["noise"]
                for m in (2, 4):  # the lr may be raised 4x and still train
                    ok &= trains(g.get(lr * m), r["best_mean"])
            if ok:
                scores[lr] = statistics.fmean(g[lr] for g in grids)
        chosen[family] = max(scores, key=lambda lr: (scores[lr], -lr)) if scores else None
    return chosen


def _validation_count() -> int:
    """Validation images of a setting: every data set here is made from the 1437 training digits."""
    return 1437 - round(1437 * (1 - VALIDATION))


def _margin(breaks_at: float | None, rows: list[dict[str, Any]]) -> str:
    """Where training breaks down, as a multiple of the default lr (above the grid: ``> x<largest>``)."""
    return f"> {_times(max(r['ratio'] for r in rows))}" if breaks_at is None else _times(breaks_at)


def markdown(results: list[dict[str, Any]]) -> str:
    """The sweep as a markdown table: one row per setting, one column per lr (the default's in bold)."""
    lrs = sorted({row["lr"] for r in results for row in r["rows"]})
    head = "| setting, default lr (epochs) | " + " | ".join(f"lr {lr:g}" for lr in lrs) + \
        " | breaks down at | WAGE 2-8-8-8 | torch float (default lr) |"
    lines = [head, "|" + " --- |" * (len(lrs) + 4)]
    for r in results:
        by_lr = {row["lr"]: row for row in r["rows"]}
        cells = []
        for lr in lrs:
            row = by_lr.get(lr)
            cell = "-" if row is None else _pct(row["mean"])
            if row is not None and row["ratio"] == 1:
                cell = f"**{cell}**"
            cells.append(cell)
        margin = _margin(r["breaks_down_at"], r["rows"]) + " the default"
        lines.append(f"| {r['setting']}, lr {r['default_lr']:g} ({r['epochs']}) | " + " | ".join(cells)
                     + f" | {margin} | {_pct(r['wage_mean'])} | "
                     + (_pct(r["torch_mean"]) if r["torch_mean"] is not None else "-") + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1", help="comma-separated run seeds (default 0,1)")
    p.add_argument("--lrs", help="comma-separated lrs (default: per model family, doublings around its default); "
                   "each setting's default and 2x, 4x of it must be among them")
    p.add_argument("--only", help="comma-separated settings to run (default all): " + "; ".join(SETTINGS))
    p.add_argument("--torch", action="store_true", help="also train the torch float baseline at the default lr")
    p.add_argument("--epochs", type=int, help="epochs of every run (default: per setting)")
    p.add_argument("--out", type=Path, help="keep runs.jsonl, sweep.json and sweep.md there")
    p.add_argument("--quick", action="store_true", help="lrs 0.02, 0.04, 0.08, 2 epochs, seed 0: a smoke run")
    args = p.parse_args(argv)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    lrs = (0.02, 0.04, 0.08) if args.quick else (tuple(float(v) for v in args.lrs.split(",")) if args.lrs else None)
    epochs = 2 if args.quick else args.epochs
    names = list(SETTINGS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        p.error(f"--only: unknown setting {unknown[0]!r} (known: {'; '.join(SETTINGS)})")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"float lr sweep (standard recipe): {VALIDATION:.0%} of each training set held out (fixed split), seeds "
          f"{seeds}, batch 128, lr cosine-annealed over the run; the test sets are never read", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data_dirs = {"mnist": str(write_mnist_format_digits(Path(tmp) / "mnist")),
                     "cifar": str(write_cifar_format_digits(Path(tmp) / "cifar"))}
        runs = Runs(args.out / "runs.jsonl" if args.out else None, data_dirs)
        results = [sweep(n, runs, seeds, lrs, args.torch, epochs) for n in names]
    table = markdown(results)
    chosen = choose(results)
    print("\n" + table, flush=True)
    for family, lr in chosen.items():
        now = STANDARD_LR[family]
        chooses = "no lr meets every criterion" if lr is None else f"the sweep chooses lr {lr:g}"
        print(f"{family}: {chooses}; wage_train.float_recipe.STANDARD_LR has {now:g}"
              f"{'' if lr == now or lr is None else ' (differs)'}", flush=True)
    print(f"wall time {time.perf_counter() - t0:.0f} s", flush=True)
    if args.out:
        (args.out / "sweep.json").write_text(json.dumps({"validation": VALIDATION, "seeds": seeds,
                                                         "results": results, "chosen": chosen}, indent=2))
        (args.out / "sweep.md").write_text(table)
    ok = all(all(r["checks"].values()) for r in results) and all(chosen[f] == STANDARD_LR[f] for f in chosen)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
