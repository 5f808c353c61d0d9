"""The fast paths of wage_jax's quantizers give the reference's bits (wage_torch on qtorch's CPU kernel).

Three implementation choices made for speed (see ``benchmarks/``) are checked here where they could
go wrong:

* ``shift``'s ``max|x|`` is a float reduction (XLA's CPU backend compares subnormals as zero and skips
  NaN in it), with an exact fallback selected from a second float reduction (no branch): inputs whose max
  is subnormal or zero, subnormals mixed with normals, NaN/Inf anywhere, powers of two and their neighbours;
* ``QW``'s division by a power-of-two layer scale is one multiplication for scales up to ``2^100``
  and exact bit arithmetic beyond;
* stochastic rounding draws from ``wage_jax._src.fixed_point.uniform``, an unrolled threefry that must
  equal ``jax.random.uniform`` bit for bit.

Every case runs eagerly and under ``jax.jit``, and is compared bit for bit (sign of zero included).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import wage_jax as wj
import wage_torch as wt
from wage_jax._src.threefry import uniform
from wage_parity import spec_model
from wage_parity.testing import assert_bits_equal

F32 = np.float32
TINY = float(np.finfo(F32).tiny)  # 2^-126, the smallest normal float32
SUB = float(np.finfo(F32).smallest_subnormal)  # 2^-149


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    subs = (rng.integers(1, 2**23, 40) * SUB * rng.choice([-1.0, 1.0], 40)).astype(F32)
    return {
        "subnormal only": subs,
        "one subnormal": np.array([0.0, -0.0, 3 * SUB, 0.0], F32),
        "max is the smallest subnormal": np.array([SUB, -SUB, 0.0, -0.0], F32),  # k = -149
        "subnormals with a small normal max": np.concatenate([subs, [F32(-TINY * 4)]]).astype(F32),
        "subnormals with max 2^-100": np.concatenate([subs, [F32(2.0**-100)]]).astype(F32),
        "smallest normal max": np.array([TINY, -SUB, 0.0], F32),
        "all zero, signed": np.array([0.0, -0.0, 0.0], F32),
        "power of two and neighbours": np.array([1.0, np.nextafter(F32(1), F32(2)), -0.5, 0.25], F32),
        "just above a power of two": np.array([np.nextafter(F32(2.0**20), F32(np.inf)), 3.0, -1e-30], F32),
        "near float32 max": np.array([np.finfo(F32).max, -1.0, 2e-38, -SUB], F32),
        "normal spread": (rng.standard_normal(1000) * 10.0 ** rng.uniform(-30, 30, 1000)).astype(F32),
    }


CASES = _cases()
N = 1024  # every case is zero-padded to N elements (zeros change no max), so each jitted function compiles once

_shift = jax.jit(wj.shift)
_qg = jax.jit(lambda a: wj.QG(a, 8, 8.0))


def _padded(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.zeros(N - x.size, F32)])


@jax.jit
def _error(a, e):
    return jax.vjp(lambda t: wj.wage_quantize(t, 8, 8), a)[1](e)[0]


@pytest.mark.parametrize("name", list(CASES))
def test_shift_and_qg_match_torch(name):
    x = _padded(CASES[name])
    ref_shift = wt.shift(torch.from_numpy(x)).numpy()
    assert_bits_equal(_shift(x), ref_shift, "shift jit")
    assert_bits_equal(_qg(x), wt.QG(torch.from_numpy(x), 8, 8.0).numpy(), "QG jit")
    if name in ("subnormal only", "subnormals with a small normal max"):
        assert_bits_equal(wj.shift(jnp.asarray(x)), ref_shift, "shift eager")


@pytest.mark.parametrize(
    "name",
    ["subnormal only", "max is the smallest subnormal", "subnormals with a small normal max", "near float32 max",
     "normal spread"],
)
def test_error_quantization_matches_torch(name):
    """``wage_quantize``'s backward shifts the incoming gradient: same bits as ``WAGEQuantizer``'s backward."""
    g = _padded(CASES[name])
    x = np.linspace(-1.5, 1.5, N, dtype=F32)
    xt = torch.from_numpy(x).requires_grad_()
    wt.WAGEQuantizer(8, 8)(xt).backward(torch.from_numpy(g))
    assert_bits_equal(_error(x, g), xt.grad.numpy(), "error jit")


def _tiny_results() -> np.ndarray:
    """Gradients whose shift has subnormal results (flushed on the CPU) next to tiny normal ones, both signs."""
    g = np.array([1.0, -(2.0**-130), 2.0**-140, -(2.0**-100), -1.5 * TINY, 0.0, -0.0, -3 * SUB, 2.0**-126], F32)
    return _padded(g)


@pytest.mark.parametrize("draws", ["zero", "uniform"])
def test_tiny_shift_results_round_as_the_spec_says(draws):
    """Against the independent NumPy model (no flushing anywhere), with the rounding's draws given: ``r = 0``
    is where a flushed negative subnormal (``-0.0``) and an exact one could round differently."""
    g = _tiny_results()
    r = np.zeros(N, F32) if draws == "zero" else np.asarray(jax.random.uniform(jax.random.key(4), (N,)))
    x = np.full(N, 0.25, F32)  # no clamping: the mask is all False
    err = jax.jit(
        lambda a, e, n: jax.vjp(lambda t: wj.wage_quantize(t, 8, 8, "nearest", "stochastic", noise_E=n), a)[1](e)[0]
    )(x, g, r)
    assert_bits_equal(err, spec_model.wage_backward(g, np.zeros(N, bool), 8, r), "error")
    key = jax.random.key(5)
    for lr in (8.0, 0.1):
        qg = jax.jit(lambda a, k, lr=lr: wj.QG(a, 8, lr, "stochastic", key=k))(g, key)
        assert_bits_equal(qg, spec_model.QG(g, 8, lr, np.asarray(jax.random.uniform(key, (N,)))), f"QG lr={lr}")


@pytest.mark.parametrize("bad", [np.nan, -np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("pos", [0, 7, 999])
def test_nan_or_inf_anywhere_gives_all_nan_under_jit(bad, pos):
    x = (np.random.default_rng(pos).standard_normal(N)).astype(F32)
    x[pos] = bad
    for out in (_shift(x), _qg(x)):
        assert np.isnan(np.asarray(out)).all()
    # From about 2^12 elements XLA's CPU backend reduces with a vectorized max that skips NaN.
    big = np.ones(2**14, F32)
    big[pos] = bad
    assert np.isnan(np.asarray(_qg(big))).all()
    with pytest.raises(ValueError):
        wj.shift(jnp.asarray(x))


@pytest.mark.parametrize(("bits", "scale"), [(2, 16.0), (24, 2.0), (24, 2.0**100), (24, 2.0**101), (2, 2.0**120)])
def test_qw_power_of_two_scales_match_torch(bits, scale):
    rng = np.random.default_rng(bits)
    x = np.concatenate([rng.uniform(-1.2, 1.2, 500), [0.0, -0.0, 2.0**-23, -(2.0**-23), np.nan]]).astype(F32)
    ref = wt.QW(torch.from_numpy(x), bits, scale).numpy()
    assert_bits_equal(jax.jit(lambda a: wj.QW(a, bits, scale))(x), ref, "QW jit")


_uniform = jax.jit(uniform, static_argnums=1)


@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4, 5), (64, 1024)])
def test_uniform_is_jax_random_uniform(shape):
    for key in (jax.random.key(0), jax.random.fold_in(jax.random.key(3), 9), jax.random.PRNGKey(2**31 - 1)):
        assert_bits_equal(_uniform(key, shape), jax.random.uniform(key, shape, jnp.float32), "jit")
    if shape == (7,):
        assert_bits_equal(uniform(jax.random.key(1), shape), jax.random.uniform(jax.random.key(1), shape), "eager")
    keys = jax.random.split(jax.random.key(5), 3)
    assert_bits_equal(jax.vmap(lambda k: uniform(k, shape))(keys),
                 jax.vmap(lambda k: jax.random.uniform(k, shape))(keys), "vmap")
    rbg = jax.random.key(0, impl="rbg")  # another implementation: handed to jax.random.uniform
    assert_bits_equal(uniform(rbg, shape), jax.random.uniform(rbg, shape), "rbg")


def test_stochastic_rounding_with_a_key_uses_jax_random_uniform_draws():
    """``key=k`` gives the same bits as ``noise=jax.random.uniform(k, x.shape)``, for every stochastic path."""
    x = np.random.default_rng(1).standard_normal((32, 48)).astype(F32)
    key = jax.random.key(11)
    noise = jax.random.uniform(key, x.shape)
    with_key = jax.jit(lambda a, k: wj.fixed_point_quantize(a, 8, 7, rounding="stochastic", key=k))(x, key)
    assert_bits_equal(with_key, wj.fixed_point_quantize(x, 8, 7, rounding="stochastic", noise=noise), "fixed_point")
    k_a, k_e = jax.random.split(key)
    g = np.random.default_rng(2).standard_normal(x.shape).astype(F32)

    def fb(a, e, **kw):
        out, vjp = jax.vjp(lambda t: wj.wage_quantize(t, 8, 8, "stochastic", "stochastic", **kw), a)
        return out, vjp(e)[0]

    out_k, err_k = jax.jit(lambda a, e, k: fb(a, e, key=k))(x, g, key)
    out_n, err_n = fb(x, g, noise_A=jax.random.uniform(k_a, x.shape), noise_E=jax.random.uniform(k_e, x.shape))
    assert_bits_equal(out_k, out_n, "wage_quantize forward")
    assert_bits_equal(err_k, err_n, "wage_quantize backward")
