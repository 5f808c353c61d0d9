"""The :class:`Runner` protocol that the JAX and torch runners implement (the loop, the checkpoints,
``--compare`` and a saved run use a runner only through it), and how a run builds them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from wage_data import Dataset, pad_images
from wage_train.config import RunConfig
from wage_train.float_recipe import annealed_lr
from wage_train.runspec import ModelSpec

__all__ = ["Runner", "make_runners", "model_inputs", "model_spec"]


@runtime_checkable
class Runner(Protocol):
    """One framework's model, optimizer state and step. Inputs are NHWC float32 ``(B, H, W, C)`` in ``[-1, 1]``
    (``wage_data.to_inputs``), labels ``(B,)`` integers; losses are summed over the batch."""

    framework: str  # "jax" or "torch"
    model: Any  # the Flax linen module or the torch nn.Module
    eval_batch_size: int

    def place(self, x: np.ndarray, y: np.ndarray) -> Any: ...  # the batch as step takes it; thread-safe
    def begin_epoch(self, steps: int) -> None: ...
    def step(self, batch: Any) -> Any: ...  # one update on a placed batch; its logits (B, K), maybe on the device
    def latest_loss(self) -> float | None: ...  # the latest finished step's loss; never waits for the device
    def end_epoch(self) -> tuple[np.ndarray, int]: ...  # each step's loss (steps,) and the correct count
    def predict(self, x: np.ndarray) -> np.ndarray: ...  # float32 logits (N, K) of inputs (N, H, W, C)
    def accumulators(self) -> list[np.ndarray]: ...  # WAGE accumulators or float weights, torch order and layout
    def raw_weights(self) -> dict[str, np.ndarray]: ...  # by layer name: what weights.npz holds
    def forward_weights(self) -> list[tuple[str, np.ndarray]]: ...  # as the forward pass uses them (QW for WAGE)
    def checkpoint_state(self) -> dict[str, np.ndarray]: ...  # weights, optimizer and random state
    def load_checkpoint_state(self, tree: dict[str, np.ndarray]) -> None: ...  # checkpoint_state's, same arguments


def model_inputs(cfg: RunConfig, x: np.ndarray) -> np.ndarray:
    """The images ``x`` ``(N, H, W, C)`` as the run's model takes them: VGG7 pads them to a square side that is a
    multiple of 8 (its three 2x2 poolings: MNIST's 28 -> 32); the other models take them as they are."""
    if cfg.model != "vgg7":
        return x
    h, w = x.shape[1:3]
    size = -(-max(h, w) // 8) * 8
    return x if (h, w) == (size, size) else pad_images(x, size)


def model_spec(cfg: RunConfig, data: Dataset) -> ModelSpec:
    """The architecture ``cfg`` trains on ``data`` (its image shape after :func:`model_inputs`)."""
    return ModelSpec(kind=cfg.model, image_shape=tuple(model_inputs(cfg, data.x_train[:1]).shape[1:]),
                     num_classes=data.num_classes, hidden=cfg.hidden, widths=cfg.widths, vgg_hidden=cfg.vgg_hidden)


def training_lrs(cfg: RunConfig, lrs: Sequence[float], steps_per_epoch: int) -> Sequence[float] | Callable[[Any], Any]:
    """What the runners of ``cfg`` train with: the per-epoch ``lrs`` (``runspec.LrSchedule``), or the lr of each
    step, ``count -> lr``, of a float recipe that anneals over the run (``float_recipe.annealed_lr``)."""
    if not cfg.float:
        return lrs
    return annealed_lr(cfg.float_recipe or "wage-sse", cfg.lr, cfg.epochs * steps_per_epoch) or lrs


def make_runners(cfg: RunConfig, spec: ModelSpec, lrs: Sequence[float] | Callable[[Any], Any], steps_per_epoch: int,
                 devices: int | None = None, eval_batch_size: int | None = None) -> list[Runner]:
    """``[JaxRunner]``, ``[TorchRunner]``, or both for ``--compare`` (torch first: JAX starts from torch's initial
    weights). ``lrs``: per-epoch rates (a sequence, passed through :func:`training_lrs`) or ``count -> lr``;
    ``devices``: JAX's data-parallel device count (default all local ones)."""
    lrs = training_lrs(cfg, lrs, steps_per_epoch) if isinstance(lrs, Sequence) else lrs
    common = dict(quantized=not cfg.float, lrs=lrs, steps_per_epoch=steps_per_epoch, seed=cfg.seed,
                  eval_batch_size=eval_batch_size or cfg.eval_batch_size, float_recipe=cfg.float_recipe or "wage-sse")
    runners: list[Runner] = []
    if cfg.framework in ("torch", "compare"):
        from wage_train.torch_runner import TorchRunner

        runners.append(TorchRunner(spec, cfg.wage_config, **common))
    if cfg.framework in ("jax", "compare"):
        from wage_train.jax_runner import JaxRunner

        init = runners[0].accumulators() if runners else None
        runners.append(JaxRunner(spec, cfg.wage_config, init_weights=init, devices=devices,
                                 batch_size=cfg.batch_size, integer=cfg.integer, **common))
    return runners
