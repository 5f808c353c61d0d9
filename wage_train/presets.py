"""``--preset``: the WAGE paper's three experiments as the authors ran them (boluoweifenda/WAGE).

Every preset is WAGE 2-8-8-8 with the paper's rounding modes (``wage_spec.WAGEConfig()``: W and A
nearest, G and E stochastic), batch 128, the initializer's variance factor 1.0 (``NN.py``:
``variance_scaling_initializer(factor=1.0, mode='FAN_IN', uniform=True)``), the sum-of-squares loss and
the authors' ``lr_schedule = [0, 8, 200, 1, 250, 1./8, 300, 0]`` (lr 8, then 1 from epoch 200, 1/8 from
250, end at 300: ``--schedule paper-epochs``). What differs per data set, from the authors' ``getData.py``
and ``dataSet/*.py``:

* ``paper-mnist``: LeNet-5 (32C5-MP2-64C5-MP2-512FC-10) on the 28x28 images, no augmentation.
* ``paper-svhn``: VGG7 on train + extra (``dataSet/SVHN.py`` concatenates them), pad to 40 and random
  32x32 crop, **no** horizontal flip (digits are not mirror-symmetric).
* ``paper-cifar10``: VGG7, pad to 40, random 32x32 crop and random horizontal flip.

Inputs are ``x / 127.5 - 1`` in all three (``NN.py``), which is :func:`wage_train.data.to_inputs`.
Options given explicitly on the command line override the preset's (e.g. ``--epochs 1`` for a smoke run);
with ``--compare`` the rounding modes default to nearest (bit-exact parity) and with ``--float`` the lr and
the init factor to the float baseline's (``wage_train.float_recipe``), as without a preset.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS"]

_COMMON: dict[str, Any] = {
    "batch_size": 128,
    "lr": 8.0,
    "schedule": "paper-epochs",
    "epochs": 300,
    "bits": [2, 8, 8, 8],
    "W_mode": "nearest",
    "A_mode": "nearest",
    "G_mode": "stochastic",
    "E_mode": "stochastic",
    "factor": 1.0,
}

# Values are in wage_train.config.RunConfig's terms (its field names); RunConfig applies them where a field is
# not given: with --compare the modes stay nearest, with --float the lr and factor the float baseline's, and with
# another --model its own sizes.
PRESETS: dict[str, dict[str, Any]] = {
    "paper-mnist": {
        **_COMMON,
        "dataset": "mnist",
        "model": "lenet5",
        "widths": [32, 64],
        "vgg_hidden": 512,
        "augment": False,
        "flip": False,
    },
    "paper-svhn": {
        **_COMMON,
        "dataset": "svhn",
        "model": "vgg7",
        "widths": [128, 256, 512],
        "vgg_hidden": 1024,
        "augment": True,
        "flip": False,
    },
    "paper-cifar10": {
        **_COMMON,
        "dataset": "cifar10",
        "model": "vgg7",
        "widths": [128, 256, 512],
        "vgg_hidden": 1024,
        "augment": True,
        "flip": True,
    },
}
