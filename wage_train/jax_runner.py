"""The JAX runner: a Flax model, the jitted WAGE (``wage_jax.wage_sgd``, Eq. 11-12) or float-recipe step, and its
checkpoint state.

The lr is a function of the optimizer's step count, evaluated inside the jitted step. The loop's steps are
dispatched without waiting: the forward key is split on the device and each step's loss and correct count go into
device arrays read once per epoch. Checkpoints store every leaf under its path's name (``params.dense0.kernel``,
``opt_state.0.count``), so a state whose structure changed is refused instead of restored into the wrong leaves.
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
    """The Flax linen model for ``spec``; ``integer``: the WAGE layers compute on integers, bit-identically."""
    if spec.kind not in ("mlp", "vgg7", "lenet5"):
        raise ValueError(f"unknown model kind {spec.kind!r}")
    sizes = dict(hidden=spec.hidden) if spec.kind == "mlp" else dict(widths=spec.widths, hidden=spec.vgg_hidden)
    model = {"mlp": MLP, "vgg7": VGG7, "lenet5": LeNet5}[spec.kind]
    return model(**sizes, num_classes=spec.num_classes, config=config, quantized=quantized, integer=integer)


def epoch_schedule(lrs: Sequence[float], steps_per_epoch: int) -> Any:
    """The optax schedule ``count -> lr`` of per-epoch rates ``lrs`` (``runspec.LrSchedule`` or a list), kept as
    the epochs where the lr changes and its values: host arrays that the jitted step embeds as constants."""
    pieces = lrs.segments() if hasattr(lrs, "segments") else list(enumerate(lrs))
    int32_max = int(jnp.iinfo(jnp.int32).max)  # optax's step count is int32: later epochs are never reached
    starts = np.asarray([min(s, int32_max) for s, _ in pieces], np.int32)
    table = np.asarray([v for _, v in pieces], np.float32)
    spe = int(steps_per_epoch)
    return lambda count: jnp.asarray(table)[jnp.sum(jnp.asarray(starts) <= count // spe) - 1]


def _device_count(devices: int | None, batch_size: int | None) -> int:
    """``devices`` (default all local ones), 1 when ``batch_size`` does not divide; a multi-process job's all."""
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
    """The loop's step around ``inner``: the forward key split on the device (as :meth:`JaxRunner.train_step`
    does), the loss and correct count added to the device totals ``(losses (steps,), correct, index)``. With a
    ``mesh`` the loss is recomputed on the replicated logits: the step's own is a sum over the devices whose
    rounding depends on their number."""

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

    def part(k: Any) -> str:  # by hand: jax.tree_util.keystr(simple=True) is newer than the oldest jax supported
        return str(next((getattr(k, a) for a in ("key", "idx", "name") if hasattr(k, a)), k))

    return [(".".join(part(k) for k in path), leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _host(x: Any) -> np.ndarray:
    """A replicated array on the host: one device's copy (an array spanning other processes' cannot be read)."""
    return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)


def _plain(x: Any) -> jax.Array:
    """A typed PRNG key as its raw ``uint32`` data (what Orbax can store)."""
    return jax.random.key_data(x) if _is_key(x) else jnp.asarray(x)


class JaxRunner:
    """One model trained in JAX (:class:`wage_train.runner.Runner`).

    ``lrs``: per-epoch rates (``steps_per_epoch`` maps a step to its epoch) or ``count -> lr``; ``init_weights``:
    torch order and layout (``--compare`` starts from torch's draw); ``devices``: data-parallel over this many
    local devices (default all; one when ``batch_size`` does not divide), bit-identical for every count.
    """

    framework = "jax"

    def __init__(self, spec: ModelSpec, config: WAGEConfig, quantized: bool, lrs: Sequence[float],
                 steps_per_epoch: int, seed: int, init_weights: Sequence[np.ndarray] | None = None,
                 eval_batch_size: int = 500, devices: int | None = None, batch_size: int | None = None,
                 integer: bool = False, float_recipe: str = "standard") -> None:
        self.spec, self.config, self.quantized, self.eval_batch_size = spec, config, quantized, eval_batch_size
        self.model = build_model(spec, config, quantized, integer)
        k_param, k_opt, k_fwd, k_eval = jax.random.split(jax.random.key(seed), 4)
        dummy = jnp.zeros((1, *spec.image_shape), jnp.float32)
        # Jitted: eager Flax init would compile every primitive on its own (seconds on CPU).
        params = jax.jit(self.model.init)({"params": k_param, "wage": k_param}, dummy)["params"]
        if init_weights is not None:
            params = torch_weights_to_flax_params(list(init_weights), params)
        schedule = lrs if callable(lrs) else epoch_schedule(lrs, steps_per_epoch)
        if quantized:  # the accumulators start clipped (wage_jax.wage_sgd); SSE loss (docs/contract.md §3)
            optimizer = wage_sgd(config.bits_W, config.bits_G, schedule, mode=config.G_mode, key=k_opt)
            params = jax.jit(clip_params, static_argnums=1)(params, config.bits_W)
            loss_fn, self.loss_mean = sse_loss, False
        else:
            optimizer, loss_fn = recipes.jax_optimizer(float_recipe, schedule), recipes.jax_loss(float_recipe)
            self.loss_mean = recipes.loss_is_batch_mean(float_recipe)
        self.params, self.opt_state = params, jax.jit(optimizer.init)(params)
        self.needs_key = quantized and "stochastic" in (config.W_mode, config.A_mode, config.E_mode)
        self.fwd_key, self.eval_key = k_fwd, k_eval
        model = self.model

        def apply_fn(p: Any, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
            return model.apply({"params": p}, x, rngs=None if key is None else {"wage": key})

        self.devices = n = _device_count(devices, batch_size)
        self._mesh = mesh = parallel.data_mesh(n) if n > 1 else None
        if mesh is not None and not quantized:  # WAGE's sums are exact in any order, float32's are not
            print(f"note: the float baseline on {n} devices sums its gradients in another order than one device: "
                  "its weights may differ from a one-device run's in the last bits", flush=True)
        if mesh is not None:
            self.params, self.opt_state = parallel.replicate((self.params, self.opt_state), mesh)
            self._step = parallel.make_data_parallel_train_step(apply_fn, optimizer, mesh, loss_fn=loss_fn)
            self._place = lambda a: parallel.shard_batch(a, mesh)
            self._apply = jax.jit(apply_fn, out_shardings=parallel.replicated_sharding(mesh))  # logits on every device
            self.eval_batch_size = -(-eval_batch_size // n) * n  # padded batches split evenly
        else:
            self._step = make_train_step(apply_fn, optimizer, loss_fn)
            self._place = jnp.asarray
            self._apply = jax.jit(apply_fn)

        self._loop_step = jax.jit(_loop_step(self._step, self.needs_key, loss_fn, mesh), donate_argnums=(0, 1, 2, 3))
        self._totals: tuple[jax.Array, ...] | None = None
        self._last_loss: jax.Array | None = None
        self._batch_sizes: list[int] = []  # the epoch's steps' batch sizes (a batch-mean loss is scaled by them)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """One synchronous update on ``x`` ``(B, H, W, C)`` float32, ``y`` ``(B,)``; returns ``(loss, logits (B, K))``,
        the loss summed over the batch (SSE, or ``B`` x the mean cross-entropy of the ``standard`` recipe)."""
        key = None
        if self.needs_key:
            self.fwd_key, key = jax.random.split(self.fwd_key)
        self.params, self.opt_state, loss, logits = self._step(self.params, self.opt_state, self._place(np.asarray(x)),
                                                               self._place(np.asarray(y, np.int32)), key)
        return float(loss) * (len(x) if self.loss_mean else 1), np.asarray(logits)

    def place(self, x: np.ndarray, y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """The batch on the device(s), ``y`` int32; in a multi-process job ``x``, ``y`` are this process's rows
        (``Job.rows``) and the arrays returned global."""
        return self._place(np.asarray(x, np.float32)), self._place(np.asarray(y, np.int32))

    def begin_epoch(self, steps: int) -> None:
        totals = (jnp.zeros((steps,), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
        self._totals = parallel.replicate(totals, self._mesh) if self._mesh is not None else totals
        self._last_loss, self._batch_sizes = None, []

    def step(self, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        """One update, dispatched without waiting; returns the logits ``(B, K)`` as a device array."""
        x, y = batch
        self.params, self.opt_state, self.fwd_key, self._totals, self._last_loss, logits = self._loop_step(
            self.params, self.opt_state, self.fwd_key, self._totals, x, y)
        self._batch_sizes.append(x.shape[0])  # the global batch (a shape: nothing waits)
        return logits

    def latest_loss(self) -> float | None:
        loss = self._last_loss
        if loss is None or not loss.is_ready():
            return None
        return float(_host(loss)) * (self._batch_sizes[-1] if self.loss_mean else 1)

    def end_epoch(self) -> tuple[np.ndarray, int]:
        """Each step's loss ``(steps,)`` as :meth:`train_step` gives it (in double; 0 for steps not taken) and the
        correct count: the epoch's one wait and device-to-host copy."""
        losses, correct, _ = map(_host, self._totals)
        losses = np.asarray(losses, np.float64)
        if self.loss_mean:
            losses[: len(self._batch_sizes)] *= self._batch_sizes
        self._totals = self._last_loss = None
        return losses, int(correct)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits ``(N, K)`` float32 of ``x`` ``(N, H, W, C)``, in padded batches (one compilation; each process
        places its rows of each batch)."""
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

    def accumulators(self) -> list[np.ndarray]:
        return flax_params_to_torch_weights(jax.tree_util.tree_map(_host, self.params))

    def raw_weights(self) -> dict[str, np.ndarray]:
        return {name: _host(self.params[name]["kernel"]) for name in layer_order(self.params)}

    def forward_weights(self) -> list[tuple[str, np.ndarray]]:
        """``QW(w_acc, bits_W, scale)`` with nearest rounding (contract §2) for WAGE, the float weights else."""
        kernels = [(name, _host(self.params[name]["kernel"])) for name in layer_order(self.params)]
        if not self.quantized:
            return kernels
        c, qw = self.config, jax.jit(QW, static_argnums=(1, 2, 3))
        return [(n, np.asarray(qw(k, c.bits_W, kernel_scale(k.shape, c.bits_W, c.factor), "nearest")))
                for n, k in kernels]

    def _state(self) -> dict[str, Any]:
        return {"params": self.params, "opt_state": self.opt_state, "fwd_key": self.fwd_key, "eval_key": self.eval_key}

    def checkpoint_state(self) -> dict[str, np.ndarray]:
        """Params, optimizer state and keys as host arrays, each under its path's name."""
        return {name: _host(_plain(v)) for name, v in _named_leaves(self._state())}

    def load_checkpoint_state(self, tree: dict[str, Any]) -> None:
        """Load :meth:`checkpoint_state`'s tree; ``ValueError`` when its names, shapes or dtypes are not this run's."""
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
        if self._mesh is not None:  # loaded onto one device: back onto the whole mesh
            state = parallel.replicate(state, self._mesh)
        self.params, self.opt_state, self.fwd_key, self.eval_key = (state[k] for k in self._state())
