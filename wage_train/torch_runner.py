"""The torch :class:`~wage_train.runner.Runner`: ``wage_torch`` models, the reference update, its checkpoint state.

WAGE runs use ``wage_torch.training.WAGETrainer`` (forward with ``QW(w_acc)``, then
``w_acc <- C(w_acc, bits_W) - QG(grad, bits_G, lr)``, WAGE Eq. 11-12); the float baseline the loss and
``torch.optim.SGD`` of its recipe (``wage_train.float_recipe``). Stochastic rounding draws from torch's default
generator, whose state is part of the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from wage_spec import WAGEConfig
from wage_torch.models import MLP, VGG7, LeNet5
from wage_torch.training import WAGETrainer
from wage_torch.wage_qtorch import QW
from wage_train import float_recipe as recipes
from wage_train.runspec import ModelSpec

__all__ = ["TorchRunner", "build_model"]


def build_model(spec: ModelSpec, config: WAGEConfig, quantized: bool) -> torch.nn.Module:
    """The torch model for ``spec``: MLP (flattens its input), VGG7 or LeNet-5 (NCHW square images)."""
    if spec.kind == "mlp":
        return MLP(spec.in_features, spec.hidden, spec.num_classes, config=config, quantized=quantized)
    if spec.kind in ("vgg7", "lenet5"):
        h, w, c = spec.image_shape
        if h != w:
            raise ValueError(f"{spec.describe().split()[0]} needs square images, got {h}x{w}")
        cls = VGG7 if spec.kind == "vgg7" else LeNet5
        return cls(c, spec.widths, spec.vgg_hidden, spec.num_classes, image_size=h, config=config, quantized=quantized)
    raise ValueError(f"unknown model kind {spec.kind!r}")


class TorchRunner:
    """Trains one model in torch. Inputs arrive NHWC: the MLP flattens them in that order (so that weights transfer
    between frameworks), the conv models get them as NCHW. ``float_recipe`` is ignored for WAGE. Steps are
    synchronous, so the epoch's totals live on the host."""

    framework = "torch"

    def __init__(self, spec: ModelSpec, config: WAGEConfig, quantized: bool, lrs: Sequence[float],
                 steps_per_epoch: int, seed: int, eval_batch_size: int = 500, float_recipe: str = "standard") -> None:
        self.spec, self.config, self.quantized = spec, config, quantized
        # A lazy LrSchedule stays lazy; a callable is the lr of each step (float_recipe.annealed_lr).
        self.lrs = lrs if hasattr(lrs, "segments") or callable(lrs) else list(lrs)
        self.steps_per_epoch, self.eval_batch_size, self.step_count = int(steps_per_epoch), eval_batch_size, 0
        torch.manual_seed(seed)
        self.model = build_model(spec, config, quantized)
        self.names = [name for name, _ in self.model.named_parameters()]
        if quantized:
            self.trainer = WAGETrainer(self.model, config)
        else:
            self.optimizer = recipes.torch_optimizer(float_recipe, self.model.parameters(), 0.0)  # lr set per step
            self.loss_fn = recipes.torch_loss(float_recipe)
            self.loss_mean = recipes.loss_is_batch_mean(float_recipe)

    def _inputs(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        return t.permute(0, 3, 1, 2).contiguous() if self.spec.kind in ("vgg7", "lenet5") else t

    def current_lr(self) -> float:
        """The next step's lr: the per-step schedule's float32 value, or the per-epoch table's (the last after
        the end)."""
        if callable(self.lrs):
            return float(self.lrs(self.step_count))
        return self.lrs[min(self.step_count // self.steps_per_epoch, len(self.lrs) - 1)]

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """One update on ``x`` ``(B, H, W, C)`` float32 and ``y`` ``(B,)``: ``(loss summed over the batch, logits
        (B, K))``."""
        xt, yt = self._inputs(x), torch.from_numpy(np.asarray(y, np.int64))
        lr = self.current_lr()
        if self.quantized:
            loss, logits = self.trainer.step(xt, yt, lr)
        else:
            self.model.zero_grad(set_to_none=True)
            logits = self.model(xt)
            loss = self.loss_fn(logits, yt)
            loss.backward()
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
            loss, logits = loss.detach() * (len(xt) if self.loss_mean else 1), logits.detach()
        self.step_count += 1
        return float(loss), logits.numpy()

    def place(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x, y  # train_step converts it

    def begin_epoch(self, steps: int) -> None:
        self._losses, self._correct, self._steps_done = np.zeros((steps,), np.float32), 0, 0

    def step(self, batch: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        x, y = batch
        loss, logits = self.train_step(x, y)
        self._losses[self._steps_done] = loss
        self._correct += int((logits.argmax(-1) == y).sum())
        self._steps_done += 1
        return logits

    def latest_loss(self) -> float | None:
        return float(self._losses[self._steps_done - 1]) if self._steps_done else None

    def end_epoch(self) -> tuple[np.ndarray, int]:
        return self._losses, self._correct

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.quantized:
            self.trainer.load_quantized_weights()  # the forward weights QW(w_acc)
        b = self.eval_batch_size
        return np.concatenate([self.model(self._inputs(x[i : i + b])).numpy() for i in range(0, len(x), b)])

    def accumulators(self) -> list[np.ndarray]:
        """The weight accumulators (WAGE, as the reference keeps them: not yet clipped) or weights (float)."""
        if self.quantized:
            return [self.trainer.accumulators[n].numpy().copy() for n in self.names]
        return [p.detach().numpy().copy() for p in self.model.parameters()]

    def raw_weights(self) -> dict[str, np.ndarray]:
        return dict(zip(self.names, self.accumulators(), strict=True))

    def forward_weights(self) -> list[tuple[str, np.ndarray]]:
        if not self.quantized:
            return list(self.raw_weights().items())
        c, t = self.config, self.trainer
        return [(n, QW(t.accumulators[n], c.bits_W, t.scales[n], "nearest").numpy()) for n in self.names]

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """The step count, torch's RNG state and ``accumulators.<param>`` (WAGE) or ``model.<param>`` and
        ``optimizer.<index>.<buffer>`` (float), as NumPy arrays."""
        state = {"step_count": np.asarray(self.step_count, np.int64), "torch_rng_state": torch.get_rng_state().numpy()}
        if self.quantized:
            state |= {f"accumulators.{n}": a.numpy().copy() for n, a in self.trainer.accumulators.items()}
        else:
            state |= {f"model.{n}": t.detach().numpy().copy() for n, t in self.model.state_dict().items()}
            for index, per_param in self.optimizer.state_dict()["state"].items():
                state |= {f"optimizer.{index}.{k}": t.numpy().copy() for k, t in per_param.items()
                          if isinstance(t, torch.Tensor)}
        return state

    def load_checkpoint_state(self, tree: dict[str, np.ndarray]) -> None:
        """Raises KeyError or RuntimeError where the names or shapes are not this runner's."""
        tensors = {k: torch.from_numpy(np.array(v)) for k, v in tree.items()}
        step_count, rng_state = int(tensors.pop("step_count")), tensors.pop("torch_rng_state")
        if self.quantized:
            accumulators = {n: tensors.pop(f"accumulators.{n}") for n in self.trainer.accumulators}
            for n, a in accumulators.items():
                if a.shape != self.trainer.accumulators[n].shape:
                    raise RuntimeError(f"accumulators.{n} has shape {list(a.shape)}, not "
                                       f"{list(self.trainer.accumulators[n].shape)}")
            self.trainer.accumulators = accumulators
        else:
            self.model.load_state_dict({k.removeprefix("model."): tensors.pop(k) for k in list(tensors)
                                        if k.startswith("model.")})
            optimizer = {**self.optimizer.state_dict(), "state": {}}
            for key in [k for k in tensors if k.startswith("optimizer.")]:
                _, index, name = key.split(".", 2)
                optimizer["state"].setdefault(int(index), {})[name] = tensors.pop(key)
            self.optimizer.load_state_dict(optimizer)
        if tensors:
            raise KeyError(f"not this run's state: {sorted(tensors)[:3]}")
        self.step_count = step_count
        torch.set_rng_state(rng_state)
