"""The fixed input corpus of the parity suite (used by the tests and by ``python -m wage_parity.report``).

Every builder is deterministic (seeded NumPy generators) and returns float32 arrays:

* ``special_values()``: ±0, subnormals (the smallest, the largest, a few between), the smallest normal
  and its neighbours, ``±2^-54`` and its neighbours (where qtorch's ``double(s) - 0.5`` stops being
  exact), ±1/2 and ±1 with neighbours, large integers around ``2^23``/``2^24``, and values far beyond
  any fixed-point range (``±1e10``, ``±3e38``, ``±max``);
* ``tie_grid(fl, k_lo, k_hi)``: every rounding tie ``(k + 1/2) * 2^-fl`` and grid point ``k * 2^-fl`` for
  integers ``k`` in ``[k_lo, k_hi]``, each with both neighbouring floats (``np.nextafter``);
* ``fixed_point_inputs(wl, fl)``: the tie grid over the whole range of the format and a few steps
  beyond it, the special values, and random values of many scales;
* ``random_tensors()``: normal and uniform tensors of many shapes and scales;
* ``shift_inputs()``: tensors that exercise ``shift``'s exponent: maxima at, just above and just below
  powers of two (normal and subnormal, down to ``2^-149``), all-zero, ``-0.0`` only, subnormal-only,
  subnormal results, mixed, huge, empty;
* ``numpy_draws(seed, *likes)``: uniform draws for the stochastic cases without torch;
* ``gradient_like(x, bits, exponent)``: an upstream gradient whose ``shift`` lands on the ties of
  ``bits``-bit errors, ``max|g| = 2^exponent``; ``subnormal_gradient``: one made of subnormals only.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "F32",
    "MAX",
    "SIZE_BUCKETS",
    "SUB",
    "TINY",
    "fixed_point_inputs",
    "gradient_like",
    "numpy_draws",
    "random_tensors",
    "shift_inputs",
    "special_values",
    "subnormal_gradient",
    "tie_grid",
]

F32 = np.float32
SUB = F32(np.finfo(F32).smallest_subnormal)  # 2^-149
TINY = F32(np.finfo(F32).tiny)  # 2^-126, the smallest normal
MAX = F32(np.finfo(F32).max)


def _neighbours(v: np.ndarray) -> np.ndarray:
    """``v`` and both of its neighbouring float32 values."""
    v = np.asarray(v, F32)
    with np.errstate(over="ignore"):  # the neighbour of max is inf: callers drop it where unwanted
        return np.concatenate([v, np.nextafter(v, F32(np.inf)), np.nextafter(v, F32(-np.inf))])


def special_values() -> np.ndarray:
    """Edge cases of float32 that a quantizer must treat as the reference does (both signs)."""
    positive = np.array(
        [
            SUB,
            3 * SUB,
            F32(2.0**-140),
            TINY - SUB,  # the largest subnormal
            TINY,
            F32(2.0**-100),
            F32(2.0**-54),
            F32(2.0**-55),
            F32(2.0**-30),
            F32(0.25),
            F32(0.5),
            F32(0.75),
            F32(1.0),
            F32(1.5),
            F32(2.0),
            F32(2.0**23),
            F32(2.0**23 + 1),
            F32(2.0**23 + 3),
            F32(2.0**24),
            F32(2.0**24 + 2),
            F32(1e10),
            F32(3e38),
            MAX,
        ],
        F32,
    )
    values = _neighbours(positive)
    values = values[np.isfinite(values)]
    return np.concatenate([np.array([0.0, -0.0], F32), values, -values]).astype(F32)


def tie_grid(fl: int, k_lo: int, k_hi: int, max_points: int | None = None, seed: int = 0) -> np.ndarray:
    """Ties ``(k + 1/2) * 2^-fl`` and grid points ``k * 2^-fl``, ``k`` in ``[k_lo, k_hi]``, with neighbours.

    ``max_points``: when the interval holds more integers, keep the 8 at each end and a seeded random
    sample of the others (for word lengths whose grid is too large to enumerate).
    """
    k = np.arange(k_lo, k_hi + 1, dtype=np.int64)
    if max_points is not None and k.size > max_points:
        rng = np.random.default_rng(seed)
        inner = np.unique(rng.integers(k_lo + 8, k_hi - 7, max_points - 16))
        k = np.concatenate([k[:8], inner, k[-8:]])
    k = k.astype(np.float64)
    values = np.concatenate([(k + 0.5) * 2.0**-fl, k * 2.0**-fl]).astype(F32)
    return _neighbours(values)


def random_tensors(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Named random tensors: normal and uniform draws of several shapes, at scales from 1e-40 to 1e30."""
    rng = np.random.default_rng(seed)
    shapes = [(), (1,), (7,), (3, 4), (2, 3, 4), (64, 33), (2, 3, 5, 7)]
    scales = [1e-40, 1e-30, 1e-3, 0.3, 1.0, 3.0, 1e4, 1e30]
    out = []
    for i, shape in enumerate(shapes):
        for scale in scales:
            out.append((f"normal{shape}*{scale:g}", rng.standard_normal(shape) * scale))
        out.append((f"uniform{shape}[-1,1)", rng.uniform(-1.0, 1.0, shape)))
        out.append((f"uniform{shape}[-8,8)*{i}", rng.uniform(-8.0, 8.0, shape) * i))
    return [(name, np.asarray(t, F32)) for name, t in out]  # 0-d arrays, not NumPy scalars


