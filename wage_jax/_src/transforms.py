"""WAGE's weight update as optax transformations (WAGE Eq. 11-12; docs/contract.md §3).

The reference updates every weight accumulator as ``w <- C(w, bits_W) - QG(grad, bits_G, lr)``. In optax
terms that is a chain of two ``GradientTransformation`` s followed by ``optax.apply_updates``:

* ``scale_by_qg(bits_G, lr)`` maps each gradient leaf ``g`` to ``-QG(g, bits_G, lr)``;
* ``keep_params_clipped(bits_W)`` changes the update ``u`` of every element whose ``w + u`` would leave
  ``C``'s range ``[-b, b]`` (``b = 1 - 2^-(bits_W-1)``) into ``±b - w``, so that ``apply_updates`` lands on
  ``±b`` exactly (the shape of ``optax.keep_params_nonnegative``).

``wage_sgd`` is that chain, so ``flax.training.train_state.TrainState``, ``flax.nnx.Optimizer`` and
``wage_jax.make_train_step`` run WAGE as they run any optax optimizer. Under ``jit`` the two
transformations and ``apply_updates`` compile into one elementwise pass per layer (after QG's max): read
the gradient and the accumulator once, write the new, clipped accumulator.

Why this is the reference bit for bit. Start from clipped parameters, ``w = C(w)`` (``clip_params`` once
at initialization; WAGE's 2-bit initializer draws beyond ``b``). Then the reference's ``C(w) - q`` is
``w + (-q)`` (IEEE subtraction is addition of the negation), which is what ``apply_updates`` computes
wherever nothing is clipped; where ``s = w - q`` leaves the range, the update is ``b - w`` (or ``-b - w``)
and ``w + fl(b - w) == b`` exactly whenever ``w`` lies on the same side of zero as the bound (Sterbenz's
lemma for ``w >= b/2``; below that the rounding error of ``b - w`` is at most half an ulp of ``b``, and
``b``'s significand is even, so ties go to ``b``). ``w`` on the other side needs an update larger than
``b`` in magnitude; WAGE's updates are at most ``ceil(lr) / 2^(bits_G-1)`` (the paper: ``8 / 128``), so this
holds whenever ``ceil(lr) <= b * 2^(bits_G-1)``. The stored accumulators are therefore always
``C(reference accumulators)``; the forward weights ``QW(w)`` are identical, because ``QW`` clamps to the
same range after rounding, and so are the next steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wage_jax._src.arrays import check_key
from wage_jax._src.functional import QG, C
from wage_spec import check_bits, check_learning_rate, check_mode, clip_delta

__all__ = ["ScaleByQGState", "clip_params", "keep_params_clipped", "scale_by_qg", "wage_sgd"]

Schedule = Callable[[jax.Array], jax.Array]


class ScaleByQGState(NamedTuple):
    """The state of ``scale_by_qg``.

    Attributes:
        count: steps taken, an int32 scalar (drives a learning-rate schedule).
        key: the PRNG key of stochastic rounding (split every step), or None for ``"nearest"``.
    """

    count: jax.Array
    key: jax.Array | None


def scale_by_qg(
    bits_G: int,
    learning_rate: float | Schedule,
    mode: str = "nearest",
    *,
    key: jax.Array | None = None,
) -> optax.GradientTransformation:
    """Map every gradient leaf ``g`` to ``-QG(g, bits_G, lr)``: WAGE's quantized update.

    ``QG(g) = FP((lr / 2^(bits_G-1)) * shift(g); bits_G, bits_G-1, no clamp, symmetric, mode)``. An
    all-zero gradient leaf gives a zero update. Composable with ``optax.chain``.

    Args:
        bits_G: gradient bits, an int in [2, 24].
        learning_rate: a number in ``(0, 2^24]``, or an optax schedule ``count -> lr``.
        mode: ``"nearest"`` or ``"stochastic"`` rounding of the update.
        key: a JAX PRNG key for ``"stochastic"``; each step splits it and draws one key per leaf. Ignored
            for ``"nearest"``.

    Returns:
        an ``optax.GradientTransformation`` whose state is ``ScaleByQGState``.

    Raises:
        TypeError: a bad ``bits_G``, ``mode``, ``learning_rate`` or ``key`` type.
        ValueError: ``bits_G``, ``mode`` or ``learning_rate`` out of range; ``"stochastic"`` without key.

    References:
        Wu et al., "Training and Inference with Integers in Deep Neural Networks", ICLR 2018, Eq. 11-12.

    Examples:
        >>> import jax.numpy as jnp
        >>> tx = scale_by_qg(4, 1.0, mode="nearest")
        >>> updates, state = tx.update({"w": jnp.array([0.5, -0.25])}, tx.init(None))
        >>> updates["w"]
        Array([-0.125,  0.   ], dtype=float32)
    """
    bits_G = check_bits(bits_G, "bits_G")
    mode = check_mode(mode, "mode")
    if not callable(learning_rate):
        learning_rate = check_learning_rate(learning_rate, "learning_rate")
    stochastic = mode == "stochastic"
    if stochastic and key is None:
        raise ValueError("scale_by_qg(mode='stochastic') needs key (a jax.random key)")
    if stochastic:
        key = check_key(key)

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


def _clipped_update(w: jax.Array, u: jax.Array, bound: np.float32) -> jax.Array:
    """The update that takes ``w`` to ``C(w + u)``: ``u`` inside the range, ``±bound - w`` beyond it."""
    s = w + u  # the same float32 addition as optax.apply_updates
    above, below = s > bound, s < -bound  # False for NaN: it passes through, as C lets it
    return jnp.where(above, bound - w, jnp.where(below, -bound - w, u))


def _warn_if_unclipped(params: Any, bound: np.float32) -> None:
    """Warn, at ``init`` on concrete parameters, when some lie outside ``[-bound, bound]``: ``clip_params`` was
    forgotten, and the first updates would not be the reference's (under ``jit`` nothing can be checked)."""
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves or any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return
    outside = sum(int(np.count_nonzero(np.abs(np.asarray(leaf, np.float32)) > bound)) for leaf in leaves
                  if jnp.issubdtype(jnp.result_type(leaf), jnp.floating))
    if outside:
        warnings.warn(f"wage_sgd/keep_params_clipped: {outside} parameter element(s) lie outside C's range "
                      f"[-{bound}, {bound}]: call clip_params(params, bits_W) before tx.init and training",
                      UserWarning, stacklevel=3)


