"""``wage_torch.WAGEQuantizer`` forward and backward against the NumPy model of contract §2.

Forward: ``FP(x; bits_A)`` and its clamp mask (identity when ``bits_A == -1``). Backward:
``FP(shift(g); bits_E)`` zeroed where the forward clamped (``g`` unchanged when ``bits_E == -1``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import wage_torch as wt
from wage_parity import spec_model as spec
from wage_parity.spec_model import assert_same_bits

F32 = np.float32
MODES = ("nearest", "stochastic")


def run(
    q: torch.nn.Module, x: np.ndarray, g: np.ndarray, seed_fwd: int = 0, seed_bwd: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward ``x`` and backward ``g`` through ``q``, reseeding torch before each; returns (output, x.grad)."""
    xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    torch.manual_seed(seed_fwd)
    y = q(xt)
    torch.manual_seed(seed_bwd)
    y.backward(torch.tensor(g, dtype=torch.float32))
    return y.detach(), xt.grad


def model(
    x: np.ndarray,
    g: np.ndarray,
    bits_A: int,
    bits_E: int,
    A_mode: str,
    E_mode: str,
    seed_fwd: int = 0,
    seed_bwd: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The contract's forward/backward, with the draws torch's generator gives after the same seeds."""
    torch.manual_seed(seed_fwd)
    r_a = torch.rand(x.shape).numpy() if A_mode == "stochastic" else None
    torch.manual_seed(seed_bwd)
    r_e = torch.rand(g.shape).numpy() if E_mode == "stochastic" else None
    out, mask = spec.wage_forward(x, bits_A, r=None if bits_A == -1 else r_a)
    grad = spec.wage_backward(g, mask, bits_E, r=None if bits_E == -1 else r_e)
    return out, mask, grad


def inputs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 1.2).astype(F32)  # a good share beyond [-1, 1]: the mask matters
    g = (rng.standard_normal(shape) * 10.0 ** rng.uniform(-6, 3)).astype(F32)
    return x, g


def test_hand_derived_mask() -> None:
    """x = [2, -3, 0.2, 0.99], bits 8-8: grad is zero where the forward clamped, ``FP(shift(g))`` elsewhere."""
    q = wt.WAGEQuantizer(8, 8)
    x = np.array([2.0, -3.0, 0.2, 0.99], F32)
    g = np.ones(4, F32)  # shift(1) = 1; FP(1; 8 bits) = 1 - 2^-7 after the clamp
    y, grad = run(q, x, g)
    lim = 1 - 2.0**-7
    assert_same_bits(y, np.array([lim, -lim, round(0.2 * 128) / 128, round(0.99 * 128) / 128], F32))
    assert_same_bits(grad, np.array([0.0, 0.0, lim, lim], F32))


@pytest.mark.parametrize("bits_A", [2, 3, 8, 16])
@pytest.mark.parametrize("bits_E", [2, 8, 16])
@pytest.mark.parametrize("A_mode", MODES)
@pytest.mark.parametrize("E_mode", MODES)
def test_forward_backward_match_model(bits_A: int, bits_E: int, A_mode: str, E_mode: str) -> None:
    x, g = inputs((17, 9), seed=bits_A * 100 + bits_E)
    q = wt.WAGEQuantizer(bits_A, bits_E, A_mode=A_mode, E_mode=E_mode)
    y, grad = run(q, x, g, seed_fwd=bits_A, seed_bwd=bits_E + 50)
    out, mask, want = model(x, g, bits_A, bits_E, A_mode, E_mode, seed_fwd=bits_A, seed_bwd=bits_E + 50)
    assert_same_bits(y, out)
    assert_same_bits(grad, want)
    assert mask.any() and not mask.all()  # both kinds of element are exercised
    assert np.all(grad.numpy()[mask] == 0)


@pytest.mark.parametrize("bits", range(2, 17))
def test_forward_ties_and_mask_edges(bits: int) -> None:
    """Every tie and grid point in [-1.5, 1.5] and one ulp either side: output and mask."""
    fl = bits - 1
    k = np.arange(-1.5 * 2**fl, 1.5 * 2**fl + 1)
    ties = ((k + 0.5) * 2.0**-fl).astype(F32)
    x = np.concatenate([ties, np.nextafter(ties, F32(np.inf)), np.nextafter(ties, F32(-np.inf)), k * 2.0**-fl])
    x = x.astype(F32)
    g = np.linspace(-1, 1, x.size).astype(F32)
    y, grad = run(wt.WAGEQuantizer(bits, bits), x, g)
    out, mask, want = model(x, g, bits, bits, "nearest", "nearest")
    assert_same_bits(y, out)
    assert_same_bits(grad, want)
    # independent of the model: the mask is exactly "rounded beyond 1 - 2^-fl"
    lim = 1 - 2.0**-fl
    rounded = np.rint(x.astype(np.float64) * 2**fl) / 2**fl  # no float32 rounding in y + 0.5 at these sizes
    assert np.array_equal(mask, np.abs(rounded) > lim)


@pytest.mark.parametrize("mode", MODES)
def test_bits_A_full_precision_is_identity_without_mask(mode: str) -> None:
    x = np.array([5.0, -7.0, 0.3, -0.0, 1e-40, 3e38], F32)
    g = np.array([0.5, -0.25, 1.0, 2.0, -3.0, 0.1], F32)
    y, grad = run(wt.WAGEQuantizer(-1, 8, A_mode=mode, E_mode=mode), x, g)
    assert_same_bits(y, x)
    out, mask, want = model(x, g, -1, 8, mode, mode)
    assert not mask.any()
    assert_same_bits(grad, want)
    assert np.all(grad.numpy() != 0)  # nothing zeroed although |x| > 1: no mask without bits_A


@pytest.mark.parametrize("mode", MODES)
def test_bits_E_full_precision_passes_the_gradient_unmasked(mode: str) -> None:
    x = np.array([5.0, -7.0, 0.3, 0.9, -0.4], F32)
    g = np.array([0.5, -0.25, 1e-30, 12345.678, -0.0], F32)
    y, grad = run(wt.WAGEQuantizer(4, -1, A_mode=mode, E_mode=mode), x, g)
    out, mask, _ = model(x, g, 4, -1, mode, mode)
    assert_same_bits(y, out)
    assert mask[0] and mask[1]
    assert_same_bits(grad, g)  # unchanged, not shifted, not quantized, not masked


def test_both_full_precision() -> None:
    x = np.array([5.0, -0.3, 0.0], F32)
    g = np.array([1e-20, -7.0, 3.0], F32)
    y, grad = run(wt.WAGEQuantizer(-1, -1), x, g)
    assert_same_bits(y, x)
    assert_same_bits(grad, g)


def test_all_zero_gradient() -> None:
    x = np.array([2.0, 0.1, -0.2], F32)
    _, grad = run(wt.WAGEQuantizer(8, 8), x, np.zeros(3, F32))
    assert_same_bits(grad, np.zeros(3, F32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_gradient_raises(bad: float) -> None:
    xt = torch.tensor([0.1, 0.2], requires_grad=True)
    y = wt.WAGEQuantizer(8, 8)(xt)
    with pytest.raises(ValueError, match="gradient"):
        y.backward(torch.tensor([1.0, bad]))


def test_shapes_and_non_contiguous() -> None:
    q = wt.WAGEQuantizer(4, 6)
    for shape in ((), (7,), (2, 3, 4, 5)):
        x, g = inputs(shape, seed=len(shape))
        y, grad = run(q, x, g)
        out, _, want = model(x, g, 4, 6, "nearest", "nearest")
        assert y.shape == shape and grad.shape == shape
        assert_same_bits(y, out)
        assert_same_bits(grad, want)
    base = torch.tensor(inputs((6, 11), seed=9)[0], requires_grad=True)
    xt = base.t()  # a non-contiguous view
    y = q(xt)
    g = torch.linspace(-1, 1, 66).reshape(11, 6)
    y.backward(g)
    out, _, want = model(xt.detach().numpy(), g.numpy(), 4, 6, "nearest", "nearest")
    assert_same_bits(y.detach(), out)
    assert_same_bits(base.grad.t().contiguous(), want)


def test_inside_a_network() -> None:
    """The quantizer composes with autograd: grads of a Linear's weight see the masked, quantized error."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3, bias=False)
    q = wt.WAGEQuantizer(8, 8)
    x = torch.randn(4, 5) * 2
    h = lin(x)
    out = q(h)
    g = torch.randn(4, 3)
    out.backward(g)
    _, mask = spec.wage_forward(h.detach().numpy(), 8)
    gh = spec.wage_backward(g.numpy(), mask, 8)
    want = torch.from_numpy(gh).t() @ x
    torch.testing.assert_close(lin.weight.grad, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtype_round_trip(dtype: torch.dtype) -> None:
    x = torch.linspace(-1.6, 1.6, 97, dtype=torch.float64).to(dtype).requires_grad_(True)
    g = (torch.linspace(-3, 2, 97, dtype=torch.float64) ** 3).to(dtype)
    y = wt.WAGEQuantizer(6, 5)(x)
    y.backward(g)
    assert y.dtype == dtype and x.grad.dtype == dtype
    out, mask = spec.wage_forward(x.detach().to(torch.float32).numpy(), 6)
    want = spec.wage_backward(g.to(torch.float32).numpy(), mask, 5)
    assert_same_bits(y.detach().to(torch.float32), out)  # 6-bit words are exact in every float dtype
    assert_same_bits(x.grad.to(torch.float32), want)


def test_repr_and_attributes() -> None:
    q = wt.WAGEQuantizer(8, -1, A_mode="stochastic")
    assert (q.bits_A, q.bits_E, q.A_mode, q.E_mode) == (8, -1, "stochastic", "nearest")
    assert "bits_A=8" in repr(q) and "bits_E=-1" in repr(q)


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(F32, hnp.array_shapes(min_dims=0, max_dims=3, max_side=6),
                 elements=st.floats(width=32, allow_nan=False, allow_infinity=True)),
    bits_A=st.sampled_from([-1, *range(2, 25)]),
    bits_E=st.sampled_from([-1, *range(2, 25)]),
    modes=st.tuples(st.sampled_from(MODES), st.sampled_from(MODES)),
    seed=st.integers(0, 2**31 - 1),
)  # fmt: skip
def test_property_forward_backward(x: np.ndarray, bits_A: int, bits_E: int, modes: tuple[str, str], seed: int) -> None:
    g = np.random.default_rng(seed).standard_normal(x.shape).astype(F32)
    q = wt.WAGEQuantizer(bits_A, bits_E, A_mode=modes[0], E_mode=modes[1])
    y, grad = run(q, x, g, seed_fwd=seed, seed_bwd=seed + 1)
    out, _, want = model(x, g, bits_A, bits_E, *modes, seed_fwd=seed, seed_bwd=seed + 1)
    assert_same_bits(y, out)
    assert_same_bits(grad, want)
