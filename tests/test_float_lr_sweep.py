"""The rule that reads the float baseline's default lrs off the sweep (``scripts/float_lr_sweep.py``):
the verdict per setting, the lr ``choose`` picks per model family, and the runs the sweep asks for. The runs are
stand-ins (accuracies per lr), so the rule is checked without training."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from wage_train.float_recipe import STANDARD_LR

_PATH = Path(__file__).resolve().parents[1] / "scripts" / "float_lr_sweep.py"
_spec = importlib.util.spec_from_file_location("float_lr_sweep", _PATH)
sweep_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep_script)


class FakeRuns:
    """``Runs.get`` answering from a table ``{lr: (acc seed 0, acc seed 1)}`` (None: diverged); WAGE and torch
    runs (no ``--float --lr`` pair, or ``--framework torch``) get ``other``. Records every argv asked for."""

    def __init__(self, by_lr: dict[float, tuple[float | None, ...]], other: float) -> None:
        self.by_lr, self.other, self.asked = by_lr, other, []

    def get(self, argv: list[str]) -> dict:
        self.asked.append(argv)
        seed = int(argv[argv.index("--seed") + 1])
        if "--framework" in argv or "--float" not in argv:
            return {"acc": self.other, "diverged": False, "seconds": 0.0}
        acc = self.by_lr[float(argv[argv.index("--lr") + 1])][seed]
        return {"acc": acc, "diverged": acc is None, "seconds": 0.0}


def _run(name: str, means: dict[float, float | None], other: float = 0.9, torch: bool = True):
    runs = FakeRuns({lr: (m, m) for lr, m in means.items()}, other)
    return sweep_script.sweep(name, runs, [0, 1], tuple(means), torch), runs


VGG7 = "CIFAR-format VGG7 16-32-64"


def test_a_default_that_breaks_down_at_4x_misses_and_choose_finds_no_lr():
    """The plain VGG7 without the gradient clip (docs/training.md): breaks down at 0.04, 4x the default 0.01,
    and no lr is both within noise of the best and 4x below the breakdown."""
    old = {0.0025: 0.7875, 0.005: 0.8467, 0.01: 0.8937, 0.02: 0.9059, 0.04: 0.6864}
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sweep_script.STANDARD_LR, "vgg7", 0.01)
        result, _ = _run(VGG7, old, other=0.7561)
    assert result["checks"] == {"within_noise_of_best": True, "wage_minus_half_point": True, "x2_x4_train": False}
    assert result["best_lr"] == 0.02 and result["breaks_down_at"] == 4
    assert sweep_script.choose([result]) == {"vgg7": None}


def test_the_defaults_pass_and_choose_picks_the_best_lr_with_a_4x_margin():
    """The annealed sweep (docs/training.md): 0.32 is the best, but its 4x (1.28) is not known to train, so 0.16
    (within noise, 2x and 4x train) is chosen."""
    means = {0.02: 0.8537, 0.04: 0.8885, 0.08: 0.9338, 0.16: 0.9512, 0.32: 0.9530, 0.64: 0.8624}
    result, runs = _run(VGG7, means, other=0.7561)
    assert STANDARD_LR["vgg7"] == 0.16
    assert all(result["checks"].values()) and result["breaks_down_at"] is None  # 0.64 is within 10 points
    assert sweep_script.choose([result]) == {"vgg7": 0.16}
    # The torch baseline is asked for at the default lr by name, so a kept run at another default is not reused.
    torch_runs = [a for a in runs.asked if "--framework" in a]
    assert len(torch_runs) == 2 and all(a[a.index("--lr") + 1] == repr(0.16) for a in torch_runs)


def test_a_default_below_wage_or_outside_noise_misses():
    means = {0.04: 0.80, 0.08: 0.82, 0.16: 0.95, 0.32: 0.94, 0.64: 0.93}  # the default 0.08 far below the best
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sweep_script.STANDARD_LR, "vgg7", 0.08)
        result, _ = _run(VGG7, means, other=0.90)
    assert not result["checks"]["within_noise_of_best"] and not result["checks"]["wage_minus_half_point"]
    assert sweep_script.choose([result]) == {"vgg7": 0.16}  # 0.32 and 0.64 train


def test_a_diverged_seed_breaks_down_and_choose_needs_every_setting_of_the_family():
    digits = {0.04: 0.97, 0.08: 0.975, 0.16: 0.977, 0.32: 0.978, 0.64: 0.979, 1.28: 0.97}
    mnist = {0.04: 0.98, 0.08: 0.98, 0.16: 0.981, 0.32: 0.975, 0.64: None, 1.28: None}  # diverges at 0.64
    a, _ = _run("digits MLP", digits, torch=False)
    b, _ = _run("MNIST-format MLP", mnist, torch=False)
    assert b["breaks_down_at"] == 4 and not b["checks"]["x2_x4_train"]
    # 0.16's 4x diverges on the MNIST-format MLP; 0.08's 2x and 4x train on both; 0.04 is outside noise on digits.
    assert sweep_script.choose([a, b]) == {"mlp": 0.08}
