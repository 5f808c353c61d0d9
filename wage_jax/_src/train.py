"""A jit-compiled train step for any loss and any optax transformation (WAGE's or a float baseline's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["make_train_step", "sse_loss"]

ApplyFn = Callable[[Any, jax.Array, "jax.Array | None"], jax.Array]
LossFn = Callable[[jax.Array, jax.Array], jax.Array]
TrainStep = Callable[..., tuple[Any, Any, jax.Array, jax.Array]]


def sse_loss(logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> jax.Array:
    """The sum-of-squares loss of WAGE's reference training, ``0.5 * sum((logits - onehot(labels))^2)``.

    Args:
        logits: ``(N, K)`` floating point.
        labels: ``(N,)`` integer class indices in ``[0, K)``.

    Returns:
        a scalar of ``logits``' dtype, summed (not averaged) over the batch.

    References:
        Wu et al., "Training and Inference with Integers in Deep Neural Networks", ICLR 2018, Sec. 3.3.3;
        docs/contract.md §3.

    Examples:
        >>> import jax.numpy as jnp
        >>> sse_loss(jnp.array([[0.5, 0.0], [0.0, 0.0]]), jnp.array([0, 1]))
        Array(0.625, dtype=float32)
    """
    logits = jnp.asarray(logits)
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return 0.5 * jnp.sum(jnp.square(logits - onehot))


def make_train_step(
    apply_fn: ApplyFn,
    tx: optax.GradientTransformation,
    loss_fn: LossFn = sse_loss,
    *,
    jit: bool = True,
    donate: bool = True,
) -> TrainStep:
    """Return ``step(params, opt_state, x, y, key=None) -> (params, opt_state, loss, logits)``.

    One step: ``logits = apply_fn(params, x, key)``, ``loss = loss_fn(logits, y)``, the gradient with
    respect to ``params``, ``updates, opt_state = tx.update(grads, opt_state, params)`` and
    ``params = optax.apply_updates(params, updates)``. For WAGE, ``tx`` is ``wage_jax.wage_sgd``
    (start from ``clip_params(params, bits_W)``) and the gradient is taken with respect to the
    accumulators, which the layers' ``QW`` passes straight through; for a float baseline, any optax
    optimizer (e.g. ``optax.sgd``).

    Args:
        apply_fn: ``apply_fn(params, x, key) -> logits``; ``key`` feeds the model's ``"wage"`` rng stream,
            ``None`` when nothing in the forward/backward pass is stochastic.
        tx: any ``optax.GradientTransformation``.
        loss_fn: ``loss_fn(logits, y) -> scalar``; default ``sse_loss``.
        jit: compile the step with ``jax.jit``.
        donate: with ``jit``, donate ``params`` and ``opt_state`` (do not use them after the call).

    Returns:
        the step function: with ``jit``, a plain ``jax.jit`` function (``.lower``, ``.trace``, ``.eval_shape``).

    References:
        Wu et al., ICLR 2018, Sec. 3.3 (the training loop).

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> step = make_train_step(lambda p, x, key: x @ p, optax.sgd(0.5))
        >>> params, state = jnp.zeros((2, 2)), optax.sgd(0.5).init(jnp.zeros((2, 2)))
        >>> params, state, loss, logits = step(params, state, jnp.eye(2), jnp.array([0, 1]))
        >>> float(loss), params.tolist()
        (1.0, [[0.5, 0.0], [0.0, 0.5]])
    """

    step = step_function(apply_fn, tx, loss_fn)
    if not jit:
        return step
    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


def step_function(apply_fn: ApplyFn, tx: optax.GradientTransformation, loss_fn: LossFn = sse_loss) -> TrainStep:
    """The train step of ``make_train_step``, not compiled: ``step(params, opt_state, x, y, key=None)``.

    For callers that compile it their own way (``wage_jax.parallel`` places the inputs on a mesh).
    """

    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array, key: jax.Array | None = None):
        def objective(p: Any) -> tuple[jax.Array, jax.Array]:
            logits = apply_fn(p, x, key)
            return loss_fn(logits, y), logits

        (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, logits

    return step
