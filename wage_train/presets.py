"""``--preset``: the WAGE paper's three experiments as the authors ran them (boluoweifenda/WAGE).

All: WAGE 2-8-8-8 with the paper's rounding modes, batch 128, init factor 1.0 (``NN.py``), the sum-of-squares
loss, inputs ``x / 127.5 - 1``, and the authors' ``lr_schedule = [0, 8, 200, 1, 250, 1./8, 300, 0]``
(``--schedule paper-epochs``). Per data set (``getData.py``, ``dataSet/*.py``):

* ``paper-mnist``: LeNet-5 (32C5-MP2-64C5-MP2-512FC-10) on the 28x28 images, no augmentation.
* ``paper-svhn``: VGG7 on train + extra, pad to 40 and random 32x32 crop, **no** flip (digits are not symmetric).
* ``paper-cifar10``: VGG7, pad to 40, random 32x32 crop and random horizontal flip.

Values are :class:`wage_train.config.RunConfig` fields, applied where a field is not given: explicit options win,
``--compare`` keeps every mode nearest, ``--float`` the float baseline's lr and factor, another ``--model`` its
own sizes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS"]

_COMMON: dict[str, Any] = {"batch_size": 128, "lr": 8.0, "schedule": "paper-epochs", "epochs": 300,
                           "bits": [2, 8, 8, 8], "W_mode": "nearest", "A_mode": "nearest", "G_mode": "stochastic",
                           "E_mode": "stochastic", "factor": 1.0}
_VGG7: dict[str, Any] = {"model": "vgg7", "widths": [128, 256, 512], "vgg_hidden": 1024, "augment": True}
PRESETS: dict[str, dict[str, Any]] = {
    "paper-mnist": {**_COMMON, "dataset": "mnist", "model": "lenet5", "widths": [32, 64], "vgg_hidden": 512,
                    "augment": False, "flip": False},
    "paper-svhn": {**_COMMON, "dataset": "svhn", **_VGG7, "flip": False},
    "paper-cifar10": {**_COMMON, "dataset": "cifar10", **_VGG7, "flip": True},
}
