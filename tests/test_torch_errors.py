"""Every bad argument to ``wage_torch`` gets a ``TypeError``/``ValueError`` naming the argument (contract §4)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

import wage_torch as wt

X = torch.tensor([0.3, -0.7, 1.2])

# (callable taking the bad value, the argument's name)
BITS_ARGS: list[tuple[Callable[[object], object], str]] = [
    (lambda b: wt.QW(X, b), "bits"),
    (lambda b: wt.QG(X, b, 1.0), "bits_G"),
    (lambda b: wt.WAGEQuantizer(b, 8), "bits_A"),
    (lambda b: wt.WAGEQuantizer(8, b), "bits_E"),
    (lambda b: wt.wage_init_(torch.empty(4, 4), b), "bits_W"),
]
IDS = [name for _, name in BITS_ARGS]


@pytest.mark.parametrize(("call", "name"), BITS_ARGS, ids=IDS)
@pytest.mark.parametrize("bad", [8.0, 2.5, True, False, "8", None, np.float32(8)])
def test_bits_wrong_type(call: Callable[[object], object], name: str, bad: object) -> None:
    with pytest.raises(TypeError, match=rf"^{name} "):
        call(bad)


@pytest.mark.parametrize(("call", "name"), BITS_ARGS, ids=IDS)
@pytest.mark.parametrize("bad", [0, 1, 25, 64, -2, -3])
def test_bits_out_of_range(call: Callable[[object], object], name: str, bad: int) -> None:
    with pytest.raises(ValueError, match=rf"^{name} must be an int in \[2, 24\]"):
        call(bad)


@pytest.mark.parametrize(("call", "name"), BITS_ARGS[:2] + BITS_ARGS[4:], ids=["bits", "bits_G", "bits_W"])
def test_minus_one_only_for_the_quantizer(call: Callable[[object], object], name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} "):
        call(-1)


@pytest.mark.parametrize("bits", [2, 24, np.int64(8), np.int32(3)])
def test_bits_accepted(bits: int) -> None:
    assert wt.QW(X, bits).shape == X.shape
    assert wt.QG(X, bits, 1.0).shape == X.shape
    q = wt.WAGEQuantizer(bits, bits)
    assert isinstance(q.bits_A, int) and q.bits_A == int(bits)
    wt.WAGEQuantizer(-1, -1)


@pytest.mark.parametrize("bits", [1, 2, 15, 16, 25, 1000])
def test_clip_accepts_any_int_from_one(bits: int) -> None:
    assert wt.C(X, bits).shape == X.shape


@pytest.mark.parametrize(("bad", "exc"), [(0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError)])
def test_clip_rejects(bad: object, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=r"^bits "):
        wt.C(X, bad)


MODE_ARGS: list[tuple[Callable[[object], object], str]] = [
    (lambda m: wt.QW(X, 8, mode=m), "mode"),
    (lambda m: wt.QG(X, 8, 1.0, mode=m), "mode"),
    (lambda m: wt.WAGEQuantizer(8, 8, A_mode=m), "A_mode"),
    (lambda m: wt.WAGEQuantizer(8, 8, E_mode=m), "E_mode"),
]


@pytest.mark.parametrize(("call", "name"), MODE_ARGS, ids=["QW", "QG", "A_mode", "E_mode"])
@pytest.mark.parametrize(("bad", "exc"), [("round", ValueError), ("Nearest", ValueError), ("", ValueError),
                                          (None, TypeError), (0, TypeError)])  # fmt: skip
def test_bad_mode(call: Callable[[object], object], name: str, bad: object, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=rf"^{name} must be one of"):
        call(bad)


TENSOR_ARGS: list[tuple[Callable[[object], object], str]] = [
    (lambda x: wt.shift(x), "x"),
    (lambda x: wt.C(x, 8), "x"),
    (lambda x: wt.QW(x, 8), "x"),
    (lambda x: wt.QG(x, 8, 1.0), "x"),
    (lambda x: wt.WAGEQuantizer(8, 8)(x), "x"),
    (lambda x: wt.wage_init_(x, 8), "tensor"),
]
TENSOR_IDS = ["shift", "C", "QW", "QG", "WAGEQuantizer", "wage_init_"]


@pytest.mark.parametrize(("call", "name"), TENSOR_ARGS, ids=TENSOR_IDS)
@pytest.mark.parametrize(
    "bad",
    [[[0.1, 0.2], [0.3, 0.4]], np.full((2, 2), 0.5, np.float32), 0.5, None],
    ids=["list", "ndarray", "float", "None"],
)
def test_not_a_tensor(call: Callable[[object], object], name: str, bad: object) -> None:
    with pytest.raises(TypeError, match=rf"^{name} must be a torch.Tensor"):
        call(bad)


@pytest.mark.parametrize(("call", "name"), TENSOR_ARGS, ids=TENSOR_IDS)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64])
def test_non_float_dtype(call: Callable[[object], object], name: str, dtype: torch.dtype) -> None:
    bad = torch.ones(2, 2, dtype=dtype)
    with pytest.raises(TypeError, match=rf"^{name} must be (a )?floating.point"):
        call(bad)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_non_finite_into_shift_and_qg(bad: float, dtype: torch.dtype) -> None:
    x = torch.tensor([0.5, bad, -1.0], dtype=dtype)
    with pytest.raises(ValueError, match=r"^x contains NaN or Inf"):
        wt.shift(x)
    with pytest.raises(ValueError, match=r"^x contains NaN or Inf"):
        wt.QG(x, 8, 1.0)


def test_float64_beyond_float32_range_into_shift() -> None:
    """A float64 too large for float32 becomes Inf on the way to qtorch: refused, not turned into NaN."""
    with pytest.raises(ValueError, match=r"^x "):
        wt.QG(torch.tensor([1e300, 1.0], dtype=torch.float64), 8, 1.0)


@pytest.mark.parametrize(("bad", "exc"), [(0.0, ValueError), (-2.0, ValueError), (float("nan"), ValueError),
                                          (float("inf"), ValueError), ("2", TypeError), (True, TypeError),
                                          (None, TypeError)])  # fmt: skip
def test_bad_scale(bad: object, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=r"^scale "):
        wt.QW(X, 8, scale=bad)


@pytest.mark.parametrize(("bad", "exc"), [(float("nan"), ValueError), (float("inf"), ValueError),
                                          (-float("inf"), ValueError), ("8", TypeError), (None, TypeError),
                                          (False, TypeError)])  # fmt: skip
def test_bad_lr(bad: object, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=r"^lr "):
        wt.QG(X, 8, bad)


@pytest.mark.parametrize("lr", [0.0, -1.0, 8, np.float32(0.125), np.float64(2.0)])
def test_lr_accepted(lr: float) -> None:
    assert wt.QG(X, 8, lr).shape == X.shape


@pytest.mark.parametrize(("bad", "exc"), [(0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
                                          ("1", TypeError)])  # fmt: skip
def test_init_bad_factor(bad: object, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=r"^factor "):
        wt.wage_init_(torch.empty(4, 4), 4, factor=bad)


def test_init_bad_mode_and_shape() -> None:
    with pytest.raises(ValueError, match=r"^mode "):
        wt.wage_init_(torch.empty(4, 4), 4, mode="fan_out")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        wt.wage_init_(torch.empty(4), 4)
    with pytest.raises(ValueError, match="fan-in"):
        wt.wage_init_(torch.empty(4, 0), 4)
