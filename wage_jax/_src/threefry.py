"""Uniform draws for stochastic rounding: ``jax.random.uniform``'s values from an unrolled Threefry hash.

Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011 (Threefry-2x32, 20 rounds).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["uniform"]

# Threefry-2x32 (Salmon et al., SC 2011), 20 rounds, as jax.random's threefry2x32 implementation computes it.
_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 block function on uint32 counters ``(x0, x1)`` under the key ``(k0, k1)``, unrolled."""
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _THREEFRY_ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = x0 ^ ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r)))
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """``jax.random.uniform(key, shape, jnp.float32)``, bit for bit, in one fused pass on every backend.

    Args:
        key: a JAX PRNG key (typed, or a raw ``uint32[2]`` key).
        shape: the shape of the draws.

    Returns:
        float32 draws in ``[0, 1)`` of ``shape``, equal to ``jax.random.uniform(key, shape)``.

    References:
        Salmon et al., SC 2011 (Threefry); ``jax.random.uniform``.

    Examples:
        >>> import jax
        >>> bool((uniform(jax.random.key(0), (4,)) == jax.random.uniform(jax.random.key(0), (4,))).all())
        True

    On the CPU, jax lowers its threefry hash to a rolled loop of five separate passes over memory
    (about 10x slower than the hash itself); this computes the same hash unrolled, as jax does on other
    backends, so XLA fuses it with its consumer (the rounding) and nothing random is written to memory.
    Used for keys of jax's default ``threefry2x32`` implementation under ``jax_threefry_partitionable``
    (the default) and fewer than ``2^32`` elements; any other key or setting goes to ``jax.random.uniform``.
    Values: ``(bits >> 9) * 2^-23`` for the 32 random bits of each element, in ``[0, 1)``.
    """
    n = int(np.prod(shape, dtype=np.int64))
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    impl = str(jax.random.key_impl(key)) if typed else str(jax.config.jax_default_prng_impl)
    if impl != "threefry2x32" or not jax.config.jax_threefry_partitionable or n >= 2**32 or n == 0:
        return jax.random.uniform(key, shape, jnp.float32)
    data = jax.random.key_data(key) if typed else jnp.asarray(key, jnp.uint32)
    if data.shape != (2,):
        return jax.random.uniform(key, shape, jnp.float32)
    # jax's counters: the row-major index of each element as a uint64, split into (high, low) words.
    low = lax.iota(jnp.uint32, n).reshape(shape)
    b0, b1 = _threefry2x32(data[0], data[1], jnp.zeros(shape, jnp.uint32), low)
    # jax.random.uniform: mantissa bits under exponent 0 -> [1, 2), minus 1; the same as an exact scaling.
    return ((b0 ^ b1) >> np.uint32(9)).astype(jnp.float32) * np.float32(2.0**-23)
