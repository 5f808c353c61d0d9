"""docs/your-model.md runs as written (its Python blocks, in order, in one fresh interpreter), and the helpers it
documents (``wage_parity.convert``, ``wage_sgd``'s clip warning) do what it says."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from wage_jax import clip_params, wage_sgd
from wage_parity.convert import accumulator_differences, flax_to_torch_weights, torch_to_flax_params
from wage_parity.testing import python_env, run_python

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_guide_runs_linen_nnx_and_torch_models_and_they_agree_bit_for_bit():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "your-model.md").read_text(), flags=re.S)
    assert len(blocks) == 3, "linen, NNX and torch models"
    done = run_python(["-c", "\n".join(blocks)], cwd=ROOT, env=python_env(pythonpath=[ROOT], JAX_PLATFORMS="cpu"),
                      timeout=None)
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("linen accuracy", "nnx accuracy", "torch and JAX: bit for bit"):
        assert line in done.stdout


def test_wage_sgd_warns_when_the_parameters_were_not_clipped():
    params = {"w": jnp.array([0.7, -0.2])}
    with pytest.warns(UserWarning, match="1 parameter element.*call clip_params"):
        wage_sgd(2, 8, 1.0).init(params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wage_sgd(2, 8, 1.0).init(clip_params(params, 2))


def test_convert_pairs_any_names_and_permutes_the_flattened_rows():
    rng = np.random.default_rng(0)
    template = {"features": {"kernel": np.zeros((3, 3, 2, 4), np.float32)},
                "head": {"kernel": np.zeros((4 * 2 * 2, 5), np.float32)}}
    conv = torch.nn.Conv2d(2, 4, 3, bias=False)
    fc = torch.nn.Linear(16, 5, bias=False)
    net = torch.nn.ModuleDict({"c": conv, "f": fc})
    params = torch_to_flax_params(net, template, nchw_flatten={"head/kernel": (4, 2, 2)})
    np.testing.assert_array_equal(params["features"]["kernel"], conv.weight.detach().numpy().transpose(2, 3, 1, 0))
    # the Flax row of feature (h, w, c) holds torch's column of feature (c, h, w)
    h, w, c = 1, 0, 3
    np.testing.assert_array_equal(params["head"]["kernel"][(h * 2 + w) * 4 + c],
                                  fc.weight.detach().numpy()[:, c * 4 + h * 2 + w])
    back = dict(flax_to_torch_weights(params, nchw_flatten={"head/kernel": (4, 2, 2)}))
    np.testing.assert_array_equal(back["head/kernel"], fc.weight.detach().numpy())
    # explicit names, and the messages that name both sides
    swapped = torch_to_flax_params({"x": rng.normal(size=(5, 16))}, template, names={"x": "head/kernel"})
    assert swapped["head"]["kernel"].shape == (16, 5) and not swapped["features"]["kernel"].any()
    with pytest.raises(ValueError, match="1 torch parameters for 2 Flax parameters"):
        torch_to_flax_params({"x": np.zeros((5, 16))}, template)
    with pytest.raises(ValueError, match="head/kernel expects"):
        torch_to_flax_params({"x": np.zeros((5, 15))}, template, names={"x": "head/kernel"})
    with pytest.raises(KeyError, match="no torch parameter 'y'"):
        torch_to_flax_params({"x": np.zeros((5, 16))}, template, names={"y": "head/kernel"})


def test_accumulator_differences_compare_with_torch_clipped():
    torch_acc = {"w": torch.tensor([[0.75, -0.25]])}                    # 0.75: beyond C's range for 2 bits
    flax = {"dense": {"kernel": np.array([[0.5], [-0.25]], np.float32)}}  # clipped, transposed
    assert accumulator_differences(flax, torch_acc, 2) == {"dense/kernel": 0}
    flax["dense"]["kernel"][1, 0] = -0.125
    assert accumulator_differences(flax, torch_acc, 2) == {"dense/kernel": 1}
