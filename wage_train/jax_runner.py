"""The JAX side of the training example: a Flax model, the jitted WAGE step, its checkpoint state.

WAGE runs use ``wage_jax.wage_sgd`` (``w <- C(w - QG(g, bits_G, lr))``, WAGE Eq. 11-12) through
``wage_jax.make_train_step``; the float baseline (``quantized=False``) the loss and optax optimizer of its recipe
(``wage_train.float_recipe``) through the same step builder. The lr is a function of the optimizer's step count,
evaluated inside the jitted step: a per-epoch table or the recipe's annealing.

The training loop (``wage_train.loop``) drives :meth:`JaxRunner.place` (from its batch thread),
:meth:`~JaxRunner.begin_epoch`, :meth:`~JaxRunner.step` and :meth:`~JaxRunner.end_epoch`: each step is dispatched
without waiting, splits the forward key on the device and adds its loss and correct count to device arrays that
reach the host once per epoch. :meth:`~JaxRunner.train_step` is the same update, synchronous.

Checkpoints store every leaf of (params, optimizer state, keys) under its path's name (``params.dense0.kernel``,
``opt_state.0.count``, ...), so a state whose structure changed is refused instead of restored into the
wrong leaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wage_jax import QW, clip_params, kernel_scale, make_train_step, parallel, sse_loss, wage_sgd
from wage_jax.models import MLP, VGG7, LeNet5
from wage_spec import WAGEConfig
from wage_train import float_recipe as recipes
from wage_train.interop import flax_params_to_torch_weights, layer_order, torch_weights_to_flax_params
from wage_train.runspec import ModelSpec

__all__ = ["JaxRunner", "build_model", "layer_order"]


def build_model(spec: ModelSpec, config: WAGEConfig, quantized: bool, integer: bool = False) -> Any:
    """The Flax linen model for ``spec`` (MLP on any input, VGG7 and LeNet-5 on NHWC images).

    ``integer``: the WAGE layers compute on integers (``wage_jax.integer``), bit-identically.
    """
    common = dict(num_classes=spec.num_classes, config=config, quantized=quantized, integer=integer)
    if spec.kind == "mlp":
        return MLP(hidden=spec.hidden, **common)
    if spec.kind == "vgg7":
        return VGG7(widths=spec.widths, hidden=spec.vgg_hidden, **common)
    if spec.kind == "lenet5":
        return LeNet5(widths=spec.widths, hidden=spec.vgg_hidden, **common)
    raise ValueError(f"unknown model kind {spec.kind!r}")


def epoch_schedule(lrs: Sequence[float], steps_per_epoch: int) -> Any:
    """The optax schedule ``count -> lr`` of per-epoch learning rates ``lrs`` (``runspec.LrSchedule`` or a list).

    The lr is piecewise constant in the epoch: only the epochs where it changes and its values are kept (a lazy
    schedule gives them without a per-epoch list), as host arrays that the jitted step embeds as constants.
    """
    pieces = lrs.segments() if hasattr(lrs, "segments") else list(enumerate(lrs))
    int32_max = int(jnp.iinfo(jnp.int32).max)  # optax's step count is int32: later epochs are never reached
    starts = np.asarray([min(s, int32_max) for s, _ in pieces], np.int32)
    table = np.asarray([v for _, v in pieces], np.float32)
    spe = int(steps_per_epoch)

    def schedule(count: jax.Array) -> jax.Array:
        return jnp.asarray(table)[jnp.sum(jnp.asarray(starts) <= count // spe) - 1]

    return schedule


def _device_count(devices: int | None, batch_size: int | None) -> int:
    """The devices to train on: ``devices`` (default all local ones), or 1 when ``batch_size`` does not divide.
    A multi-process job trains on every device of every process (``wage_train.distributed``)."""
    if jax.process_count() > 1:
        return jax.device_count()
    n = jax.local_device_count() if devices is None else int(devices)
    if not 1 <= n <= jax.local_device_count():
        raise ValueError(f"devices must be in [1, {jax.local_device_count()}], got {n}")
    if n > 1 and batch_size is not None and batch_size % n:
        print(f"note: batch {batch_size} does not divide by {n} devices: training on one device", flush=True)
        n = 1
    return n


def _loop_step(inner: Any, needs_key: bool, loss_fn: Any = None, mesh: Any = None) -> Any:
    """The training loop's step around ``inner`` (``make_train_step``'s): the forward key split on the device (the
    same chain as :meth:`JaxRunner.train_step`'s), and the batch's loss and correct count added to device arrays
    ``(losses (steps,), correct, index)``, so that nothing waits for the step until the epoch's end.

    With a ``mesh``, the loss is ``loss_fn`` of the whole logits, replicated: the step's own loss is a float sum
    over devices whose rounding depends on their number, and the reported loss must not."""

    def loop_step(params: Any, opt_state: Any, fwd_key: jax.Array, totals: tuple[jax.Array, ...],
                  x: jax.Array, y: jax.Array) -> tuple[Any, ...]:
        key = None
        if needs_key:
            fwd_key, key = jax.random.split(fwd_key)
        params, opt_state, loss, logits = inner(params, opt_state, x, y, key)
        if mesh is not None:
            loss = loss_fn(*jax.lax.with_sharding_constraint((logits, y), parallel.replicated_sharding(mesh)))
        losses, correct, i = totals
        correct = correct + jnp.sum(jnp.argmax(logits, axis=-1) == y, dtype=jnp.int32)
        return params, opt_state, fwd_key, (losses.at[i].set(loss), correct, i + 1), loss, logits

    return loop_step


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """``(name, leaf)`` in ``tree_leaves`` order; the name joins the path's keys with dots."""

    def part(k: Any) -> str:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                return str(getattr(k, attr))
        return str(k)

    return [(".".join(part(k) for k in path), leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _host(x: Any) -> np.ndarray:
    """A replicated array's value as a host array: one device's copy, which every process can read (a whole
    ``jax.Array`` spanning other processes' devices cannot be fetched)."""
    return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)


def _plain(x: Any) -> jax.Array:
    """A typed PRNG key as its raw ``uint32`` data (what Orbax can store); any other array unchanged."""
    return jax.random.key_data(x) if _is_key(x) else jnp.asarray(x)


class JaxRunner:
    """Trains one model in JAX; the same interface as ``wage_train.torch_runner.TorchRunner``.

    Args:
        spec: the architecture.
        config: WAGE bits and rounding modes (ignored apart from ``factor`` when ``quantized=False``).
        quantized: WAGE (True) or the float baseline (False).
        lrs: per-epoch learning rates (``steps_per_epoch`` maps the step count to the epoch), or the lr of each
            step, ``count -> lr`` (``float_recipe.annealed_lr``).
        seed: draws the initial weights and the PRNG keys of stochastic rounding.
        init_weights: optional initial weights in torch order and layout (``--compare`` starts both
            frameworks from torch's draw).
        eval_batch_size: batch of :meth:`predict` (the last batch is padded, so one compilation).
        devices: train data-parallel over this many local devices (``wage_jax.parallel``; default all
            of them). The accumulators are bit-identical for every device count; when ``batch_size`` does
            not divide by it, one device is used.
        batch_size: the training batch (to check that it divides by the device count).
        float_recipe: the float baseline's loss and optimizer (``wage_train.float_recipe.RECIPES``); ignored for
            WAGE.
    """

    framework = "jax"

    def __init__(
        self,
        spec: ModelSpec,
        config: WAGEConfig,
        quantized: bool,
        lrs: Sequence[float],
        steps_per_epoch: int,
        seed: int,
        init_weights: Sequence[np.ndarray] | None = None,
        eval_batch_size: int = 500,
        devices: int | None = None,
        batch_size: int | None = None,
        integer: bool = False,
        float_recipe: str = "standard",
    ) -> None:
        self.spec, self.config, self.quantized = spec, config, quantized
        self.eval_batch_size = eval_batch_size
        self.model = build_model(spec, config, quantized, integer)
        k_param, k_opt, k_fwd, k_eval = jax.random.split(jax.random.key(seed), 4)
        dummy = jnp.zeros((1, *spec.image_shape), jnp.float32)
        # Jitted: eager Flax init would compile every primitive on its own (seconds on CPU).
        params = jax.jit(self.model.init)({"params": k_param, "wage": k_param}, dummy)["params"]
        if init_weights is not None:
            params = torch_weights_to_flax_params(list(init_weights), params)
        schedule = lrs if callable(lrs) else epoch_schedule(lrs, steps_per_epoch)
        # WAGE's accumulators start clipped (see wage_jax.wage_sgd).
        if quantized:
            optimizer = wage_sgd(config.bits_W, config.bits_G, schedule, mode=config.G_mode, key=k_opt)
            params = jax.jit(clip_params, static_argnums=1)(params, config.bits_W)
            loss_fn = sse_loss  # WAGE trains on the sum of squared errors (docs/contract.md §3)
            self.loss_mean = False
        else:
            optimizer = recipes.jax_optimizer(float_recipe, schedule)
            loss_fn = recipes.jax_loss(float_recipe)
            self.loss_mean = recipes.loss_is_batch_mean(float_recipe)
        self.params, self.opt_state = params, jax.jit(optimizer.init)(params)
        # The forward pass draws random numbers only for stochastic W, A or E rounding.
        modes = (config.W_mode, config.A_mode, config.E_mode)
        self.needs_key = quantized and "stochastic" in modes
        self.fwd_key = k_fwd
        self.eval_key = k_eval
        model = self.model

        def apply_fn(p: Any, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
            return model.apply({"params": p}, x, rngs=None if key is None else {"wage": key})

        n = _device_count(devices, batch_size)
        self.devices = n
        self._mesh = parallel.data_mesh(n) if n > 1 else None
        if n > 1:
            mesh = self._mesh
            self.params, self.opt_state = parallel.replicate((self.params, self.opt_state), mesh)
            self._step = parallel.make_data_parallel_train_step(apply_fn, optimizer, mesh, loss_fn=loss_fn)
            self._place = lambda a: parallel.shard_batch(a, mesh)
            # Evaluation is split over the devices like training, its logits gathered on every device.
            self._apply = jax.jit(apply_fn, out_shardings=parallel.replicated_sharding(mesh))
            self.eval_batch_size = -(-eval_batch_size // n) * n  # padded batches split evenly
        else:
            self._step = make_train_step(apply_fn, optimizer, loss_fn)
            self._place = jnp.asarray
            self._apply = jax.jit(apply_fn)

        self._loop_step = jax.jit(_loop_step(self._step, self.needs_key, loss_fn, self._mesh),
                                  donate_argnums=(0, 1, 2, 3))
        self._totals: tuple[jax.Array, ...] | None = None
        self._last_loss: jax.Array | None = None
        self._batch_sizes: list[int] = []  # the epoch's steps' batch sizes (a batch-mean loss is scaled by them)

    # ------------------------------------------------------------------ training and evaluation

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """One update on inputs ``x`` ``(B, H, W, C)`` float32 and labels ``y`` ``(B,)``; returns ``(loss, logits)``.

        ``loss`` is summed over the batch: ``0.5 * sum((logits - onehot)^2)`` (WAGE and the ``wage-sse`` float
        recipe, docs/contract.md §3) or ``B`` x the mean softmax cross-entropy that the ``standard`` float recipe
        minimises; ``logits`` ``(B, K)`` float32 are those of the forward pass that the update used.
        """
        key = None
        if self.needs_key:
            self.fwd_key, key = jax.random.split(self.fwd_key)
        self.params, self.opt_state, loss, logits = self._step(
            self.params, self.opt_state, self._place(np.asarray(x)), self._place(np.asarray(y, np.int32)), key
        )
        return float(loss) * (len(x) if self.loss_mean else 1), np.asarray(logits)

    def place(self, x: np.ndarray, y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """Copy a batch to the device(s) (split over them when data-parallel); safe from another thread.

        ``x`` ``(B, H, W, C)`` float32 inputs, ``y`` ``(B,)`` labels; returns them as device arrays (``y`` int32).
        In a multi-process job ``x`` and ``y`` are this process's rows of the global batch
        (``wage_train.distributed.Job.rows``) and the arrays returned are global.
        """
        return self._place(np.asarray(x, np.float32)), self._place(np.asarray(y, np.int32))

    def begin_epoch(self, steps: int) -> None:
        """Start the device-side totals of an epoch of ``steps`` steps (per-step losses, correct count)."""
        totals = (jnp.zeros((steps,), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
        self._totals = parallel.replicate(totals, self._mesh) if self._mesh is not None else totals
        self._last_loss = None
        self._batch_sizes = []

    def step(self, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        """One update on a :meth:`place`-d batch; returns the logits ``(B, K)`` as a device array.

        Dispatched asynchronously: nothing is copied to the host and nothing waits for the step (the loss and
        the correct count go into the epoch's totals, read by :meth:`end_epoch`).
        """
        x, y = batch
        self.params, self.opt_state, self.fwd_key, self._totals, self._last_loss, logits = self._loop_step(
            self.params, self.opt_state, self.fwd_key, self._totals, x, y
        )
        self._batch_sizes.append(x.shape[0])  # the global batch (a shape: nothing waits)
        return logits

    def latest_loss(self) -> float | None:
        """The loss of the latest step if the device has finished it, else None (never waits)."""
        loss = self._last_loss
        if loss is None or not loss.is_ready():
            return None
        return float(_host(loss)) * (self._batch_sizes[-1] if self.loss_mean else 1)

    def end_epoch(self) -> tuple[np.ndarray, int]:
        """Wait for the epoch's steps; returns each step's loss ``(steps,)`` and the correct count.

        The losses as :meth:`train_step` returns them: summed over the batch (a batch-mean loss times the batch
        size, in double). One device-to-host copy per epoch. Steps not taken (an epoch cut short) read as 0.
        """
        losses, correct, _ = map(_host, self._totals)
        losses = np.asarray(losses, np.float64)
        if self.loss_mean:
            losses[: len(self._batch_sizes)] *= self._batch_sizes
        self._totals = self._last_loss = None
        return losses, int(correct)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(N, K)`` float32 of inputs ``x`` ``(N, H, W, C)`` float32, in padded batches (split over the
        devices when data-parallel: each process places only its rows of each batch)."""
        from wage_train.distributed import job

        b = self.eval_batch_size
        key = self.eval_key if self.needs_key else None
        rows = job().rows(b)
        out = []
        for i in range(0, len(x), b):
            chunk = x[i : i + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), chunk.dtype)])
            out.append(_host(self._apply(self.params, self._place(chunk[rows]), key))[:n])
        return np.concatenate(out)

    # ------------------------------------------------------------------ weights

    def layer_names(self) -> list[str]:
        """Layer names in forward order."""
        return layer_order(self.params)

    def accumulators(self) -> list[np.ndarray]:
        """The weight accumulators (WAGE) or weights (float) in torch order and layout."""
        return flax_params_to_torch_weights(jax.tree_util.tree_map(_host, self.params))

    def raw_weights(self) -> dict[str, np.ndarray]:
        """The stored weights by layer name: accumulators (WAGE) or float weights, Flax layout."""
        return {name: _host(self.params[name]["kernel"]) for name in self.layer_names()}

    def forward_weights(self) -> list[tuple[str, np.ndarray]]:
        """``(name, weights)`` per layer as the forward pass uses them: ``QW(w_acc, bits_W, scale)`` for WAGE
        (nearest rounding, contract §2), the raw float weights for the baseline."""
        out = []
        for name in self.layer_names():
            kernel = _host(self.params[name]["kernel"])
            if self.quantized:
                c = self.config
                scale = kernel_scale(kernel.shape, c.bits_W, c.factor)
                kernel = jax.jit(QW, static_argnums=(1, 2, 3))(kernel, c.bits_W, scale, "nearest")
            out.append((name, np.asarray(kernel)))
        return out

    # ------------------------------------------------------------------ checkpoints (wage_train.checkpoints)

    def _state(self) -> dict[str, Any]:
        return {"params": self.params, "opt_state": self.opt_state, "fwd_key": self.fwd_key,
                "eval_key": self.eval_key}

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """Params (accumulators), optimizer state (step count, PRNG key) and forward keys as host arrays, each
        under its path's name (a PRNG key as its raw ``uint32`` data)."""
        return {name: _host(_plain(v)) for name, v in _named_leaves(self._state())}

    def load_checkpoint_state(self, tree: dict[str, Any]) -> None:
        """Load what :meth:`checkpoint_state` returned into this runner (built with the same arguments).

        Raises:
            ValueError: the names, shapes or dtypes are not this runner's (another model or optimizer).
        """
        named = _named_leaves(self._state())
        expected = {name for name, _ in named}
        if set(tree) != expected:
            missing, extra = sorted(expected - set(tree))[:3], sorted(set(tree) - expected)[:3]
            raise ValueError(f"its leaves are not this run's (missing {missing}, unexpected {extra})")
        restored = []
        for name, v in named:
            saved, plain = np.asarray(tree[name]), _plain(v)
            if saved.shape != plain.shape or saved.dtype != plain.dtype:
                raise ValueError(f"{name} is {saved.dtype}{list(saved.shape)}, not {plain.dtype}{list(plain.shape)}")
            restored.append(jax.random.wrap_key_data(saved, impl=jax.random.key_impl(v)) if _is_key(v)
                            else jnp.asarray(saved))
        state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(self._state()), restored)
        self.params, self.opt_state = state["params"], state["opt_state"]
        self.fwd_key, self.eval_key = state["fwd_key"], state["eval_key"]
        if self._mesh is not None:
            # Loaded onto one device: put the state back on the whole mesh.
            self.params, self.opt_state, self.fwd_key, self.eval_key = parallel.replicate(
                (self.params, self.opt_state, self.fwd_key, self.eval_key), self._mesh
            )