# fixed_point_inputs pads its arrays to one of these lengths: eager jax compiles each operation once per
# shape, so a handful of shapes keeps the eager half of the suite fast.
SIZE_BUCKETS = (2**16, 2**19)


def fixed_point_inputs(wl: int, fl: int, seed: int = 0, max_points: int = 2**16 + 9) -> np.ndarray:
    """A 1-D float32 array for ``FP(.; wl, fl)``: every tie and grid point of the format from 4 steps
    below its range to 4 steps above it, with neighbours (all of them up to ``wl = 16``; beyond
    ``max_points`` the 8 at each end and a random sample), the special values, random tensors, and
    random values around the range (normal, standard deviation ``2^(wl-fl)``) up to the next length in
    ``SIZE_BUCKETS``."""
    half = 2 ** (wl - 1)
    parts = [tie_grid(fl, -half - 4, half + 4, max_points=max_points, seed=seed), special_values()]
    parts += [t.ravel() for _, t in random_tensors(seed)]
    n = sum(p.size for p in parts)
    size = next((b for b in SIZE_BUCKETS if b >= n), n)
    rng = np.random.default_rng(seed + wl * 100 + fl)
    parts.append((rng.standard_normal(size - n) * 2.0 ** (wl - fl)).astype(F32))
    return np.concatenate(parts).astype(F32)


def gradient_like(x: np.ndarray, bits: int, exponent: int, seed: int = 0) -> np.ndarray:
    """An upstream gradient of ``x``'s shape whose ``shift`` lands on the ties of ``bits``-bit errors.

    The ties and grid points ``(k + 1/2) * 2^-(bits-1)``, ``k * 2^-(bits-1)`` in ``[-1, 1]`` with their
    neighbours, and ``±1``, all scaled by ``2^exponent`` (``exponent`` in ``[-100, 100]``, so that
    ``max|g| = 2^exponent`` exactly), tiled to ``x``'s size; a few elements are replaced by unscaled
    signed zeros and subnormals; the order is a seeded permutation. ``bits == -1`` uses 8.
    """
    b = 8 if bits == -1 else bits
    half = 2 ** (b - 1)
    grid = tie_grid(b - 1, -half, half - 1)
    grid = np.concatenate([np.array([1.0, -1.0], F32), grid[np.abs(grid) <= 1]])
    rng = np.random.default_rng(seed)
    g = (np.resize(grid, x.size).astype(np.float64) * 2.0**exponent).astype(F32)
    extras = np.array([0.0, -0.0, SUB, -SUB, 5 * SUB], F32)
    if x.size > 2 + extras.size:
        g[2 : 2 + extras.size] = extras
    return rng.permutation(g).reshape(x.shape)


