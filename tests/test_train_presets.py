"""``wage-train --preset``: the paper's three experiments, resolved and started on real-format files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wage_data.augment import augment_crop
from wage_parity.testing import write_fake_cifar, write_fake_mnist, write_svhn_mat
from wage_train.cli import build_parser, config_from_args, run
from wage_train.config import UsageError, float_lr
from wage_train.float_recipe import STANDARD_LR
from wage_train.presets import PRESETS
from wage_train.runspec import lr_table

# The published setup (Wu et al., ICLR 2018, and the authors' Option.py/getData.py/NN.py).
COMMON = {
    "batch_size": 128, "lr": 8.0, "schedule": "paper-epochs", "epochs": 300, "bits": [2, 8, 8, 8],
    "W_mode": "nearest", "A_mode": "nearest", "G_mode": "stochastic", "E_mode": "stochastic", "factor": 1.0,
    "float": False, "framework": "jax",
}
EXPECTED = {
    "paper-mnist": {**COMMON, "dataset": "mnist", "model": "lenet5", "widths": [32, 64], "vgg_hidden": 512,
                    "augment": False},
    "paper-svhn": {**COMMON, "dataset": "svhn", "model": "vgg7", "widths": [128, 256, 512], "vgg_hidden": 1024,
                   "augment": True, "flip": False},
    "paper-cifar10": {**COMMON, "dataset": "cifar10", "model": "vgg7", "widths": [128, 256, 512],
                      "vgg_hidden": 1024, "augment": True, "flip": True},
}


def _resolve(argv: list[str]) -> dict:
    return config_from_args(build_parser().parse_args(argv)).to_dict()


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_preset_sets_the_published_configuration(preset):
    cfg = _resolve(["--preset", preset])
    assert cfg["preset"] == preset
    for key, value in EXPECTED[preset].items():
        assert cfg[key] == value, key
    assert set(PRESETS) == set(EXPECTED)


def test_explicit_options_override_the_preset():
    cfg = _resolve(["--preset", "paper-cifar10", "--epochs", "1", "--bits", "2-8-8-8", "--G-mode", "nearest",
                    "--widths", "4,4,8", "--no-flip"])
    assert cfg["epochs"] == 1 and cfg["G_mode"] == "nearest" and cfg["widths"] == [4, 4, 8] and not cfg["flip"]
    assert cfg["batch_size"] == 128 and cfg["schedule"] == "paper-epochs" and cfg["model"] == "vgg7"
    compare = _resolve(["--preset", "paper-mnist", "--compare"])
    assert {compare[m] for m in ("W_mode", "A_mode", "G_mode", "E_mode")} == {"nearest"}
    # --float keeps the float baseline's own lr: the standard recipe's of the model, or wage-sse's, which is set
    # from the data once it is loaded (float_lr).
    assert _resolve(["--preset", "paper-mnist", "--float"])["lr"] == STANDARD_LR["lenet5"]
    assert _resolve(["--preset", "paper-mnist", "--float", "--float-recipe", "wage-sse"])["lr"] is None
    assert float_lr((28, 28, 1)) == pytest.approx(0.001 * 64 / 784)
    with pytest.raises(UsageError, match="2 LeNet-5 conv widths"):
        _resolve(["--preset", "paper-mnist", "--widths", "4,4,8"])


def test_paper_epochs_schedule_uses_absolute_boundaries():
    full = lr_table(8.0, 300, "paper-epochs")
    assert full == lr_table(8.0, 300, "paper")  # the two forms agree on the paper's 300 epochs
    assert full[199] == 8.0 and full[200] == 1.0 and full[249] == 1.0 and full[250] == 0.125 and full[299] == 0.125
    assert lr_table(8.0, 1, "paper-epochs") == [8.0]  # a smoke run stays at lr 8 (the proportional form does too)
    assert lr_table(8.0, 30, "paper-epochs") == [8.0] * 30  # not stretched: "paper" would drop at epoch 20
    assert lr_table(8.0, 30, "paper")[20] == 1.0
    with pytest.raises(ValueError, match="paper-epochs"):
        lr_table(8.0, 3, "cosine")


def test_augment_crop_is_a_padded_crop_without_flip():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, size=(64, 32, 32, 3), dtype=np.uint8)
    out = augment_crop(x, np.random.default_rng(1))
    offsets = np.random.default_rng(1).integers(0, 9, size=(64, 2))
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for i in range(64):
        dy, dx = offsets[i]
        np.testing.assert_array_equal(out[i], padded[i, dy : dy + 32, dx : dx + 32])
    assert out.dtype == np.uint8 and out.shape == x.shape


def _write_data(preset: str, root) -> None:
    # 130 training images: one full batch of the preset's 128.
    if preset == "paper-mnist":
        write_fake_mnist(root, n_train=130, n_test=12)
    elif preset == "paper-svhn":
        root.mkdir(parents=True)
        write_svhn_mat(root / "train_32x32.mat", 130, seed=0)
        write_svhn_mat(root / "test_32x32.mat", 12, seed=1)
    else:
        write_fake_cifar(root, per_batch=26, n_test=12)


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_preset_starts_the_published_experiment_on_real_format_files(tmp_path, capsys, preset):
    """LeNet-5 at full size; VGG7 narrowed by explicit options, all else the preset's."""
    _write_data(preset, tmp_path / "data")
    out = tmp_path / "run"
    # VGG7 in torch (no compilation), narrowed: the suite's CPU budget; the full-size runs are in docs/experiments.md.
    shrink = [] if preset == "paper-mnist" else ["--widths", "4,4,8", "--vgg-hidden", "16", "--framework", "torch"]
    run(["--preset", preset, "--data-dir", str(tmp_path / "data"), "--epochs", "1", "--limit-batches", "1",
         "--no-progress", "--out-dir", str(out), *shrink])
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith(f"preset {preset} | WAGE 2-8-8-8 (W nearest, A nearest, G stochastic, E stochastic)")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["preset"] == preset and cfg["batch_size"] == 128 and cfg["schedule"] == "paper-epochs"
    assert cfg["epochs"] == 1 and cfg["dataset"] == EXPECTED[preset]["dataset"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"][0]["lr"] == 8.0
    if preset == "paper-mnist":
        assert "LeNet-5 conv 32-64, dense 512-10" in header and "(augmented" not in header
        assert cfg["scales"] == [2, 16, 16, 8]  # the authors' log, see tests/test_paper_scales.py
    else:
        assert ("crop + flip" in header) == (preset == "paper-cifar10") and "(augmented: crop" in header
        assert len(cfg["scales"]) == 8
