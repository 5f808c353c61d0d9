"""Checked mode: NaN and Inf reported from inside ``jax.jit`` with ``jax.experimental.checkify``.

WAGE's ``shift`` (in ``QG`` and in the error quantizer's backward) divides by ``2^ceil(log2 max|x|)``:
a NaN or Inf anywhere in its input poisons every element. Eagerly, ``wage_jax.shift`` and
``wage_jax.QG`` raise ``ValueError``; under ``jit`` nothing can raise and the result is all-NaN
(see ``wage_jax``). The functions here are the same quantizers with a
``checkify.check`` on their input, and for ``wage_quantize`` also on the incoming gradient in the
backward pass, so that a jitted program reports where the first non-finite value arrived::

    from wage_jax import checked

    def step(w, g):
        return w - checked.QG(g, 8, 1.0)

    err, w = jax.jit(checked.checkify(step))(w, g)
    err.throw()  # or: message = err.get()  ->  None when every check passed

Exactness by magnitude: every WAGE product is exact, and its float32 sums are exact in any order (the same
bits on any backend) while each partial sum stays within 2^24 units of its grids (``sum_bounds``). ``layer_sum_bounds``
measures that for every layer of a model on one batch, ``check_exact_sums`` checks it::

    def probe(params, x, y, key):
        bounds = checked.layer_sum_bounds(model, params, x, y, rngs={"wage": key})
        checked.check_exact_sums(bounds)
        return bounds

    err, bounds = jax.jit(checked.checkify(probe))(params, x, y, key)
    err.get()  # None, or 'conv0 kernel_grad: a partial sum reaches 2.1 x 2^24 units ...'

The quantizer arithmetic is ``wage_jax``'s own, called
unchanged; every function takes the same arguments and returns the same result as its unchecked
counterpart when its input is finite, and validates its arguments first, as that counterpart does.
Under ``jit`` a checked function must run inside ``checked.checkify`` (or
``jax.experimental.checkify.checkify`` with ``user_checks``); called eagerly outside checkify, it
raises at once: ``ValueError`` where the unchecked function does (``shift``, ``QG``), else the failed
check's ``jax.experimental.checkify.JaxRuntimeError`` (a ``ValueError`` too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify as _checkify

from wage_jax._src import functional as _functional
from wage_jax._src import wage_quantizer as _wage_quantizer
from wage_jax._src.headroom import EXACT_SUM_LIMIT, layer_sum_bounds, sum_bounds

__all__ = ["EXACT_SUM_LIMIT", "QG", "QW", "check_exact_sums", "check_finite", "checkify", "layer_sum_bounds",
           "shift", "sum_bounds", "wage_quantize"]


def checkify(fn: Callable[..., Any]) -> Callable[..., tuple[_checkify.Error, Any]]:
    """``fn`` functionalized for the checks of this module: ``checkify.checkify(fn, errors=user_checks)``.

    Args:
        fn: a function calling the checked quantizers.

    Returns:
        a function returning ``(err, out)``: ``err.get()`` is ``None`` when every check passed, else the
        message of the first that failed (``err.throw()`` raises it as ``checkify.JaxRuntimeError``, a
        ``ValueError``). Jit the result, not ``fn``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> err, out = jax.jit(checkify(lambda g: QG(g, 8, 1.0)))(jnp.array([1.0, jnp.nan]))
        >>> err.get().splitlines()[0]
        'wage_jax.checked.QG: x contains NaN or Inf (`check` failed)'
    """
    return _checkify.checkify(fn, errors=_checkify.user_checks)


def check_finite(x: jax.typing.ArrayLike, what: str) -> None:
    """A ``checkify.check`` that every element of ``x`` (any shape, float dtype) is finite.

    Args:
        x: the array to check.
        what: the start of the message, ``"{what} contains NaN or Inf"``.

    Raises:
        jax.experimental.checkify.JaxRuntimeError: eagerly, outside ``checkify``, when the check fails.

    Examples:
        >>> import jax.numpy as jnp
        >>> check_finite(jnp.ones(3), "x")
    """
    _checkify.check(jnp.all(jnp.isfinite(x)), f"{what} contains NaN or Inf")


def check_exact_sums(bounds: Mapping[str, Any], what: str = "") -> None:
    """A ``checkify.check`` per bound that it is at most ``EXACT_SUM_LIMIT`` (2^24 units of its grids).

    Args:
        bounds: ``sum_bounds``'s ``{product: bound}`` or ``layer_sum_bounds``'s ``{layer: {product: bound}}``
            (float32 scalars).
        what: the start of each message (a layer's bounds get their path and product name after it).

    Raises:
        jax.experimental.checkify.JaxRuntimeError: eagerly, outside ``checkify``, when a bound exceeds 2^24.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> f = checkify(lambda b: check_exact_sums({"dense0": {"kernel_grad": b, "forward": b / 4}}))
        >>> err, _ = jax.jit(f)(jnp.float32(2.0**25))
        >>> err.get().split(":")[:2]
        ['dense0 kernel_grad', ' a partial sum reaches 2.0 x 2^24 units of its grids']
    """
    for name, bound in bounds.items():
        label = f"{what} {name}".strip()
        if isinstance(bound, Mapping):
            check_exact_sums(bound, label)
            continue
        _checkify.check(bound <= EXACT_SUM_LIMIT, f"{label}: a partial sum reaches {{ratio}} x 2^24 units of "
                        "its grids: past 2^24 its float32 sums may round, differently on two backends (the "
                        "integer mode's int32 sums do not)", ratio=jnp.asarray(bound, jnp.float32) / EXACT_SUM_LIMIT)


def shift(x: jax.typing.ArrayLike) -> jax.Array:
    """``wage_jax.shift`` (``x / 2^ceil(log2 max|x|)``) with a check that ``x`` is finite.

    Args:
        x: a floating-point array of any shape.

    Returns:
        ``wage_jax.shift(x)``: ``x``'s shape and dtype.

    Raises:
        TypeError, ValueError: as ``wage_jax.shift``.

    References:
        Wu et al., ICLR 2018, Eq. 9.

    Examples:
        >>> import jax.numpy as jnp
        >>> shift(jnp.array([3.0, -1.0]))
        Array([ 0.75, -0.25], dtype=float32)
    """
    y = _functional.shift(x)  # validates x first
    check_finite(x, "wage_jax.checked.shift: x")
    return y


def QW(
    x: jax.typing.ArrayLike,
    bits: int,
    scale: float = 1.0,
    mode: str = "nearest",
    *,
    key: jax.Array | None = None,
    noise: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """``wage_jax.QW`` (weights to ``bits``-bit fixed point) with a check that ``x`` is finite.

    NaN passes through ``QW`` unreported; here it is reported.

    Args:
        x, bits, scale, mode, key, noise: as ``wage_jax.QW``.

    Returns:
        ``wage_jax.QW(...)``.

    Raises:
        TypeError, ValueError: as ``wage_jax.QW``.

    References:
        Wu et al., ICLR 2018, Eq. 5-7.

    Examples:
        >>> import jax.numpy as jnp
        >>> QW(jnp.array([0.3, -0.9]), 3)
        Array([ 0.25, -0.75], dtype=float32)
    """
    y = _functional.QW(x, bits, scale, mode, key=key, noise=noise)
    check_finite(x, "wage_jax.checked.QW: x")
    return y


def QG(
    x: jax.typing.ArrayLike,
    bits_G: int,
    lr: float | jax.typing.ArrayLike,
    mode: str = "nearest",
    *,
    key: jax.Array | None = None,
    noise: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """``wage_jax.QG`` (the ``bits_G``-bit weight update) with a check that the gradient ``x`` is finite.

    Args:
        x, bits_G, lr, mode, key, noise: as ``wage_jax.QG``.

    Returns:
        ``wage_jax.QG(...)``.

    Raises:
        TypeError, ValueError: as ``wage_jax.QG``.

    References:
        Wu et al., ICLR 2018, Eq. 11-12.

    Examples:
        >>> import jax.numpy as jnp
        >>> QG(jnp.array([0.5, -0.25]), 4, 1.0)
        Array([ 0.125, -0.   ], dtype=float32)
    """
    y = _functional.QG(x, bits_G, lr, mode, key=key, noise=noise)
    check_finite(x, "wage_jax.checked.QG: x")
    return y


@jax.custom_vjp
def _check_incoming_gradient(y: jax.Array) -> jax.Array:
    """The identity, whose backward checks the cotangent it passes on."""
    return y


def _check_fwd(y: jax.Array) -> tuple[jax.Array, None]:
    return y, None


def _check_bwd(_: None, g: jax.Array) -> tuple[jax.Array]:
    check_finite(g, "wage_jax.checked.wage_quantize: the incoming gradient")
    return (g,)


_check_incoming_gradient.defvjp(_check_fwd, _check_bwd)


def wage_quantize(
    x: jax.typing.ArrayLike,
    bits_A: int,
    bits_E: int,
    A_mode: str = "nearest",
    E_mode: str = "nearest",
    *,
    key: jax.Array | None = None,
    noise_A: jax.typing.ArrayLike | None = None,
    noise_E: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """``wage_jax.wage_quantize`` (activations forward, errors backward), checked twice: the activations
    ``x`` in the forward pass, and the incoming gradient in the backward pass (before the error
    quantizer's ``shift`` would turn a single NaN or Inf into an all-NaN error).

    Args:
        x, bits_A, bits_E, A_mode, E_mode, key, noise_A, noise_E: as ``wage_jax.wage_quantize``.

    Returns:
        ``wage_jax.wage_quantize(...)``; the gradient is unchanged.

    Raises:
        TypeError, ValueError: as ``wage_jax.wage_quantize``.

    References:
        Wu et al., ICLR 2018, Eq. 8-10.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> f = checkify(jax.grad(lambda x: (wage_quantize(x, 4, 4) * jnp.nan).sum()))
        >>> err, _ = jax.jit(f)(jnp.ones(2))
        >>> "incoming gradient" in err.get()
        True
    """
    y = _wage_quantizer.wage_quantize(x, bits_A, bits_E, A_mode, E_mode, key=key, noise_A=noise_A, noise_E=noise_E)
    check_finite(x, "wage_jax.checked.wage_quantize: x")
    return _check_incoming_gradient(y)
