"""A finished ``wage-train`` run (``config.json``, ``weights.npz``), loaded for prediction (:func:`load_run`),
evaluated (``wage-train eval``) and exported (``wage-train export``).

:meth:`LoadedRun.predict` gives the classes the run's own evaluation gave, bit for bit: the same model, weights
(``weights.npz``'s ``"<framework>.<layer>"``), input scaling, evaluation batch and, for stochastic rounding, key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wage_data import DataError, Dataset, hold_out_validation, load_dataset, to_inputs
from wage_spec import WAGEConfig
from wage_train.config import RunConfig, UsageError
from wage_train.runner import Runner, make_runners, model_inputs
from wage_train.runspec import LrSchedule, ModelSpec

__all__ = ["LoadedRun", "evaluate", "evaluation_data", "load_run"]

# Raw pixel range and image shape (H, W, C) of each data set (a run saved before data fingerprints recorded none).
MAX_VALUE = {"digits": 16.0, "mnist": 255.0, "cifar10": 255.0, "svhn": 255.0}
IMAGE_SHAPE = {"digits": (8, 8, 1), "mnist": (28, 28, 1), "cifar10": (32, 32, 3), "svhn": (32, 32, 3)}


@dataclass(frozen=True)
class LoadedRun:
    """A saved run, ready to predict."""

    config: RunConfig
    framework: str  # "jax" or "torch": whose weights were loaded
    # The Flax linen module (``model.apply({"params": params}, inputs)``) or the torch ``nn.Module`` (holding the
    # forward weights, ``QW(accumulator)`` for WAGE; NCHW inputs for conv models).
    model: Any
    params: Any  # the Flax parameters (WAGE: the accumulators, which the layers quantize), or None for torch
    wage: WAGEConfig | None  # None for a float run
    runner: Runner
    max_value: float  # the raw pixels' largest value

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Raw pixels ``(N, H, W, C)`` in ``[0, max_value]`` -> float32 model inputs ``x / max_value * 2 - 1``,
        padded to a square multiple of 8 for VGG7."""
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
        return to_inputs(model_inputs(self.config, images), self.max_value)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits ``(N, 10)`` float32 of raw pixels ``images`` ``(N, H, W, C)``."""
        return self.runner.predict(self.preprocess(images))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class indices ``(N,)`` int64 of raw pixels ``images`` ``(N, H, W, C)``."""
        return self.logits(images).argmax(-1)


def load_run(run_dir: str | Path, framework: str | None = None) -> LoadedRun:
    """The run saved in ``run_dir``, with the weights of ``framework`` (a ``--compare`` run: default ``"jax"``).

    Raises:
        DataError: no finished run in ``run_dir``, or weights that are not its model's.
        UsageError: ``framework`` is not the run's, or its ``config.json`` is not valid.
    """
    run_dir = Path(run_dir)
    config_path, weights_path = run_dir / "config.json", run_dir / "weights.npz"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise DataError(f"{run_dir}: no finished wage-train run ({path.name} not found; a run writes "
                            "weights.npz when it ends or stops)")
    cfg = RunConfig.load(config_path)
    have = ("torch", "jax") if cfg.framework == "compare" else (cfg.framework,)
    framework = framework or have[-1]
    if framework not in have:
        raise UsageError(f"--framework {framework}: the run in {run_dir} trained {' and '.join(have)}")
    fingerprint = cfg.data_fingerprint or {}
    x = model_inputs(cfg, np.zeros((1, *(fingerprint.get("image_shape") or IMAGE_SHAPE[cfg.dataset])), np.uint8))
    spec = ModelSpec(kind=cfg.model, image_shape=x.shape[1:], num_classes=10, hidden=cfg.hidden,
                     widths=cfg.widths, vgg_hidden=cfg.vgg_hidden)
    # The run's evaluation batch (predict pads the last batch to it), so that the logits are the run's.
    eval_batch = min(cfg.eval_batch_size, fingerprint.get("eval", cfg.eval_batch_size))
    (runner,) = make_runners(cfg.replace(framework=framework), spec, LrSchedule(cfg.lr, cfg.epochs, cfg.schedule),
                             1, devices=1, eval_batch_size=eval_batch)
    with np.load(weights_path) as saved:
        weights = {k.split(".", 1)[1]: saved[k] for k in saved.files if k.startswith(framework + ".")}
    expected = runner.raw_weights()
    if sorted(weights) != sorted(expected):
        raise DataError(f"{weights_path}: holds layers {sorted(weights)}, the run's {framework} model has "
                        f"{sorted(expected)}")
    for name, w in weights.items():
        if w.shape != expected[name].shape:
            raise DataError(f"{weights_path}: {name} is {w.shape}, the model's is {expected[name].shape}")
    if framework == "jax":
        import jax.numpy as jnp

        runner.params = {name: {"kernel": jnp.asarray(w)} for name, w in weights.items()}
    elif runner.quantized:
        import torch

        runner.trainer.accumulators = {n: torch.from_numpy(np.array(w)) for n, w in weights.items()}
        runner.trainer.load_quantized_weights()  # the module's parameters: the forward weights QW(acc)
    else:
        import torch

        with torch.no_grad():
            for name, p in runner.model.named_parameters():
                p.copy_(torch.from_numpy(weights[name]))
    return LoadedRun(config=cfg, framework=framework, model=runner.model,
                     params=runner.params if framework == "jax" else None,
                     wage=None if cfg.float else cfg.wage_config, runner=runner, max_value=MAX_VALUE[cfg.dataset])


def evaluation_data(run: LoadedRun, dataset: str | None = None, data_dir: str | None = None) -> Dataset:
    """The data ``run`` is evaluated on: ``dataset`` (default the run's own, validation split included) from
    ``data_dir`` (default the run's); ``x_test`` holds raw pixels ``(N, H, W, C)``.

    Raises:
        UsageError: the images are not the shape the run's model takes.
        DataError: the data set cannot be read.
    """
    cfg = run.config
    own = dataset in (None, cfg.dataset)
    dataset = dataset or cfg.dataset
    data = load_dataset(dataset, data_dir if data_dir is not None else (cfg.data_dir if own else None))
    if own and cfg.validation:
        data = hold_out_validation(data, cfg.validation)
    want = tuple(cfg.data_fingerprint["image_shape"]) if cfg.data_fingerprint else IMAGE_SHAPE[cfg.dataset]
    if data.image_shape != want:
        raise UsageError(f"--dataset {dataset}: images of shape {data.image_shape}, the run's model takes {want}")
    return data


def evaluate(run: LoadedRun, dataset: str | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """The accuracy of ``run`` on :func:`evaluation_data`: ``{"dataset", "split", "correct", "examples",
    "test_acc"}``."""
    data = evaluation_data(run, dataset, data_dir)
    correct = run.predict(data.x_test) == data.y_test
    return {"dataset": dataset or run.config.dataset, "split": data.eval_split, "correct": int(correct.sum()),
            "examples": len(correct), "test_acc": float(correct.mean())}
