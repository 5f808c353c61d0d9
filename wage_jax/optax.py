"""WAGE's weight update as optax transformations (WAGE Eq. 11-12; contract §3).

The reference updates every weight accumulator as ``w <- C(w, bits_W) - QG(grad, bits_G, lr)``. In
optax terms: ``scale_by_qg`` maps each gradient leaf to ``-QG(g, bits_G, lr)``, ``optax.apply_updates``
adds it, and ``clip_params`` applies ``C`` after the step. Keeping the parameters clipped at all times
(clip once at initialization) makes this the reference's clip-then-subtract exactly: if ``w = C(w)``
then ``w + (-q) == C(w) - q`` bit for bit (IEEE subtraction is addition of the negation), and the
reference's next clip sees ``C(C(w) - q)``, which is what we store. The stored accumulators are
therefore always ``C(reference accumulators)``; the forward weights ``QW(w)`` are identical, because
``QW`` clamps to the same range after rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wage_jax.functional import QG, C
from wage_spec import check_bits, check_mode

__all__ = ["ScaleByQGState", "WAGEOptimizer", "clip_params", "scale_by_qg", "wage_sgd"]

Schedule = Callable[[jax.Array], jax.Array]


class ScaleByQGState(NamedTuple):
    """``count``: steps taken (int32, drives schedules); ``key``: PRNG key for stochastic rounding, or None."""

    count: jax.Array
    key: jax.Array | None


def scale_by_qg(
    bits_G: int, learning_rate: float | Schedule, mode: str = "stochastic", *, key: jax.Array | None = None
) -> optax.GradientTransformation:
    """Map every gradient leaf ``g`` to ``-QG(g, bits_G, lr)``: WAGE's quantized update (Eq. 11-12).

    Wu et al., "Training and Inference with Integers in Deep Neural Networks", ICLR 2018.

    Args:
        bits_G: gradient bits, an int in [2, 24].
        learning_rate: a float, or an optax schedule ``count -> lr``.
        mode: ``"nearest"`` or ``"stochastic"`` rounding of the update.
        key: PRNG key for ``"stochastic"``; each step splits it and draws one key per leaf.

    An all-zero gradient leaf gives a zero update. Composable with ``optax.chain``.
    """
    bits_G = check_bits(bits_G, "bits_G")
    mode = check_mode(mode, "mode")
    stochastic = mode == "stochastic"
    if stochastic and key is None:
        raise ValueError("scale_by_qg(mode='stochastic') needs key (a jax.random key)")

    def init_fn(params: Any) -> ScaleByQGState:
        del params
        return ScaleByQGState(count=jnp.zeros([], jnp.int32), key=key if stochastic else None)

    def update_fn(updates: Any, state: ScaleByQGState, params: Any = None) -> tuple[Any, ScaleByQGState]:
        del params
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        if stochastic:
            next_key, step_key = jax.random.split(state.key)
            keys = list(jax.random.split(step_key, len(leaves)))
        else:
            next_key, keys = None, [None] * len(leaves)
        new = [-QG(g, bits_G, lr, mode, key=k) for g, k in zip(leaves, keys, strict=True)]
        return jax.tree_util.tree_unflatten(treedef, new), ScaleByQGState(state.count + 1, next_key)

    return optax.GradientTransformation(init_fn, update_fn)


def clip_params(params: Any, bits_W: int) -> Any:
    """``C(w, bits_W)`` on every leaf: the step after ``optax.apply_updates`` (docs/contract.md §3)."""
    bits_W = check_bits(bits_W, "bits_W")
    return jax.tree_util.tree_map(lambda w: C(w, bits_W), params)


class WAGEOptimizer(NamedTuple):
    """The whole WAGE weight update: ``tx`` (``scale_by_qg``) followed by the clip to ``bits_W``."""

    tx: optax.GradientTransformation
    bits_W: int

    def init(self, params: Any) -> tuple[Any, Any]:
        """Clip the initial accumulators (the invariant that makes the update exact) and init ``tx``."""
        params = clip_params(params, self.bits_W)
        return params, self.tx.init(params)

    def step(self, grads: Any, opt_state: Any, params: Any) -> tuple[Any, Any]:
        """``params <- C(params - QG(grads))``; returns ``(params, opt_state)``."""
        updates, opt_state = self.tx.update(grads, opt_state, params)
        return clip_params(optax.apply_updates(params, updates), self.bits_W), opt_state


def wage_sgd(
    bits_W: int,
    bits_G: int,
    learning_rate: float | Schedule,
    mode: str = "stochastic",
    *,
    key: jax.Array | None = None,
) -> WAGEOptimizer:
    """WAGE's optimizer: quantized gradients (``QG``) and clipped accumulators (``C``), contract §3."""
    return WAGEOptimizer(scale_by_qg(bits_G, learning_rate, mode, key=key), check_bits(bits_W, "bits_W"))
