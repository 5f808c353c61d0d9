"""The parity suite's own machinery: the bit comparison, torch's reproducible draws, and the corpus's teeth.

The corpus must tell a correct implementation from plausible wrong ones: each "mutant" below is a
NumPy implementation of a known mistake (rounding ``x * 2^fl`` directly, rounding half away from zero
as qtorch does on CUDA, the reference's float32 ``log2`` in ``shift``, flushing subnormals to zero as
XLA's CPU backend does, losing the sign of zero) and must differ from the torch reference somewhere in
the corpus. The reference itself is checked against the independent NumPy model of contract §1-2
(``tests/spec_model.py``) given the draws that ``torch_draws`` reproduces.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from qtorch.quant import fixed_point_quantize as qtorch_fixed_point_quantize

import wage_torch as wt
from wage_parity import spec_model
from wage_parity.bits import assert_bits_equal, bit_diff, f32_bits, torch_draws
from wage_parity.corpus import F32, SUB, TINY, fixed_point_inputs, shift_inputs, special_values, tie_grid

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_bit_diff_counts_signed_zeros_and_reports_examples():
    a = np.array([0.0, 1.0, -0.0, 2.0, np.nan], F32)
    b = np.array([-0.0, 1.0, -0.0, np.nextafter(F32(2.0), F32(3.0)), np.nan], F32)
    diff = bit_diff(a, b)
    assert (diff.compared, diff.differ) == (5, 2)
    assert [idx for idx, _, _ in diff.examples] == [(0,), (3,)]
    text = diff.describe("x")
    assert "2 of 5 elements differ" in text and "0x80000000" in text
    with pytest.raises(AssertionError, match="2 of 5 elements differ"):
        assert_bits_equal(a, b, "x")


def test_bit_diff_nan_equal_and_masks_and_shapes():
    a = np.array([np.nan, 1.0], F32)
    b = np.array([-np.nan, 1.0], F32)
    assert bit_diff(a, b).differ == 1  # NaNs of opposite sign differ bit for bit
    assert bit_diff(a, b, nan_equal=True).differ == 0
    assert bit_diff(np.array([True, False]), np.array([True, True])).differ == 1
    assert bit_diff(np.zeros(3, F32), np.zeros(4, F32)).differ == 4
    with pytest.raises(TypeError, match="float32"):
        f32_bits(np.zeros(2, np.float64))


def test_torch_draws_reproduce_qtorch_stochastic_rounding():
    x = fixed_point_inputs(6, 5, seed=3)
    (r,) = torch_draws(7, torch.from_numpy(x))
    torch.manual_seed(7)
    ref = qtorch_fixed_point_quantize(torch.from_numpy(x), 6, 5, clamp=True, symmetric=True, rounding="stochastic")
    model, _ = spec_model.fixed_point(x, 6, 5, clamp=True, symmetric=True, r=r)
    assert_bits_equal(ref, model, "qtorch vs the contract model given torch_draws")
    # ... and the draws matter: another seed rounds many elements differently.
    torch.manual_seed(8)
    other = qtorch_fixed_point_quantize(torch.from_numpy(x), 6, 5, clamp=True, symmetric=True, rounding="stochastic")
    assert bit_diff(other, ref).differ > 1000


def test_wage_quantizer_draws_forward_then_backward_from_one_generator():
    x = fixed_point_inputs(4, 3, seed=1)[:5000]
    g = np.random.default_rng(0).standard_normal(x.shape).astype(F32)
    r_A, r_E = torch_draws(11, torch.from_numpy(x), torch.from_numpy(g))
    xt = torch.from_numpy(x.copy()).requires_grad_()
    torch.manual_seed(11)
    y = wt.WAGEQuantizer(4, 4, "stochastic", "stochastic")(xt)
    y.backward(torch.from_numpy(g))
    y_model, mask = spec_model.wage_forward(x, 4, r=r_A)
    assert_bits_equal(y, y_model, "forward")
    assert_bits_equal(xt.grad, spec_model.wage_backward(g, mask, 4, r=r_E), "backward")


def _fixed_point_corpus(wl: int) -> tuple[np.ndarray, np.ndarray]:
    x = fixed_point_inputs(wl, wl - 1, seed=wl)
    ref = qtorch_fixed_point_quantize(torch.from_numpy(x), wl, wl - 1, clamp=False, symmetric=True, rounding="nearest")
    return x, ref.numpy()


def _scaled(x: np.ndarray, wl: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (x * F32(2.0 ** (wl - 1))).astype(F32)


def test_corpus_catches_rounding_x_times_2_to_the_fl_directly():
    # Round half to even on y itself, skipping qtorch's float32 addition y + 1/2 (and its signed zeros).
    wl = 8
    x, ref = _fixed_point_corpus(wl)
    with np.errstate(over="ignore", invalid="ignore"):
        mutant = (np.rint(_scaled(x, wl).astype(np.float64)) * 2.0 ** -(wl - 1)).astype(F32)
    diff = bit_diff(mutant, ref)
    assert diff.differ > 0, "the corpus does not tell round(y) from qtorch's float32(y + 1/2) rounding"


def test_corpus_catches_round_half_away_from_zero():
    # qtorch's CUDA kernel rounds with round(): ties away from zero.
    for wl in (2, 8, 16):
        x, ref = _fixed_point_corpus(wl)
        y = _scaled(x, wl).astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            mutant = (np.trunc(y + np.copysign(0.5, y)) * 2.0 ** -(wl - 1)).astype(F32)
        assert bit_diff(mutant, ref).differ > 2 ** (wl - 1), f"wl={wl}: every tie away from zero should differ"


def test_corpus_catches_a_lost_sign_of_zero():
    x, ref = _fixed_point_corpus(8)
    mutant = np.where(ref == 0, F32(0.0), ref)
    assert bit_diff(mutant, ref).differ > 0
    assert np.signbit(ref[ref == 0]).any() and (~np.signbit(ref[ref == 0])).any()


def test_corpus_catches_the_reference_float32_log2_in_shift():
    differ = 0
    for _, x in shift_inputs(1234):
        if x.size == 0 or not np.any(x):
            continue
        ref = wt.shift(torch.from_numpy(x.copy())).numpy()
        m = np.max(np.abs(x))
        k = int(np.ceil(np.log2(m, dtype=np.float32)))  # the reference's float32 log2
        mutant = (x.astype(np.float64) / 2.0**k).astype(F32)
        differ += bit_diff(mutant, ref).differ
    assert differ > 0, "no maximum just above a power of two in the shift corpus"


def test_corpus_catches_flushed_subnormals():
    flushed_somewhere = 0
    for _, x in shift_inputs(1234):
        if x.size == 0:
            continue
        ref = wt.shift(torch.from_numpy(x.copy())).numpy()
        ftz = np.where(np.abs(ref) < TINY, np.copysign(F32(0.0), ref), ref).astype(F32)
        flushed_somewhere += bit_diff(ftz, ref).differ
    assert flushed_somewhere > 0, "no subnormal result in the shift corpus"
    values = special_values()
    assert np.any((values != 0) & (np.abs(values) < TINY)) and SUB in values and -SUB in values


def test_tie_grid_holds_every_tie_and_both_neighbours():
    grid = tie_grid(3, -4, 3)
    ties = (np.arange(-4, 4) + 0.5) / 8
    for t in ties.astype(F32):
        assert t in grid and np.nextafter(t, F32(1)) in grid and np.nextafter(t, F32(-1)) in grid