def keep_params_clipped(bits_W: int) -> optax.GradientTransformation:
    """Modify updates so that ``optax.apply_updates`` keeps every parameter in ``C``'s range.

    WAGE's clip ``C(w, bits_W)`` after the step, as an update: where ``w + u`` would leave
    ``[-b, b]``, ``b = 1 - 2^-(bits_W-1)`` (``1`` for ``bits_W > 15``), the update becomes ``±b - w`` and
    ``apply_updates`` lands on ``±b`` exactly (see the module docstring for when this is bit for bit);
    elsewhere ``u`` is unchanged. Parameters must start inside the range (``clip_params``). The
    transformation needs ``params`` in ``update`` and keeps no state.

    Args:
        bits_W: weight bits, an int in [2, 24].

    Returns:
        an ``optax.GradientTransformation`` (state ``optax.EmptyState``).

    Raises:
        TypeError, ValueError: a bad ``bits_W``; ``update`` called without ``params``.

    References:
        Wu et al., ICLR 2018, Eq. 4 (``Clip``) and Sec. 3.3.4; optax's ``keep_params_nonnegative``.

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> tx = keep_params_clipped(2)
        >>> w = jnp.array([0.25, 0.25, -0.5])
        >>> u, _ = tx.update(jnp.array([0.125, 0.5, 0.25]), tx.init(w), w)
        >>> optax.apply_updates(w, u)
        Array([ 0.375,  0.5  , -0.25 ], dtype=float32)
    """
    bits_W = check_bits(bits_W, "bits_W")
    bound = np.float32(1.0 - clip_delta(bits_W))

    def init_fn(params: Any) -> optax.EmptyState:
        _warn_if_unclipped(params, bound)
        return optax.EmptyState()

    def update_fn(updates: Any, state: optax.EmptyState, params: Any = None) -> tuple[Any, optax.EmptyState]:
        if params is None:
            raise ValueError("keep_params_clipped needs params: call tx.update(updates, state, params)")
        return jax.tree_util.tree_map(lambda u, w: _clipped_update(w, u, bound), updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)


