"""The training CLI's loop vs a tight loop of the same jitted WAGE step, side by side in one run.

    python -m benchmarks.loop_overhead [--quick] [--steps N] [--epochs E] [--only lenet5|vgg7]

For each model (LeNet-5 on 28x28x1 as ``--preset paper-mnist``; a narrow VGG7, conv 16-32-64 and dense 128,
on 32x32x3 as ``--preset paper-cifar10``, crop + flip augmentation included), batch 128, the paper's 2-8-8-8
with W and A nearest and G and E stochastic, on random images written in the data sets' own file formats:

* **cli**: ``wage_train.cli.run`` for ``E`` epochs of ``N`` steps (``--limit-batches N``). The wall time of an
  epoch's training loop is taken from the loop's progress bar (opened before the epoch's data order is drawn,
  closed after the last step's results are in), so data preparation, placement, key derivation and the host's
  reads all count, but evaluation and checkpoints do not; the first epoch (compilation) is not used.
* **tight**: the runner's own jitted step (``JaxRunner._step``, built by ``wage_train.runner.make_runners`` from
  the run's ``config.json``) called ``N`` times on batches already on the device with keys split ahead of time.

The two alternate: right after each CLI epoch's bar closes, one tight repeat of ``N`` steps runs (the tight
runner is built and warmed up after the first epoch), so each pair sees the same load from other processes on
a shared machine. Prints the best images/s of each, their ratio ``cli / tight`` (the target is >= 0.95 on the
CPU), the median of the pairs' ratios and the pairs. Also prints the images/s the CLI itself reported (the same
measure: training images / wall time of the epoch's training loop). ``--quick``: 8 steps per
epoch, 4 epochs (default 16 steps, 5 epochs). ``measure(quick)`` returns the rows for a benchmark suite.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

TARGET = 0.95
BATCH = 128
MODEL_ESTIMATE_S = 30.0  # one model's CLI run and tight loop, compilations included (full sizes)
MODELS: dict[str, dict[str, Any]] = {
    "lenet5": {"preset": "paper-mnist", "extra": [], "describe": "LeNet-5 (paper-mnist)"},
    "vgg7": {"preset": "paper-cifar10", "extra": ["--widths", "16,32,64", "--vgg-hidden", "128"],
             "describe": "VGG7 conv 16-32-64, dense 128 (paper-cifar10, crop + flip)"},
}


class _EpochClock:
    """Stands in for ``tqdm.auto.tqdm``: records when each training-loop bar (``unit="batch"``) opens and closes,
    and calls ``after_epoch(span_index)`` once it has closed."""

    spans: list[tuple[float, float]] = []
    after_epoch: Callable[[int], None] = staticmethod(lambda i: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._batch = kwargs.get("unit") == "batch"
        self._t0 = time.perf_counter()

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        pass

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        if self._batch:
            _EpochClock.spans.append((self._t0, time.perf_counter()))
            self._batch = False
            _EpochClock.after_epoch(len(_EpochClock.spans) - 1)

    @staticmethod
    def write(s: str, *args: Any, **kwargs: Any) -> None:
        print(s, flush=True)


def _write_data(kind: str, root: Path, steps: int) -> Path:
    from wage_parity.testing import write_fake_cifar, write_fake_mnist

    n = BATCH * steps
    if kind == "lenet5":
        write_fake_mnist(root / "mnist", n_train=n, n_test=BATCH)
        return root / "mnist"
    write_fake_cifar(root / "cifar", per_batch=-(-n // 5), n_test=BATCH)
    return root / "cifar"


class _Tight:
    """The runner's jitted step on device-resident batches, built from the CLI run's own configuration."""

    def __init__(self, argv: list[str], data_dir: Path, steps: int, repeats: int) -> None:
        from wage_data import to_inputs
        from wage_train.cli import build_parser, config_from_args, load_dataset
        from wage_train.runner import make_runners, model_inputs, model_spec, training_lrs
        from wage_train.runspec import LrSchedule

        cfg = config_from_args(build_parser().parse_args(argv))  # what the CLI run resolves argv to
        data = load_dataset(cfg.dataset, str(data_dir))
        x = model_inputs(cfg, data.x_train[: BATCH * steps])
        lrs = training_lrs(cfg, LrSchedule(cfg.lr, cfg.epochs, cfg.schedule), steps)
        self.runner = make_runners(cfg, model_spec(cfg, data), lrs, steps, devices=1)[-1]
        self.steps = steps
        self.xs = [jnp.asarray(to_inputs(x[i * BATCH : (i + 1) * BATCH], data.max_value)) for i in range(steps)]
        self.ys = [jnp.asarray(data.y_train[i * BATCH : (i + 1) * BATCH].astype(np.int32)) for i in range(steps)]
        n_keys = steps * repeats + 2
        r = self.runner
        self.keys = list(jax.random.split(r.fwd_key, n_keys)) if r.needs_key else [None] * n_keys
        self.params, self.opt_state, self.k = r.params, r.opt_state, 0
        jax.block_until_ready((self.xs, self.ys, self.keys))
        for i in range(2):  # warm-up: compilation
            self._call(i)
        jax.block_until_ready(self.params)

    def _call(self, i: int) -> jax.Array:
        self.params, self.opt_state, loss, _ = self.runner._step(self.params, self.opt_state, self.xs[i], self.ys[i],
                                                                 self.keys[self.k])
        self.k += 1
        return loss

    def repeat(self) -> float:
        """Images/s of ``steps`` calls, from the first call until the last result is ready."""
        t0 = time.perf_counter()
        for i in range(self.steps):
            loss = self._call(i)
        jax.block_until_ready((self.params, loss))
        return BATCH * self.steps / (time.perf_counter() - t0)


def _pairs(kind: str, data_dir: Path, out: Path, steps: int, epochs: int) -> tuple[list[float], list[float],
                                                                                       list[float]]:
    """``(cli images/s from the loop's wall time, tight images/s, cli images/s reported)`` of epochs 2..E."""
    import tqdm.auto

    from wage_train.cli import run

    m = MODELS[kind]
    argv = ["--preset", m["preset"], *m["extra"], "--data-dir", str(data_dir), "--epochs", str(epochs),
            "--limit-batches", str(steps), "--batch-size", str(BATCH), "--no-progress", "--out-dir", str(out)]
    tight_rates: list[float] = []
    state: dict[str, _Tight] = {}

    def after_epoch(i: int) -> None:
        if i == 0:
            state["tight"] = _Tight(argv, data_dir, steps, epochs - 1)
        else:
            tight_rates.append(state["tight"].repeat())

    real = tqdm.auto.tqdm
    _EpochClock.spans, _EpochClock.after_epoch = [], staticmethod(after_epoch)
    tqdm.auto.tqdm = _EpochClock
    try:
        run(argv)
    finally:
        tqdm.auto.tqdm = real
        _EpochClock.after_epoch = staticmethod(lambda i: None)
    spans = _EpochClock.spans
    if len(spans) != epochs:
        raise RuntimeError(f"expected {epochs} training-loop bars, saw {len(spans)}")
    wall = [BATCH * steps / (t1 - t0) for t0, t1 in spans[1:]]
    with open(out / "metrics.csv") as f:
        reported = [float(r["images_per_s"]) for r in csv.DictReader(f)][1:]
    return wall, tight_rates, reported


def measure(quick: bool, steps: int | None = None, epochs: int | None = None,
            only: str | None = None, budget: Any = None) -> list[dict[str, Any]]:
    """One row per model: ``{name, figure (CLI images/s), unit, ratio (cli / tight), target, passed}`` and
    ``tight`` (images/s of the tight loop), ``reported`` (images/s in the CLI's metrics.csv), ``pairs`` (each
    (CLI epoch, tight repeat) pair's images/s) and ``pair_ratio_median``.

    ``figure``, ``tight``, ``reported``: the best of the ``epochs - 1`` pairs (other processes on a shared machine
    only ever slow a loop down); ``ratio`` is best over best. ``budget`` (the suite's ``benchmarks.core.Budget``):
    a model starts only if ``MODEL_ESTIMATE_S`` (``--quick``: a tenth) is left; what does not fit is skipped.
    """
    steps = steps or (8 if quick else 16)
    epochs = epochs or (4 if quick else 5)
    if epochs < 2:
        raise ValueError("epochs must be >= 2 (the first epoch compiles)")
    rows = []
    for kind, m in MODELS.items():
        if only and kind != only:
            continue
        if budget is not None and not budget.allows(MODEL_ESTIMATE_S / (10 if quick else 1), f"loop overhead {kind}"):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            data_dir = _write_data(kind, root, steps)
            wall, tight, reported = _pairs(kind, data_dir, root / "run", steps, epochs)
        # The best of each (other processes only ever slow a loop down), and the median of the pairs' ratios.
        ratio = max(wall) / max(tight)
        rows.append({"name": f"training loop vs tight loop, {m['describe']}, batch {BATCH}",
                     "figure": max(wall), "unit": "img/s", "ratio": ratio, "target": TARGET,
                     "passed": ratio >= TARGET, "tight": max(tight), "reported": max(reported),
                     "pair_ratio_median": statistics.median(c / t for c, t in zip(wall, tight, strict=True)),
                     "pairs": [(round(c), round(t)) for c, t in zip(wall, tight, strict=True)]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 steps per epoch, 4 epochs")
    parser.add_argument("--steps", type=int, help="steps per epoch (default 16, --quick 8)")
    parser.add_argument("--epochs", type=int, help="CLI epochs; the first is not used (default 5, --quick 4)")
    parser.add_argument("--only", choices=tuple(MODELS))
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch compiles)")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), batch {BATCH}",
          flush=True)
    rows = measure(args.quick, args.steps, args.epochs, args.only)
    print()
    print("| model | cli img/s (loop wall time) | cli img/s (reported) | tight img/s | cli / tight | median of pairs |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['figure']:.0f} | {r['reported']:.0f} | {r['tight']:.0f} | {r['ratio']:.2f}x "
              f"({'PASS' if r['passed'] else 'MISS'} >= {r['target']}) | {r['pair_ratio_median']:.2f}x |")
    for r in rows:
        print(f"pairs (cli, tight img/s), {r['name']}: {r['pairs']}")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
