"""wage_torch's backends: the pure-torch kernel against qtorch's, selection, fallback, import side effects."""

from __future__ import annotations

import subprocess
import textwrap

import numpy as np
import pytest
import torch
from qtorch.quant import fixed_point_quantize as qtorch_fixed_point_quantize

import wage_torch
from wage_parity.corpus import fixed_point_inputs
from wage_parity.testing import f32_bits, python_env, run_python
from wage_torch import torch_kernels
from wage_torch.backend import QtorchUnavailableWarning


def _random_bit_patterns(n: int = 1 << 18) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randint(-(2**31), 2**31 - 1, (n,), generator=g, dtype=torch.int64).to(torch.int32).view(torch.float32)


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("wl,fl", [(2, 1), (8, 7), (16, 15), (24, 23), (8, 0), (8, -2), (4, 10)])
def test_kernel_matches_qtorch_on_any_float32_bit_pattern(wl: int, fl: int, rounding: str) -> None:
    x = torch.cat([_random_bit_patterns(), torch.from_numpy(np.asarray(fixed_point_inputs(wl, fl), np.float32))])
    for clamp in (True, False):
        torch.manual_seed(3)
        expected = qtorch_fixed_point_quantize(x, wl, fl, clamp=clamp, symmetric=True, rounding=rounding)
        torch.manual_seed(3)
        actual = torch_kernels.fixed_point_quantize(x, wl, fl, clamp=clamp, symmetric=True, rounding=rounding)
        nan = expected.isnan().numpy() & actual.isnan().numpy()
        assert ((f32_bits(actual) == f32_bits(expected)) | nan).all()


def test_float32_subtraction_would_differ(monkeypatch) -> None:
    """Values of ``s`` where a float32 ``round(s - 0.5)`` is wrong: the kernel gets them right."""
    s = torch.tensor([-(2.0**-30), -0.99999994, -(2.0**-149), -(2.0**-54), -(2.0**-54) * (1 + 2.0**-23)])
    exact = torch.round(s.double() - 0.5).float()  # the kernel: nearbyint(double(s) - 0.5)
    assert f32_bits(exact).tolist() == f32_bits(torch.tensor([-1.0, -1.0, -0.0, -0.0, -1.0])).tolist()
    assert (torch.round(s[:2] - 0.5) != exact[:2]).all()  # float32 s - 0.5 is inexact there
    monkeypatch.setattr(torch_kernels, "draw", torch.zeros_like)  # r = 0: the kernel rounds s = x itself
    out = torch_kernels.fixed_point_quantize(s, 32, 0, clamp=False, rounding="stochastic")
    assert (f32_bits(out) == f32_bits(exact)).all()


def test_compiled_kernel_keeps_the_bits_and_the_draws() -> None:
    import torch._inductor.config as inductor_config

    x = torch.cat([_random_bit_patterns(1 << 14), torch.from_numpy(np.asarray(fixed_point_inputs(8, 7), np.float32))])
    compiled = torch.compile(torch_kernels.fixed_point_quantize, dynamic=False)
    with inductor_config.patch(fallback_random=True):
        for rounding in ("nearest", "stochastic"):
            for clamp in (True, False):
                torch.manual_seed(5)
                expected = qtorch_fixed_point_quantize(x, 8, 7, clamp=clamp, symmetric=True, rounding=rounding)
                torch.manual_seed(5)
                actual = compiled(x, 8, 7, clamp, True, rounding)
                nan = expected.isnan().numpy() & actual.isnan().numpy()
                assert ((f32_bits(actual) == f32_bits(expected)) | nan).all(), (rounding, clamp)