def clip_params(params: Any, bits_W: int) -> Any:
    """``C(w, bits_W)`` on every leaf: the projection onto WAGE's weight range.

    Apply it once to the initial parameters before training with ``wage_sgd`` (WAGE's 2-bit initializer
    draws beyond the range), or after ``optax.apply_updates`` as a projection (as
    ``optax.projections.projection_box``, but exact for subnormals on XLA's CPU backend).

    Args:
        params: a pytree of floating-point arrays.
        bits_W: weight bits, an int in [2, 24].

    Returns:
        the pytree with every leaf clipped to ``[-1 + d, 1 - d]``, ``d = 2^-(bits_W-1)``.

    Raises:
        TypeError, ValueError: a bad ``bits_W`` or a non-floating leaf.

    References:
        Wu et al., ICLR 2018, Eq. 4.

    Examples:
        >>> import jax.numpy as jnp
        >>> clip_params({"w": jnp.array([0.7, -0.1])}, 2)["w"]
        Array([ 0.5, -0.1], dtype=float32)
    """
    bits_W = check_bits(bits_W, "bits_W")
    return jax.tree_util.tree_map(lambda w: C(w, bits_W), params)


def wage_sgd(
    bits_W: int,
    bits_G: int,
    learning_rate: float | Schedule,
    mode: str = "nearest",
    *,
    key: jax.Array | None = None,
) -> optax.GradientTransformation:
    """WAGE's optimizer: ``optax.chain(scale_by_qg(bits_G, lr, mode, key=key), keep_params_clipped(bits_W))``.

    ``w <- C(C(w) - QG(grad))``, i.e. the reference's ``C(w) - QG(grad)`` kept clipped. Start from
    ``clip_params(params, bits_W)``; then every step is the reference's, bit for bit, whenever
    ``ceil(lr) <= (1 - 2^-(bits_W-1)) * 2^(bits_G-1)`` (the paper's 2-8-8-8 at lr 8 by a factor 8; see the
    module docstring). Works with ``optax.apply_updates``, ``flax.training.train_state.TrainState``,
    ``flax.nnx.Optimizer`` and ``wage_jax.make_train_step``.

    Args:
        bits_W: weight bits, an int in [2, 24].
        bits_G: gradient bits, an int in [2, 24].
        learning_rate: a number in ``(0, 2^24]``, or an optax schedule ``count -> lr``.
        mode: ``"nearest"`` or ``"stochastic"`` rounding of ``QG``.
        key: a JAX PRNG key for ``"stochastic"`` (ignored for ``"nearest"``).
    Returns:
        an ``optax.GradientTransformation``; its state is ``(ScaleByQGState, optax.EmptyState)``.

    Raises:
        TypeError, ValueError: as ``scale_by_qg`` and ``keep_params_clipped``.

    References:
        Wu et al., ICLR 2018, Eq. 11-12 and Sec. 3.3.4; QPyTorch's WAGE example.

    Examples:
        >>> import jax.numpy as jnp, optax
        >>> tx = wage_sgd(2, 8, 8.0, mode="nearest")
        >>> params = clip_params({"w": jnp.array([0.7, 0.1])}, 2)
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.array([-1.0, 0.5])}, state, params)
        >>> optax.apply_updates(params, updates)["w"]
        Array([0.5    , 0.06875], dtype=float32)
    """
    return optax.chain(scale_by_qg(bits_G, learning_rate, mode, key=key), keep_params_clipped(bits_W))
