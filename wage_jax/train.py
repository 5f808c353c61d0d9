"""A jit-compiled train step for any loss and any optax transformation (WAGE's or a float baseline's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from wage_jax.optax import carried_forward_weights, with_forward_weights

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
    ``params = optax.apply_updates(params, updates)``. For WAGE, ``tx`` is ``wage_jax.optax.wage_sgd``
    (start from ``clip_params(params, bits_W)``) and the gradient is taken with respect to the
    accumulators, which the layers' ``QW`` passes straight through; for a float baseline, any optax
    optimizer (e.g. ``optax.sgd``).

    Carried forward weights: when ``opt_state`` holds them (``wage_sgd(..., carry_forward=quantizers)``,
    ``wage_jax.optax.carry_forward_weights``), the forward is ``apply_fn(params, x, key,
    forward_weights=carried)`` (``wage_jax.linen.make_apply_fn`` builds such a function): the layers use
    ``QW(params)`` written by the previous update instead of computing it, and the update writes the next
    step's. The trajectory is bit for bit the same as without them.

    Args:
        apply_fn: ``apply_fn(params, x, key) -> logits``; ``key`` feeds the model's ``"wage"`` rng stream,
            ``None`` when nothing in the forward/backward pass is stochastic. With carried forward weights
            it is called with a fourth, keyword argument ``forward_weights``.
        tx: any ``optax.GradientTransformation``.
        loss_fn: ``loss_fn(logits, y) -> scalar``; default ``sse_loss``.
        jit: compile the step with ``jax.jit``.
        donate: with ``jit``, donate ``params`` and ``opt_state`` (do not use them after the call; the carried
            forward weights in ``opt_state`` are not donated, see ``_split_carried``).

    Returns:
        the step function; jitted, it has ``step.lower(params, opt_state, x, y, key)``.

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

    step = _step_function(apply_fn, tx, loss_fn)
    if not jit:
        return step
    return _split_carried(jax.jit(step, donate_argnums=(0, 1) if donate else ()))


def _step_function(apply_fn: ApplyFn, tx: optax.GradientTransformation, loss_fn: LossFn) -> Callable[..., Any]:
    """``step(params, opt_state, x, y, key=None, forward=None)``: the train step; ``forward``, when given, is put
    into ``opt_state``'s ``CarryForwardState`` (``_split_carried`` passes the carried weights that way)."""

    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array, key: jax.Array | None = None,
             forward: Any = None):
        if forward is not None:
            opt_state = with_forward_weights(opt_state, forward)
        carried = carried_forward_weights(opt_state)

        def objective(p: Any) -> tuple[jax.Array, jax.Array]:
            logits = apply_fn(p, x, key) if carried is None else apply_fn(p, x, key, forward_weights=carried)
            return loss_fn(logits, y), logits

        (loss, logits), grads = jax.value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, logits

    return step


class _Lowered:
    """A lowered step whose ``compile(...)`` gives an executable called like the step itself,
    ``(params, opt_state, x, y, key=None)``; everything else (``as_text``, ...) is jax's ``Lowered``'s."""

    def __init__(self, lowered: Any, split: Callable[[Any], tuple[Any, Any]]) -> None:
        self._lowered, self._split = lowered, split

    def compile(self, *args: Any, **kwargs: Any) -> _Compiled:
        return _Compiled(self._lowered.compile(*args, **kwargs), self._split)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lowered, name)


class _Compiled:
    """A compiled step called as ``(params, opt_state, x, y, key=None)``; ``as_text`` etc. are jax's."""

    def __init__(self, compiled: Any, split: Callable[[Any], tuple[Any, Any]]) -> None:
        self._compiled, self._split = compiled, split

    def __call__(self, params: Any, opt_state: Any, x: Any, y: Any, key: jax.Array | None = None) -> Any:
        opt_state, forward = self._split(opt_state)
        return self._compiled(params, opt_state, x, y, key, forward)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._compiled, name)


def _split_carried(compiled: Any) -> TrainStep:
    """``step(params, opt_state, x, y, key=None)`` calling a jitted ``compiled(params, opt_state, x, y, key, forward)``
    with the carried forward weights split off ``opt_state`` into ``forward``, an argument of their own.

    ``compiled`` donates ``params`` and ``opt_state`` but not ``forward``: the backward reads the carried weights
    (input gradients) in an order XLA does not tie to the update that writes the next ones, so a donated buffer
    would be copied first (a pass over every such weight); a fresh output buffer costs no pass. ``step.lower``
    lowers ``compiled`` the same way.
    """

    def split(opt_state: Any) -> tuple[Any, Any]:
        forward = carried_forward_weights(opt_state)
        return (opt_state, None) if forward is None else (with_forward_weights(opt_state, None), forward)

    def step(params: Any, opt_state: Any, x: Any, y: Any, key: jax.Array | None = None):
        opt_state, forward = split(opt_state)
        return compiled(params, opt_state, x, y, key, forward)

    def lower(params: Any, opt_state: Any, x: Any, y: Any, key: jax.Array | None = None) -> _Lowered:
        opt_state, forward = split(opt_state)
        return _Lowered(compiled.lower(params, opt_state, x, y, key, forward), split)

    step.lower = lower
    step._cache_size = compiled._cache_size
    return step
