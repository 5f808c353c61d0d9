"""Data-parallel WAGE training over several devices with ``jax.sharding``, bit-identical to one device.

The batch is split along its first axis over a 1-D device mesh whose axis is named ``"data"``; the
weight accumulators and the optimizer state are replicated on every device. The train step is the
single-device one (``wage_jax.make_train_step``), written on *global* arrays and compiled by
``jax.jit`` with explicit ``NamedSharding`` s for its inputs and outputs. XLA's SPMD partitioner (GSPMD)
then inserts the collectives, and every reduction in WAGE keeps its meaning over the *whole* batch:

* the error ``shift`` of every ``WAGEQuantizer`` backward (WAGE Eq. 9, ``wage_jax.shift``) takes
  ``max|e|`` over the whole error tensor, batch included: it becomes an ``all-reduce(max)`` of the
  per-device maxima (a max picks one element: exact in any order);
* the weight gradient ``x^T e`` sums over the batch: each device sums its shard, then an
  ``all-reduce(add)`` adds the partial sums. This is exact in float32, so the order of the
  all-reduce cannot change a bit: both operands lie on fixed-point grids (8-bit A and E: multiples of
  ``2^-7``, magnitude ``< 1``), so every product is a multiple of ``2^-14`` of magnitude ``< 1``, and
  every partial sum of at most ``B`` of them is a multiple of ``2^-14`` of magnitude ``< B``: exact in
  float32 (24-bit significand) in any order while ``B * 2^14 <= 2^24``, i.e. a global batch
  ``B <= 1024`` for ``bits_A = bits_E = 8`` (in general ``B * 2^(bits_A-1) * 2^(bits_E-1) <= 2^24``).
  Beyond that bound one device and several round the sum in different orders and may differ in the
  last bit of a gradient (the run stays correct WAGE, just not bit-identical across device counts).
  The forward sums never cross devices (a row of the batch lives on one device) and are exact too;
  the only float sum that is not exact is the reported loss, which nothing depends on;
* ``QG`` (WAGE Eq. 11-12) shifts the summed gradient by *its* max, computed on the replicated gradient
  after the all-reduce, so each device computes the same update.

A naive data-parallel step (per-device gradients combined with ``psum``/``pmean``, e.g. ``shard_map``
over the loss and gradient) gets the first point wrong: each device scales its errors by its own
shard's max. ``tests/test_parallel.py`` shows that such a step diverges from one device, that this
one does not (1, 2, 4 and 8 devices, and 2 processes x 2 devices, bit for bit), and checks the
all-reduces in the compiled HLO.

Random numbers (``"stochastic"`` modes): every draw is a ``jax.random.uniform(key, global_shape)``
inside ``jit`` (the model's ``"wage"`` stream and the optimizer's ``QG`` key), and JAX's random
functions under ``jit`` give the same values whatever the sharding. With
``jax_threefry_partitionable=True`` (the default since JAX 0.5; this package leaves it alone) each
device generates only its own shard of the bits, without communication; with ``False`` the values
are still sharding-invariant, but each device may generate the whole array, and the values differ
from the ``True`` setting's. Runs compare bit for bit only under the same flag value.

Usage (one process, all local devices)::

    from wage_jax import parallel
    mesh = parallel.data_mesh()                       # or data_mesh(4): the first 4 devices
    tx = wage_sgd(bits_W, bits_G, lr, "stochastic", key=key_G)
    params = clip_params(params, bits_W)
    params, opt_state = parallel.replicate((params, tx.init(params)), mesh)
    step = parallel.make_data_parallel_train_step(apply_fn, tx, mesh)
    for x, y in batches:                              # global batch, divisible by mesh.size
        x, y = parallel.shard_batch((x, y), mesh)     # optional: numpy inputs are placed by step
        params, opt_state, loss, logits = step(params, opt_state, x, y, key)

Several hosts (multi-controller JAX; the same program runs on each host):

1. call ``jax.distributed.initialize()`` first on every process (coordinator address, process count
   and id come from the cluster environment or as arguments);
2. ``data_mesh()`` then spans ``jax.devices()``, the devices of *all* processes;
3. each process loads its own share of every global batch (``global_batch / jax.process_count()``
   rows, in process order) and passes it to ``shard_batch``, which assembles the global array with
   ``jax.make_array_from_process_local_data``; ``replicate`` needs the same values on every process
   (same seed for the initializer);
4. results that are replicated (parameters, loss) are readable on every process; the sharded logits
   only in the rows a process holds (``array.addressable_shards``).

The result is the same as one device running the whole global batch, bit for bit (nearest and
stochastic modes, under the batch bound above).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from wage_jax._src.train import LossFn, TrainStep, sse_loss, step_function

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "data_mesh",
    "make_data_parallel_train_step",
    "replicate",
    "replicated_sharding",
    "shard_batch",
]

#: The name of the mesh axis the batch is split along (``data_mesh``'s only axis).
DATA_AXIS = "data"


def data_mesh(n_devices: int | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D ``Mesh`` with axis ``"data"`` over ``n_devices`` devices.

    Args:
        n_devices: how many devices; ``None`` for all of ``devices``. Must be in ``[1, len(devices)]``.
        devices: the devices to pick from, in order; default ``jax.devices()`` (every process's devices
            after ``jax.distributed.initialize()``). With several processes use all of them (or a set that
            holds the same number of devices of every process).

    Returns:
        ``Mesh(devices[:n_devices], ("data",))``.
    """
    pool = list(jax.devices() if devices is None else devices)
    if not pool:
        raise ValueError("devices must not be empty")
    n = len(pool) if n_devices is None else n_devices
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 1 <= n <= len(pool):
        raise ValueError(f"n_devices must be an int in [1, {len(pool)}] (the devices available), got {n_devices!r}")
    return Mesh(np.array(pool[: int(n)]), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P("data"))``: the first axis split over the mesh, the others whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P())``: a full copy on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(x: Any, mesh: Mesh) -> Any:
    """Place a batch (an array or a pytree of arrays) with its first axis split over the ``"data"`` axis.

    Single process: ``x`` is the global batch, leading dimension ``N`` divisible by ``mesh.size``; each
    device gets ``N / mesh.size`` consecutive rows, device ``i`` rows ``[i N/d, (i+1) N/d)``.

    Several processes: ``x`` is this process's share of the global batch (its leading dimension times
    ``jax.process_count()`` is ``N``); the global array is built with
    ``jax.make_array_from_process_local_data``.

    Returns:
        the same pytree of ``jax.Array`` s, global shapes as on one device, sharded ``P("data")``.

    Raises:
        ValueError: a leaf is a scalar or its global leading dimension is not divisible by ``mesh.size``.
    """
    sharding = batch_sharding(mesh)
    multi = jax.process_count() > 1

    def place(leaf: Any) -> jax.Array:
        shape = np.shape(leaf)
        if not shape:
            raise ValueError("shard_batch needs arrays with a batch axis, got a scalar")
        n = shape[0] * (jax.process_count() if multi else 1)
        if n % mesh.size:
            raise ValueError(f"the global batch ({n}) must be divisible by the number of devices ({mesh.size})")
        if multi:
            return jax.make_array_from_process_local_data(sharding, np.asarray(leaf), (n, *shape[1:]))
        return jax.device_put(leaf, sharding)

    return jax.tree_util.tree_map(place, x)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copy a pytree (parameters, optimizer state, a PRNG key) to every device of ``mesh``.

    Shapes and dtypes are unchanged (PRNG key arrays included); ``None`` leaves stay ``None``. With
    several processes every process must pass the same values (each leaf goes through host memory
    there, since ``jax.device_put`` cannot move a committed array to other processes' devices).
    """
    sharding = replicated_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def place(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = jax.device_put(np.asarray(jax.random.key_data(leaf)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        return jax.device_put(np.asarray(leaf), sharding)

    return jax.tree_util.tree_map(place, tree)


def make_data_parallel_train_step(
    apply_fn: Callable[[Any, jax.Array, jax.Array | None], jax.Array],
    tx: optax.GradientTransformation,
    mesh: Mesh,
    *,
    loss_fn: LossFn = sse_loss,
    donate: bool = True,
) -> TrainStep:
    """The WAGE train step of ``wage_jax.make_train_step``, data-parallel over ``mesh``.

    Returns ``step(params, opt_state, x, y, key=None) -> (params, opt_state, loss, logits)``:

    * ``params``, ``opt_state``: the accumulators and ``tx``'s state, replicated (pass
      ``replicate(...)`` results, or host arrays: they are copied). Returned replicated.
    * ``x``: the global batch ``(N, ...)`` float32 (e.g. ``(N, 8, 8)`` for the MLP, ``(N, H, W, C)``
      for VGG7), ``y``: labels ``(N,)`` int; ``N`` divisible by ``mesh.size``. Sharded ``P("data")`` (pass
      ``shard_batch(...)`` results, or host arrays with one process).
    * ``key``: the model's ``"wage"`` rng key for this step (replicated), or ``None`` when nothing in the
      forward/backward pass is stochastic. The optimizer's ``QG`` key lives in ``opt_state``.
    * ``loss``: the scalar ``loss_fn(logits, y)`` over the global batch (default: ``sse_loss``), replicated;
      ``logits``: ``(N, num_classes)`` float32, sharded ``P("data")``.

    The update is WAGE's ``w <- C(w - QG(dL/dw, bits_G, lr))`` (Eq. 11-12) with the error shifts
    (Eq. 9) over the global batch: bit for bit the single-device step on the same global batch,
    independent of ``mesh.size`` (see the module docstring for why and for the batch bound). Only
    ``loss`` is a float sum whose rounding may depend on the reduction order; nothing depends on it.

    Args:
        apply_fn: ``apply_fn(params, x, key) -> logits``, e.g.
            ``lambda p, x, k: model.apply({"params": p}, x, rngs=None if k is None else {"wage": k})``.
        tx: an optax transformation, e.g. ``wage_jax.wage_sgd`` (start from ``clip_params(params)``).
        mesh: a mesh with the axis ``"data"`` (``data_mesh()``).
        loss_fn: ``loss_fn(logits, y) -> scalar``, summed over the batch for the bit-identity argument above.
        donate: donate ``params``/``opt_state`` buffers to the outputs (as ``make_train_step`` does);
            the arrays passed in must not be used after the call.

    ``step.lower(params, opt_state, x, y, key)`` lowers the jitted step (``.compile().as_text()`` shows
    the partitioned HLO with its all-reduces).
    """
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must have an axis named {DATA_AXIS!r}, got {mesh.axis_names}")
    rep, data = replicated_sharding(mesh), batch_sharding(mesh)
    single_device_step = step_function(apply_fn, tx, loss_fn)

    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array, key: jax.Array | None = None):
        # Shapes are static: checked once per trace, with a message that names the fix.
        n = x.shape[0] if x.ndim else 0
        if x.ndim == 0 or n % mesh.size:
            raise ValueError(f"the global batch ({n}) must be divisible by the number of devices ({mesh.size})")
        # The single-device step on placed inputs: the batch split over "data", the rest replicated (inputs
        # already placed so are not moved; host arrays are). GSPMD partitions the rest.
        constrain = jax.lax.with_sharding_constraint
        params, opt_state, key = constrain((params, opt_state, key), rep)
        x, y = constrain((x, y), data)
        return single_device_step(params, opt_state, x, y, key)

    return jax.jit(step, out_shardings=(rep, rep, rep, data), donate_argnums=(0, 1) if donate else ())
