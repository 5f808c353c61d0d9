"""The WAGE initializer's per-layer scales equal those the authors' own training runs printed.

The expected numbers are copied from the training logs in the authors' repository boluoweifenda/WAGE,
where ``NN.py`` prints ``W: <device> <scope> <shape> Scale:<n>`` for every weight layer (2-8-8-8, the
initializer ``variance_scaling_initializer(factor=1.0, mode='FAN_IN', uniform=True)``):

* LeNet-5 on MNIST: ``log/2017-10-23(lenet5 2888).txt``
  ``Conv/conv0/ [5, 5, 1, 32] Scale:2``, ``Conv/conv1/ [5, 5, 32, 64] Scale:16``,
  ``Fc/fc0/ [1024, 512] Scale:16``, ``Fc/fc1/ [512, 10] Scale:8``.
* VGG7 on CIFAR-10: ``log/2017-10-22(vgg7 2888).txt``
  ``U0/C0/conv/ [3, 3, 3, 128] Scale:2``, ``U0/C1/conv/ [3, 3, 128, 128] Scale:16``,
  ``U1/C0/conv/ [3, 3, 128, 256] Scale:16``, ``U1/C1/conv/ [3, 3, 256, 256] Scale:16``,
  ``U2/C0/conv/ [3, 3, 256, 512] Scale:16``, ``U2/C1/conv/ [3, 3, 512, 512] Scale:32``,
  ``FC/fc0/ [8192, 1024] Scale:32``, ``FC/fc1/ [1024, 10] Scale:16``.

SVHN uses the same VGG7 on 32x32x3 inputs, so the same scales (the repository has no SVHN log).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from wage_jax.models import VGG7 as JaxVGG7
from wage_jax.models import LeNet5 as JaxLeNet5
from wage_spec import WAGEConfig
from wage_train.jax_runner import layer_order
from wage_train.runspec import ModelSpec

# (kernel shape as the log prints it, TF layout (kh, kw, in, out) / (in, out); printed scale), forward order.
LENET5_LOG = [((5, 5, 1, 32), 2), ((5, 5, 32, 64), 16), ((1024, 512), 16), ((512, 10), 8)]
VGG7_LOG = [
    ((3, 3, 3, 128), 2), ((3, 3, 128, 128), 16), ((3, 3, 128, 256), 16), ((3, 3, 256, 256), 16),
    ((3, 3, 256, 512), 16), ((3, 3, 512, 512), 32), ((8192, 1024), 32), ((1024, 10), 16),
]
PAPER = WAGEConfig()  # 2-8-8-8, factor 1.0

CASES = {
    "lenet5": (LENET5_LOG, ModelSpec("lenet5", (28, 28, 1), widths=(32, 64), vgg_hidden=512),
               JaxLeNet5(config=PAPER), (1, 28, 28, 1)),
    "vgg7": (VGG7_LOG, ModelSpec("vgg7", (32, 32, 3)), JaxVGG7(config=PAPER), (1, 32, 32, 3)),
}


def test_paper_config_is_the_logged_one():
    assert (PAPER.bits_W, PAPER.bits_A, PAPER.bits_G, PAPER.bits_E, PAPER.factor) == (2, 8, 8, 8, 1.0)


@pytest.mark.parametrize("model", sorted(CASES))
def test_spec_scales_equal_the_authors_logs(model):
    log, spec, _, _ = CASES[model]
    assert spec.weight_scales(PAPER.bits_W, PAPER.factor) == [scale for _, scale in log]


@pytest.mark.parametrize("model", sorted(CASES))
def test_flax_kernels_have_the_logged_shapes_and_scales(model):
    """The JAX models' kernels (Flax layout = the authors' TF layout) and the layers' own static scales."""
    from wage_jax import kernel_scale

    log, _, module, shape = CASES[model]
    params = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(shape)))["params"]
    names = layer_order(params)
    assert [tuple(params[n]["kernel"].shape) for n in names] == [s for s, _ in log]
    assert [kernel_scale(s, PAPER.bits_W, PAPER.factor) for s, _ in log] == [scale for _, scale in log]


@pytest.mark.parametrize("model", sorted(CASES))
def test_torch_initializer_records_the_logged_scales(model):
    torch = pytest.importorskip("torch")
    from wage_torch.models import VGG7, LeNet5

    log, _, _, _ = CASES[model]
    torch.manual_seed(0)
    net = LeNet5(config=PAPER) if model == "lenet5" else VGG7(config=PAPER)
    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [m.weight.weight_scale for m in layers] == [scale for _, scale in log]
