"""Step time of the paper's experiments (``wage-train --preset``) with the JAX runner, and the full-run estimate.

    python scripts/paper_experiments.py [--steps N] [--only lenet5|vgg7]

Times ``wage_train.jax_runner.JaxRunner.train_step`` at batch 128 with the paper's 2-8-8-8 and rounding
modes (the work of one ``wage-train`` step, host-to-device copy included) for LeNet-5 on 28x28x1 and
VGG7 on 32x32x3; the first 2 steps are untimed (compilation). Prints the median step time, images/s,
and the wall time of 300 epochs of each experiment's training set (MNIST 60,000; SVHN train + extra
604,388; CIFAR-10 50,000), evaluation excluded.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from wage_spec import WAGEConfig
from wage_train.jax_runner import JaxRunner
from wage_train.runspec import ModelSpec

TRAIN_IMAGES = {"paper-mnist": 60_000, "paper-svhn": 604_388, "paper-cifar10": 50_000}
SPECS = {
    "lenet5": ModelSpec("lenet5", (28, 28, 1), widths=(32, 64), vgg_hidden=512),
    "vgg7": ModelSpec("vgg7", (32, 32, 3)),
}


def time_steps(spec: ModelSpec, steps: int, batch: int = 128) -> float:
    """Median seconds of one JAX WAGE train step of ``spec`` at ``batch`` (after 2 untimed steps)."""
    runner = JaxRunner(spec, WAGEConfig(), quantized=True, lrs=[8.0], steps_per_epoch=10**9, seed=0, devices=1)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(batch, *spec.image_shape)).astype(np.float32)
    y = rng.integers(0, 10, size=batch)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        runner.train_step(x, y)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--only", choices=tuple(SPECS))
    args = parser.parse_args()
    for kind, spec in SPECS.items():
        if args.only and kind != args.only:
            continue
        s = time_steps(spec, args.steps)
        print(f"{spec.describe()}: {s * 1e3:.0f} ms/step at batch 128, {128 / s:.0f} images/s")
        for preset, n in TRAIN_IMAGES.items():
            if (kind == "lenet5") == (preset == "paper-mnist"):
                hours = 300 * (n // 128) * s / 3600
                print(f"  {preset}: 300 epochs x {n // 128} steps = {hours:.1f} h ({hours / 24:.1f} days)")


if __name__ == "__main__":
    main()
