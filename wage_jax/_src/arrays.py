"""Input handling shared by the wage_jax functions: dtype checks and float32 round trips."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def as_float32(x: object, name: str = "x") -> tuple[jax.Array, np.dtype]:
    """Return ``(x as float32, x's dtype)``; refuse non-floating inputs with a ``TypeError`` naming ``name``.

    WAGE's contract is float32 arithmetic (qtorch's only dtype): other float dtypes are computed in
    float32 and the caller casts the result back to the returned dtype.
    """
    if isinstance(x, (bool, int, float, complex)) or x is None:
        raise TypeError(f"{name} must be a floating-point array, got {type(x).__name__}")
    if not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be a floating-point array (jax.Array or numpy.ndarray), got {type(x).__name__}")
    dtype = np.dtype(x.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array (float16, bfloat16, float32, float64), got {dtype}")
    return jnp.asarray(x).astype(jnp.float32), dtype


def is_concrete(x: object) -> bool:
    """True when ``x`` holds values now (eager), False inside ``jit``/``vmap``/``grad`` tracing."""
    return not isinstance(x, jax.core.Tracer)


def all_finite_now(x: jax.Array) -> bool:
    """False only when ``x`` is known, now, to hold NaN or Inf.

    The decision is made on the value actually evaluated, ``all(isfinite(x))``: inside a ``jit``,
    ``vmap``, ``grad`` or ``checkify`` trace it is a tracer even when ``x`` is a concrete array closed
    over by the traced function, and then nothing is decided (True). Eagerly it is a concrete bool.
    """
    if not x.size:
        return True
    ok = jnp.isfinite(x).all()
    return not is_concrete(ok) or bool(ok)


def require_finite(x: jax.Array, name: str) -> None:
    """Eagerly raise ``ValueError`` when ``x`` holds NaN or Inf; a no-op while tracing (``all_finite_now``)."""
    if not all_finite_now(x):
        raise ValueError(f"{name} contains NaN or Inf: WAGE's shift needs finite values")


def check_key(key: object, name: str = "key") -> jax.Array:
    """Return ``key`` if it is a JAX PRNG key, else raise ``TypeError`` naming ``name``.

    Accepted: a typed key array (``jax.random.key``) or a legacy raw key, a ``uint32`` array whose last
    axis has 2 elements (``jax.random.PRNGKey`` under the default threefry implementation). A Python
    int, a float array or any other object is refused (``key=0`` is a common slip for ``jax.random.key(0)``).
    """
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    dtype = getattr(key, "dtype", None)
    if dtype is not None and np.dtype(dtype) == np.uint32 and np.ndim(key) >= 1 and np.shape(key)[-1] == 2:
        return jnp.asarray(key)
    raise TypeError(
        f"{name} must be a JAX PRNG key (jax.random.key(seed)), got {key!r:.60} of type {type(key).__name__}"
    )
