"""How ``wage-train --float`` trains the float baseline (docs/training.md gives the references and the lr sweep).

``standard`` (the default): batch-mean softmax cross-entropy, SGD momentum 0.9 on the gradient clipped to a global
norm of :data:`CLIP_NORM`, He init, lr :data:`STANDARD_LR` cosine-annealed to 0 (:func:`annealed_lr`).
``wage-sse``: WAGE's loss, plain SGD, init and ``--schedule``, lr :func:`float_lr`: WAGE without the quantizers.
JAX (optax) and torch (:func:`torch_optimizer`) take the same step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["CLIP_NORM", "HE_FACTOR", "RECIPES", "STANDARD_LR", "STANDARD_LR_DECAY", "annealed_lr", "default_lr",
           "describe", "float_lr", "jax_loss", "jax_optimizer", "loss_is_batch_mean", "torch_clip_gradients",
           "torch_loss", "torch_optimizer"]

RECIPES = ("standard", "wage-sse")
# config.json records it: --resume refuses a run saved by a version whose standard recipe decayed otherwise.
STANDARD_LR_DECAY = "cosine"
MOMENTUM = 0.9
CLIP_NORM = 1.0  # the largest global l2 norm of a gradient the standard recipe applies (Pascanu et al. 2013)
HE_FACTOR = 2.0  # He uniform: U(-L, L), L = sqrt(3 * factor / fan_in)
# From scripts/float_lr_sweep.py on validation splits (docs/training.md): within noise of each sweep's best.
STANDARD_LR: dict[str, float] = {"mlp": 0.16, "lenet5": 0.16, "vgg7": 0.16}
FLOAT_LR = 0.001  # wage-sse's lr x 64 / fan-in (docs/training.md)


def _check(recipe: str) -> str:
    if recipe not in RECIPES:
        raise ValueError(f"float recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    return recipe


def default_lr(recipe: str, model: str, image_shape: Iterable[int]) -> float:
    """The float baseline's base lr when ``--lr`` is not given: :data:`STANDARD_LR` of ``model``, or
    :func:`float_lr` of ``image_shape`` ``(H, W, C)`` for ``wage-sse``."""
    if _check(recipe) == "wage-sse":
        return float_lr(tuple(image_shape))
    if model not in STANDARD_LR:
        raise ValueError(f"no standard float lr for model {model!r} (known: {', '.join(STANDARD_LR)})")
    return STANDARD_LR[model]


def float_lr(image_shape: tuple[int, ...]) -> float:
    """``wage-sse``'s default lr, ``FLOAT_LR * 64 / (H*W*C)``: the first layer's gradient grows with its fan-in."""
    return FLOAT_LR * 64.0 / math.prod(int(n) for n in image_shape)


def annealed_lr(recipe: str, base_lr: float, total_steps: int) -> Callable[[Any], Any] | None:
    """``count -> float32 lr`` of the standard recipe, ``base_lr * (1 + cos(pi * min(t, T) / T)) / 2``
    (``optax.cosine_decay_schedule``), else None.

    Jitted, so that the JAX step (inside its jit) and the torch runner (with its step count) take the same float32
    lr; ``T`` and a Python ``count`` are capped at optax's int32 step count.
    """
    if _check(recipe) != "standard":
        return None
    import jax
    import optax

    int32_max = 2**31 - 1
    cosine = jax.jit(optax.cosine_decay_schedule(float(base_lr), max(1, min(int(total_steps), int32_max))))
    return lambda count: cosine(min(count, int32_max) if isinstance(count, int) else count)


def describe(recipe: str) -> str:
    """A short label of the recipe for the run's banner."""
    if _check(recipe) == "standard":
        return f"softmax cross-entropy, SGD momentum {MOMENTUM:g}, gradient norm clipped at {CLIP_NORM:g}, He init"
    return "WAGE's SSE loss, plain SGD"


def loss_is_batch_mean(recipe: str) -> bool:
    """Whether the loss is a batch mean (``standard``), which the runners multiply back to WAGE's batch sum."""
    return _check(recipe) == "standard"


def jax_loss(recipe: str) -> Callable[[Any, Any], Any]:
    """``loss(logits (B, K) float32, labels (B,) int) -> scalar``: batch-mean softmax cross-entropy or WAGE's SSE."""
    if _check(recipe) == "wage-sse":
        from wage_jax import sse_loss

        return sse_loss
    import optax

    return lambda logits, labels: optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def jax_optimizer(recipe: str, learning_rate: Any) -> Any:
    """The optax optimizer; ``learning_rate`` a float or a schedule of the step count."""
    import optax

    if _check(recipe) == "standard":
        return optax.chain(optax.clip_by_global_norm(CLIP_NORM), optax.sgd(learning_rate, momentum=MOMENTUM))
    return optax.sgd(learning_rate)


def torch_loss(recipe: str) -> Callable[[Any, Any], Any]:
    """The torch twin of :func:`jax_loss` (labels int64)."""
    if _check(recipe) == "wage-sse":
        from wage_torch.training import sse_loss

        return sse_loss
    import torch

    return torch.nn.functional.cross_entropy  # reduction="mean"


def torch_optimizer(recipe: str, params: Iterable[Any], lr: float) -> Any:
    """The torch twin of :func:`jax_optimizer`: ``torch.optim.SGD``, whose ``step()`` first clips the gradients
    (:func:`torch_clip_gradients`) in the standard recipe."""
    import torch

    if _check(recipe) != "standard":
        return torch.optim.SGD(params, lr=lr, momentum=0.0)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=MOMENTUM)
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: torch_clip_gradients(recipe, [p for g in opt.param_groups for p in g["params"]]))
    return optimizer


def torch_clip_gradients(recipe: str, params: Iterable[Any]) -> None:
    """Standard recipe: rescale the ``.grad`` of ``params`` in place to a global l2 norm of at most
    :data:`CLIP_NORM`, optax's rule (``g / ||g|| * CLIP_NORM``; torch's ``clip_grad_norm_`` adds 1e-6 to the norm,
    a different step). A NaN gradient stays NaN: the loop reports the divergence."""
    if _check(recipe) != "standard":
        return
    import torch

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    if norm >= CLIP_NORM:
        for g in grads:
            g.div_(norm).mul_(CLIP_NORM)
