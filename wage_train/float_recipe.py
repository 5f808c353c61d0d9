"""How ``wage-train --float`` trains the float baseline: loss, optimizer, initializer, lr and its schedule.

``standard`` (the default; docs/training.md gives the references and the lr sweep): batch-mean softmax
cross-entropy; SGD with momentum 0.9 (``v <- 0.9 v + g``, ``w <- w - lr v``), no weight decay, on the gradient
clipped to a global l2 norm of :data:`CLIP_NORM`; He uniform init (factor 2); lr per model family
(:data:`STANDARD_LR`) cosine-annealed to 0 over the run (:func:`annealed_lr`).

``wage-sse`` (like for like): WAGE's loss (``0.5 * sum ||z - onehot(y)||^2`` over the batch), plain SGD, WAGE's
init factor (1.0) and ``--schedule``, lr :func:`float_lr`: it differs from WAGE only by the quantizers.

JAX and torch take the same step: optax in JAX, its twin (:func:`torch_optimizer`) in torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "CLIP_NORM",
    "HE_FACTOR",
    "MOMENTUM",
    "annealed_lr",
    "RECIPES",
    "STANDARD_LR",
    "STANDARD_LR_DECAY",
    "default_factor",
    "default_lr",
    "describe",
    "float_lr",
    "jax_loss",
    "loss_is_batch_mean",
    "jax_optimizer",
    "torch_clip_gradients",
    "torch_loss",
    "torch_optimizer",
]

RECIPES = ("standard", "wage-sse")
# How the standard recipe's lr decays within a run (:func:`annealed_lr`); config.json records it, so that a run
# saved by a version with another decay is refused by --resume instead of changing its schedule mid-run.
STANDARD_LR_DECAY = "cosine"
MOMENTUM = 0.9
# The largest global l2 norm of a gradient the standard recipe applies (Pascanu et al. 2013).
CLIP_NORM = 1.0
# He/Kaiming uniform: variance 2 / fan_in (the float layers draw U(-L, L), L = sqrt(3 * factor / fan_in)).
HE_FACTOR = 2.0
# The standard recipe's default lr per model family, from scripts/float_lr_sweep.py on validation splits
# (docs/training.md: every default is within noise of its sweep's best, and every setting trains at 2x and 4x
# it; training breaks down at 8x (VGG7, LeNet-5) or 16x (MLP)).
STANDARD_LR: dict[str, float] = {"mlp": 0.16, "lenet5": 0.16, "vgg7": 0.16}
FLOAT_LR = 0.001  # wage-sse's lr x 64 / fan-in (docs/training.md)


def _check(recipe: str) -> str:
    if recipe not in RECIPES:
        raise ValueError(f"float recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    return recipe


def default_factor(recipe: str, wage_factor: float) -> float:
    """The float layers' initializer variance factor when ``--factor`` is not given: He's 2.0 for ``standard``,
    WAGE's (``wage_factor``, the paper's 1.0) for ``wage-sse``."""
    return HE_FACTOR if _check(recipe) == "standard" else wage_factor


def default_lr(recipe: str, model: str, image_shape: Iterable[int]) -> float:
    """The float baseline's base lr when ``--lr`` is not given.

    Args:
        recipe: one of :data:`RECIPES`.
        model: ``"mlp"``, ``"lenet5"`` or ``"vgg7"`` (the model family: :data:`STANDARD_LR`).
        image_shape: ``(H, W, C)`` of one image (``wage-sse``'s rule scales with the fan-in ``H*W*C``).
    """
    if _check(recipe) == "wage-sse":
        return float_lr(tuple(image_shape))
    if model not in STANDARD_LR:
        raise ValueError(f"no standard float lr for model {model!r} (known: {', '.join(STANDARD_LR)})")
    return STANDARD_LR[model]


def float_lr(image_shape: tuple[int, ...]) -> float:
    """The ``wage-sse`` recipe's default lr: ``FLOAT_LR * 64 / (H*W*C)``, the first layer's fan-in (its gradient
    grows with it: 8.16e-5 for 28x28 MNIST; docs/training.md)."""
    fan_in = 1
    for n in image_shape:
        fan_in *= int(n)
    return FLOAT_LR * 64.0 / fan_in


def annealed_lr(recipe: str, base_lr: float, total_steps: int) -> Callable[[Any], Any] | None:
    """The lr of each step, ``count -> float32 scalar``, of a recipe that anneals (``standard``), else None.

    ``base_lr * (1 + cos(pi * min(t, T) / T)) / 2`` at step ``t`` of ``T = total_steps``
    (``optax.cosine_decay_schedule``), jitted: the JAX step evaluates it inside its own jit and the torch runner
    calls it with its step count, so both frameworks take the same float32 lr. ``T`` is capped at optax's int32
    step count (as a Python ``count`` is: later steps take the last lr).
    """
    if _check(recipe) != "standard":
        return None
    import jax
    import optax

    int32_max = 2**31 - 1
    cosine = jax.jit(optax.cosine_decay_schedule(float(base_lr), max(1, min(int(total_steps), int32_max))))

    def lr(count: Any) -> Any:
        return cosine(min(count, int32_max) if isinstance(count, int) else count)

    return lr


def describe(recipe: str) -> str:
    """A short label for the run's banner, e.g. ``softmax cross-entropy, SGD momentum 0.9, gradient norm clipped
    at 1, He init``."""
    if _check(recipe) == "standard":
        return f"softmax cross-entropy, SGD momentum {MOMENTUM:g}, gradient norm clipped at {CLIP_NORM:g}, He init"
    return "WAGE's SSE loss, plain SGD"


def loss_is_batch_mean(recipe: str) -> bool:
    """Whether the recipe's loss is a mean over the batch (``standard``) rather than a sum (``wage-sse``, WAGE).

    The runners report every loss summed over the batch (the training loop divides by the examples seen), so a
    mean is multiplied back by the batch size.
    """
    return _check(recipe) == "standard"


# ------------------------------------------------------------------------------------------------ JAX


def jax_loss(recipe: str) -> Callable[[Any, Any], Any]:
    """``loss(logits (B, K) float32, labels (B,) int) -> scalar``: batch-mean softmax cross-entropy (``standard``)
    or ``wage_jax.sse_loss`` (``wage-sse``)."""
    if _check(recipe) == "wage-sse":
        from wage_jax import sse_loss

        return sse_loss
    import optax

    def cross_entropy(logits: Any, labels: Any) -> Any:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return cross_entropy


def jax_optimizer(recipe: str, learning_rate: Any) -> Any:
    """The optax optimizer: ``optax.clip_by_global_norm(1.0)`` then ``optax.sgd(learning_rate, momentum=0.9)``
    (``standard``), or plain ``optax.sgd(learning_rate)`` (``wage-sse``); ``learning_rate`` a float or a schedule
    of the step count."""
    import optax

    if _check(recipe) == "standard":
        return optax.chain(optax.clip_by_global_norm(CLIP_NORM), optax.sgd(learning_rate, momentum=MOMENTUM))
    return optax.sgd(learning_rate)


# ---------------------------------------------------------------------------------------------- torch


def torch_loss(recipe: str) -> Callable[[Any, Any], Any]:
    """``loss(logits (B, K), labels (B,) int64) -> scalar tensor``, the torch twin of :func:`jax_loss`."""
    if _check(recipe) == "wage-sse":
        from wage_torch.training import sse_loss

        return sse_loss
    import torch

    return torch.nn.functional.cross_entropy  # reduction="mean"


def torch_optimizer(recipe: str, params: Iterable[Any], lr: float) -> Any:
    """The torch twin of :func:`jax_optimizer`: ``torch.optim.SGD`` with ``momentum=0.9`` whose ``step()`` first
    clips the gradients (:func:`torch_clip_gradients`, a step pre-hook) (``standard``), or plain
    ``torch.optim.SGD`` (``wage-sse``)."""
    import torch

    if _check(recipe) != "standard":
        return torch.optim.SGD(params, lr=lr, momentum=0.0)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=MOMENTUM)

    def clip_before_step(opt: Any, args: Any, kwargs: Any) -> None:
        torch_clip_gradients(recipe, [p for group in opt.param_groups for p in group["params"]])

    optimizer.register_step_pre_hook(clip_before_step)
    return optimizer


def torch_clip_gradients(recipe: str, params: Iterable[Any]) -> None:
    """Rescale the ``.grad`` of ``params`` in place to a global l2 norm of at most :data:`CLIP_NORM` (``standard``;
    ``wage-sse`` leaves them alone).

    ``optax.clip_by_global_norm``'s rule, ``g`` if ``||g|| < CLIP_NORM`` else ``g / ||g|| * CLIP_NORM``, so that
    the two frameworks take the same step (``torch.nn.utils.clip_grad_norm_`` multiplies by
    ``CLIP_NORM / (||g|| + 1e-6)`` instead). A NaN gradient stays NaN: the loop reports the divergence.
    """
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
