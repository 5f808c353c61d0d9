"""wage-train's RunConfig: the configuration of a run, resolved, validated and saved in one place."""

from __future__ import annotations

import dataclasses

import pytest

from wage_train.cli import build_parser, config_from_args
from wage_train.config import RunConfig, UsageError


@pytest.mark.parametrize("argv", [[], ["--float"], ["--float", "--float-recipe", "wage-sse", "--lr", "0.01"],
                                  ["--compare", "--epochs", "3"], ["--preset", "paper-cifar10"],
                                  ["--dataset", "mnist", "--bits", "2-8-8-fp", "--validation", "0.2"]])
def test_saved_form_loads_back_equal(argv):
    cfg = config_from_args(build_parser().parse_args(argv))
    if cfg.lr is None:
        cfg = cfg.replace(lr=0.5)  # set once the data is loaded
    cfg = cfg.replace(data_fingerprint={"train": 3, "image_shape": [8, 8, 1]}, scales=(0.5, 0.25))
    assert RunConfig.from_dict(cfg.to_dict(), "config.json") == cfg
    recorded = ["lr_decay"] if cfg.float_recipe == "standard" else []  # the standard recipe's decay, recorded
    assert list(cfg.to_dict()) == [f.name for f in dataclasses.fields(RunConfig)] + recorded


def test_a_standard_float_run_saved_before_the_annealing_is_refused_in_one_line():
    saved = RunConfig(float=True, lr=0.16).to_dict()
    assert saved["lr_decay"] == "cosine"
    del saved["lr_decay"]  # as the version with a constant lr wrote it
    with pytest.raises(UsageError) as e:
        RunConfig.from_dict(saved, "config.json")
    assert str(e.value).startswith("config.json: this standard-recipe float run trained with a constant lr")
    assert "\n" not in str(e.value) and "--overwrite" in str(e.value)
    wage_sse = RunConfig(float=True, float_recipe="wage-sse", lr=0.001).to_dict()
    assert "lr_decay" not in wage_sse and RunConfig.from_dict(wage_sse, "config.json").float_recipe == "wage-sse"


def test_frozen_and_typed():
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]
    assert (cfg.dataset, cfg.model, cfg.hidden, cfg.bits, cfg.epochs, cfg.lr) == ("digits", "mlp", (256,),
                                                                                   (2, 8, 8, 8), 60, 8.0)
    assert RunConfig(dataset="cifar10").model == "vgg7" and RunConfig(dataset="svhn").flip is False
    assert RunConfig(preset="paper-mnist", model="vgg7").widths == (128, 256, 512)  # that model's sizes
    with pytest.raises(UsageError, match="epochs=0 is not valid"):
        cfg.replace(epochs=0)


def test_a_config_saved_before_newer_fields_loads_with_the_values_then_in_effect():
    saved = RunConfig(float=True, float_recipe="wage-sse", lr=0.001).to_dict()
    for newer in ("integer", "validation", "float_recipe"):
        del saved[newer]
    old = RunConfig.from_dict(saved, "config.json")
    assert (old.integer, old.validation, old.float_recipe) == (False, None, "wage-sse")


@pytest.mark.parametrize(("change", "expected"), [
    ({"learning_rate": 1.0}, "config.json: not a wage-train config (unknown learning_rate)"),
    ({"epochs": None}, "config.json: not a wage-train config (missing epochs)"),
    ({"lr": None}, "config.json: lr=None is not valid with float=false"),
    ({"hidden": [0]}, "config.json: hidden=[0] is not valid (must be a list of positive integers)"),
])
def test_a_bad_saved_config_is_refused_in_one_line(change, expected):
    with pytest.raises(UsageError) as e:
        RunConfig.from_dict({**RunConfig().to_dict(), **change}, "config.json")
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)
