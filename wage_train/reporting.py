"""Per-epoch table, metrics files, plots and the multi-run results table of the training example.

``python -m wage_train.reporting RUN_DIR...`` prints a markdown table (test accuracy mean ± std over seeds, run
time) of finished runs, grouped by data set, model, WAGE/float and framework.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wage_train.safe_io import atomic_write

__all__ = ["format_header", "format_row", "plot_run", "results_table", "write_csv", "write_json"]

METRIC_FIELDS = ("epoch", "framework", "loss", "train_acc", "test_acc", "lr", "time_s", "images_per_s")


def format_header() -> str:
    """The header line of the per-epoch table."""
    return (f"{'epoch':>5}  {'framework':<9} {'loss':>8} {'train acc':>9} {'test acc':>9} {'lr':>7} {'time s':>7} "
            f"{'img/s':>8}")


def format_row(m: dict[str, Any]) -> str:
    """One per-epoch row of ``m``, a dict with the keys of ``METRIC_FIELDS`` (accuracies as fractions)."""
    return (f"{m['epoch']:>5}  {m['framework']:<9} {m['loss']:>8.4f} {100 * m['train_acc']:>8.2f}% "
            f"{100 * m['test_acc']:>8.2f}% {m['lr']:>7.4g} {m['time_s']:>7.2f} {m['images_per_s']:>8.0f}")


def _finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None, in nested dicts, lists and tuples."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_none(v) for v in obj]
    return obj


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` atomically as CSV, the first row's keys as columns; a non-finite number is an empty cell."""
    with atomic_write(Path(path), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0] if rows else METRIC_FIELDS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(_finite_or_none(list(rows)))


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` atomically as indented, strictly valid JSON (NaN and infinities as ``null``)."""
    with atomic_write(path, "w") as f:
        f.write(json.dumps(_finite_or_none(obj), indent=2, allow_nan=False) + "\n")


def plot_run(path: str | Path, history: Sequence[dict[str, Any]], weights: Sequence[tuple[str, np.ndarray]],
             title: str, weights_label: str = "QW(accumulator)") -> None:
    """A PNG: loss and accuracy per epoch (a line per framework), then a histogram of each layer's weights
    (``weights``: ``(layer name, array)`` pairs as the forward pass uses them; a diverged layer has none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(max(len(weights), 2), 4)
    hist_rows = -(-len(weights) // cols)
    fig = plt.figure(figsize=(4.5 * cols, 4 * (1 + hist_rows)), constrained_layout=True)
    grid = fig.add_gridspec(1 + hist_rows, cols)
    ax_loss, ax_acc = fig.add_subplot(grid[0, : cols // 2]), fig.add_subplot(grid[0, cols // 2 :])
    for fw in sorted({m["framework"] for m in history}):
        rows = [m for m in history if m["framework"] == fw and all(
            isinstance(m.get(k), int | float) and math.isfinite(m[k]) for k in ("loss", "train_acc", "test_acc"))]
        epochs = [m["epoch"] for m in rows]
        ax_loss.plot(epochs, [m["loss"] for m in rows], marker=".", label=fw)
        ax_acc.plot(epochs, [100 * m["train_acc"] for m in rows], marker=".", linestyle="--", label=f"{fw} train")
        ax_acc.plot(epochs, [100 * m["test_acc"] for m in rows], marker=".", label=f"{fw} test")
    ax_loss.set(xlabel="epoch", ylabel="loss per example (0.5 sum sq. err.)", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy %", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for i, (name, w) in enumerate([(n, w) for n, w in weights if np.isfinite(w).all()]):
        ax = fig.add_subplot(grid[1 + i // cols, i % cols])
        values, counts = np.unique(w.ravel(), return_counts=True)
        if len(values) <= 32:  # quantized weights take a handful of values: one bar each
            ax.bar(values, counts, width=0.8 * (np.min(np.diff(values)) if len(values) > 1 else 1.0))
            ax.set_xticks(values)
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        else:
            ax.hist(w.ravel(), bins=60)
        ax.set_title(f"{name} {tuple(w.shape)}: {len(values)} distinct values", fontsize=9)
        if i % cols == 0:
            ax.set_ylabel(f"count ({weights_label})")
    fig.suptitle(title, fontsize=10)
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=90)
    finally:
        plt.close(fig)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def results_table(run_dirs: Iterable[str | Path]) -> str:
    """A markdown table of the finished runs in ``run_dirs`` (each with ``metrics.json``), a row per group of
    seeds: final test accuracy mean ± sample std, best-epoch test accuracy mean, mean time per run."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for path in (Path(d) / "metrics.json" for d in run_dirs):
        if not path.is_file():
            continue
        run = json.loads(path.read_text())
        cfg = run["config"]
        method = "float" if cfg["float"] else "WAGE " + "-".join(str(b) for b in cfg["bits"])
        for fw, summary in run["summary"]["frameworks"].items():
            key = (cfg["dataset"], run["summary"]["model"], method, fw, cfg["epochs"])
            groups.setdefault(key, []).append({"seed": cfg["seed"], **summary})
    lines = ["| data set | model | method | framework | epochs | seeds | test accuracy (final) | best epoch | "
             "time / run |", "|---|---|---|---|---|---|---|---|---|"]
    for (dataset, model, method, fw, epochs), runs in sorted(groups.items()):
        mean, std = _mean_std([100 * r["final_test_acc"] for r in runs])
        best, _ = _mean_std([100 * r["best_test_acc"] for r in runs])
        t, _ = _mean_std([r["train_time_s"] + r["eval_time_s"] for r in runs])
        seeds = ",".join(str(r["seed"]) for r in sorted(runs, key=lambda r: r["seed"]))
        lines.append(f"| {dataset} | {model} | {method} | {fw} | {epochs} | {seeds} | {mean:.2f}% ± {std:.2f} "
                     f"| {best:.2f}% | {t:.1f} s |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Print :func:`results_table` of the run directories given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", help="run directories (each with metrics.json)")
    print(results_table(parser.parse_args(argv).run_dirs))


if __name__ == "__main__":
    main()