def subnormal_gradient(shape: tuple[int, ...], exponent: int, seed: int = 0) -> np.ndarray:
    """A tensor of subnormals and signed zeros with ``max|g| = 2^exponent`` exactly, ``exponent`` in
    ``[-149, -127]``: integer multiples ``m * 2^-149`` with ``|m| <= 2^(exponent + 149)``, both signs."""
    rng = np.random.default_rng(seed)
    top = 2 ** (exponent + 149)
    m = rng.integers(-top, top + 1, shape)
    m.flat[0], m.flat[-1] = top, -top
    g = (m * np.float64(SUB)).astype(F32)
    g[m == 0] = np.where(rng.random(int((m == 0).sum())) < 0.5, F32(-0.0), F32(0.0))
    return g


def shift_inputs(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Named tensors for ``shift`` (and the gradients of ``QG``): each is reduced as a whole."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-0.5, 0.5, (4, 5))
    out: list[tuple[str, np.ndarray]] = []
    for k in (-149, -140, -127, -126, -125, -60, -1, 0, 1, 2, 23, 64, 126, 127):
        p = 2.0**k
        for name, top in (
            ("=", F32(p)),
            ("+", np.nextafter(F32(p), F32(np.inf))),
            ("-", np.nextafter(F32(p), F32(0.0))),
        ):
            if not np.isfinite(top) or top == 0:
                continue
            t = (base * float(top)).astype(F32)
            t.flat[int(rng.integers(t.size))] = top * (1 if k % 2 else -1)  # the max, of either sign
            out.append((f"max{name}2^{k}", t))
    out += [
        ("zeros", np.zeros((4, 5), F32)),
        ("-0.0 only", np.full((7,), -0.0, F32)),
        ("signed zeros", np.array([0.0, -0.0, -0.0, 0.0, 0.0, -0.0, 0.0], F32)),
        ("one subnormal", np.array([0.0, -0.0, 3 * SUB, 0.0, 0.0, 0.0, 0.0], F32)),
        ("subnormals", (rng.integers(-(2**23) + 1, 2**23, (4, 5)) * SUB).astype(F32)),
        ("smallest subnormal", np.array([-SUB, 0.0, SUB, -0.0, 0.0, 0.0, 0.0], F32)),
        ("subnormal+normal", np.array([3 * SUB, -SUB, TINY, 1e-38, 0.0, -0.0, 2**-125], F32)),
        ("mixed scales", np.array([1e-45, 1e-40, 1e-20, 1.0, -3.0, 1e20, -0.0], F32)),
        ("subnormal results", np.array([3 * TINY, -1.5 * TINY, TINY, 2.0, -0.75 * TINY, 5 * SUB, TINY + SUB], F32)),
        ("subnormal results, ties", np.array([3 * SUB, -5 * SUB, 7 * SUB, 8.0, -SUB, 2 * SUB, -3 * SUB], F32)),
        ("huge", np.array([3e38, -3e38, 1.0, -1e38, 1e-45, 0.0, MAX], F32)),
        ("-max", np.array([-MAX, 1.0, 0.5, 0.0, 2.0, 1e30, -1e-30], F32)),
        ("scalar", np.array(-0.3, F32)),
        ("scalar subnormal", np.array(7 * SUB, F32)),
        ("empty", np.zeros((0,), F32)),
        ("empty 2-d", np.zeros((2, 0), F32)),
    ]
    # Random tensors of the shapes above: eager jax compiles every operation once per shape (about a
    # second for shift on this project's CI machine), so the corpus keeps to a few shapes.
    out += [(name, t) for name, t in random_tensors(seed) if t.shape in ((), (7,))]
    out += [(f"normal(4, 5)*{s:g}", (rng.standard_normal((4, 5)) * s).astype(F32)) for s in (1e-38, 1e-3, 1.0, 1e30)]
    return out


def numpy_draws(seed: int, *likes: np.ndarray) -> list[np.ndarray]:
    """Uniform float32 draws in ``[0, 1)``, one array shaped like each of ``likes`` in turn, from NumPy's
    generator seeded with ``seed``: the stochastic cases' draws where no torch reference is computed (a
    device compared with the host needs the same draws on both, not qtorch's)."""
    rng = np.random.default_rng(seed)
    return [rng.random(np.shape(x), dtype=F32) for x in likes]
