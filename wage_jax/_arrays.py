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


def require_finite(x: jax.Array, name: str) -> None:
    """Eagerly raise ``ValueError`` when a concrete ``x`` holds NaN or Inf (no-op while tracing)."""
    if is_concrete(x) and x.size and not bool(jnp.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf: WAGE's shift needs finite values")
