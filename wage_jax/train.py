"""A jit-compiled WAGE train step: forward, sum-of-squares loss, backward, ``WAGEOptimizer`` update."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from wage_jax.optax import WAGEOptimizer

__all__ = ["make_train_step", "sse_loss"]


def sse_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``0.5 * sum((logits - onehot(labels))^2)`` (contract §3). logits ``(N, K)``, labels ``(N,)`` int."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return 0.5 * jnp.sum(jnp.square(logits - onehot))


def make_train_step(
    apply_fn: Callable[[Any, jax.Array, jax.Array | None], jax.Array],
    optimizer: WAGEOptimizer,
    *,
    jit: bool = True,
) -> Callable[..., tuple[Any, Any, jax.Array, jax.Array]]:
    """Return ``step(params, opt_state, x, y, key) -> (params, opt_state, loss, logits)``.

    ``apply_fn(params, x, key)`` computes the logits (``key`` feeds the model's ``"wage"`` rng stream,
    ``None`` when nothing is stochastic). The gradient is taken with respect to the accumulators,
    which the layers' ``QW`` passes straight through.
    """

    def step(params, opt_state, x, y, key=None):
        def loss_fn(p):
            logits = apply_fn(p, x, key)
            return sse_loss(logits, y), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        params, opt_state = optimizer.step(grads, opt_state, params)
        return params, opt_state, loss, logits

    return jax.jit(step, donate_argnums=(0, 1)) if jit else step