@pytest.mark.parametrize("backend", ["qtorch", "torch"])
def test_wage_quantizer_same_draws_on_both_backends(backend: str) -> None:
    x = torch.randn(64, 33, generator=torch.Generator().manual_seed(0)) * 2
    g = torch.randn(64, 33, generator=torch.Generator().manual_seed(1)) * 1e-3

    def run(name):
        wage_torch.set_backend(name)
        xt = x.clone().requires_grad_()
        torch.manual_seed(11)
        y = wage_torch.WAGEQuantizer(8, 8, "stochastic", "stochastic")(xt)
        y.backward(g)
        qg = wage_torch.QG(g, 8, 8.0, "stochastic")
        qw = wage_torch.QW(x, 2, 1.0, "stochastic")
        return [f32_bits(t) for t in (y, xt.grad, qg, qw)]

    previous = wage_torch.get_backend()
    try:
        ref, other = run("qtorch"), run(backend)
    finally:
        wage_torch.set_backend(previous)
    for a, b in zip(ref, other, strict=True):
        np.testing.assert_array_equal(a, b)


def test_set_backend_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="name must be one of 'qtorch', 'torch'"):
        wage_torch.set_backend("cuda")


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    env = python_env(**{"WAGE_TORCH_BACKEND": None, **env})  # the tests choose the backend
    return run_python(["-W", "always", "-c", textwrap.dedent(code)], env=env, timeout=300)


def test_import_does_not_import_qtorch_nor_change_the_environment() -> None:
    result = _run(
        """
        import os, sys
        before = dict(os.environ)
        import wage_torch
        assert "qtorch" not in sys.modules, "import wage_torch imported qtorch"
        assert dict(os.environ) == before, "import wage_torch changed the environment"
        wage_torch.QW(__import__("torch").ones(3), 8)
        assert "qtorch" in sys.modules and wage_torch.get_backend() == "qtorch"
        assert dict(os.environ) == before, "qtorch's import left the environment changed"
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_env_var_selects_the_torch_backend_without_qtorch() -> None:
    result = _run(
        """
        import sys, torch, wage_torch
        y = wage_torch.QG(torch.linspace(-1, 1, 9), 8, 8.0)
        q = wage_torch.WAGEQuantizer(8, 8)(torch.ones(3, requires_grad=True))
        assert wage_torch.get_backend() == "torch" and "qtorch" not in sys.modules
        print("ok")
        """,
        WAGE_TORCH_BACKEND="torch",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_bad_env_var_names_it() -> None:
    result = _run("import torch, wage_torch; wage_torch.QW(torch.ones(2), 8)", WAGE_TORCH_BACKEND="cuda")
    assert result.returncode != 0
    assert "the environment variable WAGE_TORCH_BACKEND must be one of 'qtorch', 'torch'" in result.stderr


def test_unimportable_qtorch_falls_back_with_one_warning() -> None:
    result = _run(
        """
        import sys, warnings
        import importlib.abc

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "qtorch" or name.startswith("qtorch."):
                    raise ImportError("No module named 'qtorch' (refused by the test)")

        sys.meta_path.insert(0, Refuse())
        import torch, wage_torch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.manual_seed(0)
            a = wage_torch.QW(torch.linspace(-1, 1, 7), 4, mode="stochastic")
            b = wage_torch.QG(torch.linspace(-1, 1, 7), 8, 1.0)
            wage_torch.set_backend("qtorch")
            wage_torch.WAGEQuantizer(8, 8)(torch.ones(2))
        ours = [w for w in caught if issubclass(w.category, wage_torch.QtorchUnavailableWarning)]
        assert len(ours) == 1, [str(w.message) for w in caught]
        assert wage_torch.get_backend() == "torch"
        print(ours[0].message)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "qtorch could not be imported or built (ImportError" in result.stdout
    assert "wage_torch uses its torch backend" in result.stdout


def test_fallback_warning_class_is_exported() -> None:
    assert issubclass(QtorchUnavailableWarning, UserWarning)
    assert wage_torch.QtorchUnavailableWarning is QtorchUnavailableWarning


def test_torch_backend_parity_function_finds_differences() -> None:
    from wage_parity.torch_backend import torch_backend_device_parity

    original = torch_kernels.draw
    torch_kernels.draw = lambda x: torch.full_like(x, 0.25)  # not qtorch's draws: stochastic cases must differ
    try:
        wage_torch.set_backend("torch")  # the reference is qtorch whatever the selection
        counts = torch_backend_device_parity("cpu", functions=["QW"])
    finally:
        torch_kernels.draw = original
        wage_torch.set_backend("qtorch")
    assert counts["QW"] > 0
