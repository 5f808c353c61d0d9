"""QPyTorch's WAGE code (examples/WAGE of Tiiiger/QPyTorch) against ``wage_torch``, on both torch backends.

``WAGEQuantizer`` keeps QPyTorch's public attributes (``activate_number``, ``error_number``, ``quantizer``);
``wage_init_`` accepts QPyTorch's ``(tensor, bits_W, name, scale_dict, factor=..., mode=...)`` form; ``QG``
called QPyTorch's way (``QG(x, bits_G, bits_R, lr, mode)``) fails saying how to port it. The references below
are QPyTorch's own code, copied from examples/WAGE (wage_qtorch.py, models/wage_initializer.py).
"""

from __future__ import annotations

import copy
import math
import pickle
import textwrap
from collections.abc import Iterator

import numpy as np
import pytest
import qtorch
import torch
from qtorch.quant import quantizer as qtorch_quantizer

import wage_torch as wt
from wage_parity.testing import f32_bits, python_env, run_python
from wage_torch.wage_qtorch import FixedPointFormat


@pytest.fixture(params=["qtorch", "torch"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    previous = wt.get_backend()
    assert wt.set_backend(request.param) == request.param
    try:
        yield request.param
    finally:
        wt.set_backend(previous)


# ------------------------------------------------------------------ QPyTorch's code, verbatim (examples/WAGE)


def qpytorch_shift(x):
    max_entry = x.abs().max()
    return x / 2.0 ** torch.ceil(torch.log2(max_entry))


class QPyTorchWAGEQuantizer(torch.nn.Module):
    def __init__(self, bits_A, bits_E, A_mode="nearest", E_mode="nearest"):
        super().__init__()
        self.activate_number = (
            qtorch.FixedPoint(wl=bits_A, fl=bits_A - 1, clamp=True, symmetric=True) if bits_A != -1 else None
        )
        self.error_number = (
            qtorch.FixedPoint(wl=bits_E, fl=bits_E - 1, clamp=True, symmetric=True) if bits_E != -1 else None
        )
        self.quantizer = qtorch_quantizer(
            forward_number=self.activate_number,
            forward_rounding=A_mode,
            backward_number=self.error_number,
            backward_rounding=E_mode,
            clamping_grad_zero=True,
            backward_hooks=[qpytorch_shift],
        )

    def forward(self, x):
        return self.quantizer(x)


def qpytorch_scale_limit(limit, bits_W, name, scale_dict):
    beta = 1.5
    Wm = beta / (2 ** (bits_W - 1))
    scale = 2 ** round(np.log2(Wm / limit))
    scale = max(scale, 1.0)
    limit = max(Wm, limit)
    scale_dict[name] = scale
    return limit


def qpytorch_wage_init_(tensor, bits_W, name, scale_dict, factor=2.0, mode="fan_in"):
    dimensions = tensor.ndimension()
    fan_in = tensor.size(1) if dimensions == 2 else tensor.size(1) * tensor[0][0].numel()  # QPyTorch's, condensed
    float_limit = math.sqrt(3 * factor / fan_in)
    quant_limit = qpytorch_scale_limit(float_limit, bits_W, name, scale_dict)
    tensor.data.uniform_(-quant_limit, quant_limit)


# ------------------------------------------------------------------------------------- WAGEQuantizer


@pytest.mark.parametrize(("bits_A", "bits_E"), [(8, 8), (2, 16), (-1, 8), (8, -1)])
def test_number_attributes_are_qtorchs(backend: str, bits_A: int, bits_E: int) -> None:
    ours, theirs = wt.WAGEQuantizer(bits_A, bits_E), QPyTorchWAGEQuantizer(bits_A, bits_E)
    for name in ("activate_number", "error_number"):
        a, b = getattr(ours, name), getattr(theirs, name)
        if b is None:
            assert a is None, name
        else:
            assert isinstance(a, qtorch.FixedPoint), name
            assert (a.wl, a.fl, a.clamp, a.symmetric) == (b.wl, b.fl, b.clamp, b.symmetric), name
            assert repr(a) == repr(b)


@pytest.mark.parametrize(("bits_A", "bits_E", "A_mode", "E_mode"),
                         [(8, 8, "nearest", "nearest"), (2, 8, "stochastic", "stochastic"), (-1, 8, "nearest",
                                                                                              "stochastic")])
def test_quantizer_attribute_gives_qpytorchs_bits(backend: str, bits_A: int, bits_E: int, A_mode: str,
                                                  E_mode: str) -> None:
    """``q.quantizer(x)`` and ``q(x)`` give QPyTorch's WAGEQuantizer's output and gradient, bit for bit.

    The errors are drawn so that max|g| is not just above a power of two: there QPyTorch's float32 log2
    shift differs from the contract's exact one (docs/contract.md §2).
    """
    x = torch.randn(32, 17, generator=torch.Generator().manual_seed(0)) * 1.5
    g = torch.randn(32, 17, generator=torch.Generator().manual_seed(1)) * 3e-3
    g[0, 0] = 0.0123  # max|g| pinned well inside (2^-7, 2^-6]
    g = g.clamp(-0.0123, 0.0123)

    def run(module, call) -> list[np.ndarray]:
        xt = x.clone().requires_grad_()
        torch.manual_seed(5)
        y = call(module, xt)
        y.backward(g)
        return [f32_bits(y.detach()), f32_bits(xt.grad)]

    reference = run(QPyTorchWAGEQuantizer(bits_A, bits_E, A_mode, E_mode), lambda m, t: m(t))
    ours = wt.WAGEQuantizer(bits_A, bits_E, A_mode, E_mode)
    for call in (lambda m, t: m.quantizer(t), lambda m, t: m(t)):
        for a, b in zip(run(ours, call), reference, strict=True):
            np.testing.assert_array_equal(a, b)


def test_quantizer_survives_deepcopy_and_pickle(backend: str) -> None:
    q = wt.WAGEQuantizer(8, 8)
    x = torch.linspace(-2, 2, 11)
    y = q(x)  # builds qtorch's closure on the qtorch backend
    for clone in (copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
        np.testing.assert_array_equal(f32_bits(clone.quantizer(x)), f32_bits(y))


def test_numbers_without_qtorch_have_qtorchs_fields() -> None:
    """qtorch refused at import: the attributes are ``FixedPointFormat`` records with the same fields."""
    code = """
        import sys, importlib.abc
        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "qtorch":
                    raise ImportError("blocked for this test")
        sys.meta_path.insert(0, Refuse())
        import torch, wage_torch
        q = wage_torch.WAGEQuantizer(8, -1)
        a = q.activate_number
        print(type(a).__name__, a.wl, a.fl, a.clamp, a.symmetric, repr(a), q.error_number)
        print(q.quantizer(torch.tensor([0.3, -2.0])).tolist())
    """
    done = run_python(["-c", textwrap.dedent(code)], env=python_env(WAGE_TORCH_BACKEND="torch"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "FixedPointFormat 8 7 True True FixedPoint (wl=8, fl=7) None"
    assert lines[1] == [round(0.3 * 128) / 128, -127 / 128].__repr__()


def test_fixed_point_format_mirrors_qtorch() -> None:
    ours, theirs = FixedPointFormat(8, 7, clamp=True, symmetric=True), qtorch.FixedPoint(8, 7, True, True)
    assert repr(ours) == repr(theirs)
    assert {k: getattr(ours, k) for k in ("wl", "fl", "clamp", "symmetric")} == vars(theirs)


# ----------------------------------------------------------------------------------------- wage_init_


def test_wage_init_qpytorch_form_fills_the_scale_dict_like_qpytorch() -> None:
    """QPyTorch's VGG loop ``wage_init_(param, wl_weight, name, self.weight_scale, factor=1.0)``: same dict,
    same weights (the same limits, hence the same draws)."""
    shapes = {"features.1.weight": (128, 3, 3, 3), "features.4.weight": (256, 128, 3, 3),
              "classifier.0.weight": (1024, 8192), "classifier.3.weight": (10, 1024)}
    for bits_W in (2, 4, 8):
        ours: dict[str, float] = {}
        theirs: dict[str, float] = {}
        for name, shape in shapes.items():
            a, b = torch.nn.Parameter(torch.empty(shape)), torch.nn.Parameter(torch.empty(shape))
            torch.manual_seed(3)
            returned = wt.wage_init_(a, bits_W, name, ours, factor=1.0)
            torch.manual_seed(3)
            qpytorch_wage_init_(b, bits_W, name, theirs, factor=1.0)
            np.testing.assert_array_equal(f32_bits(a.detach()), f32_bits(b.detach()))
            assert returned == ours[name] == a.weight_scale
        assert ours == theirs
        assert ours["features.1.weight"] != ours["classifier.0.weight"] or bits_W == 8  # the scales vary


def test_wage_init_keyword_and_default_forms() -> None:
    d: dict[str, float] = {}
    w = torch.empty(10, 64)
    assert wt.wage_init_(w, 2, name="fc", scale_dict=d) == 2.0  # factor 2.0: QPyTorch's default too
    assert wt.wage_init_(w, bits_W=2, name="fc1", scale_dict=d, factor=1.0, mode="fan_in") == 4.0
    assert d == {"fc": 2.0, "fc1": 4.0}
    assert wt.wage_init_(w, 2, 1.0) == 4.0  # the documented form, factor positional
    assert wt.wage_init_(w, 2, 1.0, "fan_in") == 4.0
    assert wt.wage_init_(w, 2, factor=1.0) == 4.0


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("fc", [1.0]), {}, r"^scale_dict must be a mutable mapping such as a dict, got list"),
    (("fc",), {}, r"^wage_init_: missing a required argument: 'scale_dict'; the forms are"),
    ((), {"scale_dict": {}}, r"^wage_init_: missing a required argument: 'name'"),
    ((), {"name": 3, "scale_dict": {}}, r"^name must be a str"),
    ((1.0, "fan_in", 3), {}, r"^wage_init_: too many positional arguments"),
    (("fc", {}), {"factor": 1.0, "bits": 2}, r"^wage_init_: got an unexpected keyword argument 'bits'"),
])  # fmt: skip
def test_wage_init_bad_forms(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        wt.wage_init_(torch.empty(4, 4), 2, *args, **kwargs)


# ------------------------------------------------------------------------------------------------- QG

X = torch.tensor([0.02, -0.01, 0.001])
PORT = r"^QG was called with \d positional arguments.*QPyTorch's QG\(x, bits_G, bits_R, lr, mode\).*drop bits_R"


@pytest.mark.parametrize(("args", "kwargs"), [
    ((X, 8, 8, 1.0), {"mode": "nearest"}),  # QPyTorch's train.py
    ((X, 8, 8, 1.0, "stochastic"), {}),
    ((X, 8, 8, 1.0), {}),
    ((X, 8, 8, 8), {}),
])  # fmt: skip
def test_qg_called_the_qpytorch_way_says_how_to_port(args: tuple, kwargs: dict) -> None:
    with pytest.raises(TypeError, match=PORT):
        wt.QG(*args, **kwargs)


def test_qg_documented_forms_unchanged(backend: str) -> None:
    expected = [5 / 128, -3 / 128, 0.0]  # (8 / 128) * shift(x) on the 2^-7 grid
    for value in (wt.QG(X, 8, 8.0), wt.QG(X, 8, 8.0, "nearest"), wt.QG(X, 8, lr=8.0, mode="nearest"),
                  wt.QG(x=X, bits_G=8, lr=8.0)):
        assert value.tolist() == expected
    with pytest.raises(TypeError, match=r"^mode must be one of"):
        wt.QG(X, 8, 1.0, mode=0)  # a bad keyword mode is still the documented QG's error
    with pytest.raises(TypeError, match=r"missing 1 required positional argument: 'lr'"):
        wt.QG(X, 8)
