"""Run by ``tests/test_parallel.py`` in a subprocess with 8 virtual CPU devices (not a test module).

``python tests/_parallel_worker.py OUT_DIR`` trains the same MLP on the same digits batches

* on one device with ``wage_jax.make_train_step`` (the reference),
* data-parallel with ``wage_jax.parallel`` on 1, 2 and 8 devices,
* naively data-parallel on 8 devices (per-device gradients summed with ``psum``: each device shifts
  its errors by its own shard's max), the control that shows the comparison can fail,

in nearest mode and in stochastic mode (G and E stochastic, fixed keys), and writes the final
accumulators, per-step losses and logits, and the compiled HLO of the 1- and 8-device steps (and of
the naive 8-device step) to ``OUT_DIR``. It also trains the layers' integer mode (``integer=True``,
``wage_jax.integer``) data-parallel on 8 devices: the MLP as above (both modes), and a small conv net on
the digits as 8x8x1 images (stochastic mode, ``CONV_STEPS`` steps) against its single-device float
path, and writes those steps' StableHLO and compiled HLO. ``XLA_FLAGS`` must hold
``--xla_force_host_platform_device_count=8`` before jax is imported.

``python tests/_parallel_worker.py --multihost OUT_DIR PROCESS_ID N_PROCESSES PORT`` (with a device
count of 2) is one process of a multi-process run (``jax.distributed``, CPU collectives over gloo on
localhost): the same training over the devices of all processes, each process loading only its share
of every batch; it writes ``OUT_DIR/multihost_<PROCESS_ID>.npz`` (its logits rows only).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from jax.sharding import PartitionSpec

from wage_jax import clip_params, make_train_step, parallel, sse_loss, wage_sgd
from wage_jax._src.layers import max_pool_2x2
from wage_jax.linen import WAGEConv, WAGEDense, WAGEQuantizer
from wage_jax.models import MLP
from wage_parity.testing import digits_batches
from wage_spec import FULL_PRECISION, WAGEConfig

HIDDEN, BATCH, STEPS, LR = 96, 64, 50, 8.0
SHORT = 10  # steps of the jax_threefry_partitionable=False check
# The integer mode's conv net (ConvNet) on 8x8x1 digits. At batch 16 its largest sum, the first convolution's
# kernel gradient over 16 * 8 * 8 = 1024 terms of 127 * 127, stays within 2^24: every product runs on
# integers (wage_jax.integer.integer_plan) and every float32 sum is exact.
CONV_BATCH, CONV_STEPS = 16, 5
INTEGER_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
MULTIHOST_STEPS = 20  # steps of the multi-process run (compared with the reference's accumulators then)
DEVICE_COUNTS = (1, 2, 8)  # 4 adds no case that 2 and 8 miss; each count is a compile
CONFIGS = {
    "nearest": WAGEConfig.nearest(),
    "stochastic": WAGEConfig.nearest(G_mode="stochastic", E_mode="stochastic"),
}


class ConvNet(nn.Module):
    """A small WAGE conv net on (N, 8, 8, 1): conv 3x3 8, pool, ReLU, Q; conv 3x3 8 stride 2, ReLU, Q; dense 10."""

    config: WAGEConfig
    integer: bool = False

    @nn.compact
    def __call__(self, x):
        c = self.config
        ints = {"integer": self.integer, "bits_A": c.bits_A, "bits_E": c.bits_E}
        # the integer lowering with int32 sums in the backward too ("conv" convolves the integers in float32 there)
        lowering = "patches" if self.integer else "conv"

        def q(v, bits_A, bits_E):
            return WAGEQuantizer(bits_A, bits_E, c.A_mode, c.E_mode)(v)

        x = q(x, c.bits_A, FULL_PRECISION)
        x = WAGEConv(8, c.bits_W, 3, factor=c.factor, name="conv0", lowering=lowering, **ints)(x)
        x = q(nn.relu(max_pool_2x2(x)), c.bits_A, c.bits_E)
        x = WAGEConv(8, c.bits_W, 3, strides=(2, 2), factor=c.factor, name="conv1", lowering=lowering, **ints)(x)
        x = q(nn.relu(x), c.bits_A, c.bits_E).reshape(x.shape[0], -1)
        x = WAGEDense(10, c.bits_W, c.factor, name="dense0", **ints)(x)
        return q(x, FULL_PRECISION, c.bits_E)


def _model(cfg: WAGEConfig, net: str, integer: bool):
    """``net``: ``"mlp"`` (64 -> HIDDEN -> 10) or ``"conv"`` (``ConvNet`` on (N, 8, 8, 1))."""
    if net == "mlp":
        return MLP(hidden=(HIDDEN,), config=cfg, integer=integer)
    return ConvNet(config=cfg, integer=integer)


@functools.cache
def _initial_params(cfg: WAGEConfig, net: str = "mlp"):
    """The net's initial accumulators as host arrays (the integer mode has the same parameters).

    The MLP's from one jitted init (eager init compiles every op); the conv net's drawn with NumPy,
    ``U(-1, 1)`` in the shapes of its init (``opt_init`` clips them), which compiles nothing.
    """
    if net == "mlp":
        variables = jax.jit(MLP(hidden=(HIDDEN,), config=cfg).init)(jax.random.key(0), jnp.zeros((1, 8, 8)))
        return jax.tree_util.tree_map(np.asarray, variables["params"])
    shapes = jax.eval_shape(ConvNet(config=cfg).init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    rng = np.random.default_rng(0)
    return jax.tree_util.tree_map(lambda s: rng.uniform(-1, 1, s.shape).astype(np.float32), shapes)


def setup(cfg: WAGEConfig, net: str = "mlp", integer: bool = False):
    """Initial accumulators (host arrays), the WAGE optimizer and ``apply_fn(params, x, key)``.

    ``apply_fn`` takes the digits batches as they are, ``(N, 8, 8)``; the conv net reads them as 8x8x1.
    """
    model = _model(cfg, net, integer)
    params = _initial_params(cfg, net)
    opt = wage_sgd(cfg.bits_W, cfg.bits_G, LR, mode=cfg.G_mode, key=jax.random.key(1) if cfg.stochastic else None)

    def apply_fn(p, x, key):
        if net == "conv":
            x = x[..., None]
        return model.apply({"params": p}, x, rngs=None if key is None else {"wage": key})

    return params, opt, apply_fn


_clip_params = jax.jit(clip_params, static_argnums=1)  # one compilation per net (eager: one per op and shape)


def opt_init(cfg: WAGEConfig, opt, params):
    """``(clip_params(params), opt.init(...))``: WAGE's accumulators start clipped."""
    params = _clip_params(params, cfg.bits_W)
    return params, opt.init(params)


def model_key(cfg: WAGEConfig, step: int):
    return jax.random.fold_in(jax.random.key(2), step) if cfg.stochastic else None


def run(cfg: WAGEConfig, batches, step_fn, prepare, snapshot: int | None = None, net: str = "mlp"):
    """Train; ``prepare`` places state, batches and keys.

    Returns the final accumulators (a list of arrays), per-step losses and logits (this process's rows),
    and the accumulators after ``snapshot`` steps (or None).
    """
    params0, opt, _ = setup(cfg, net)
    params, opt_state = opt_init(cfg, opt, params0)
    params, opt_state = prepare.state(params, opt_state)
    losses, logits, snap = [], [], None
    for i, (x, y) in enumerate(batches):
        if i == snapshot:
            snap = [np.asarray(a) for a in jax.tree_util.tree_leaves(params)]
        x, y = prepare.batch(x, y)
        key = model_key(cfg, i)
        params, opt_state, loss, out = step_fn(params, opt_state, x, y, key if key is None else prepare.key(key))
        losses.append(np.asarray(loss))
        logits.append(_local_rows(out))
    leaves = [np.asarray(a) for a in jax.tree_util.tree_leaves(params)]
    return leaves, np.stack(losses), np.stack(logits), snap


def _local_rows(a: jax.Array) -> np.ndarray:
    """The rows of a batch-sharded array that this process holds (all of them with one process)."""
    if a.is_fully_addressable:
        return np.asarray(a)
    shards = sorted(a.addressable_shards, key=lambda s: s.index[0].start)
    return np.concatenate([np.asarray(s.data) for s in shards])


class Local:
    @staticmethod
    def state(p, s):
        return p, s

    @staticmethod
    def batch(x, y):
        return jnp.asarray(x), jnp.asarray(y)

    @staticmethod
    def key(k):
        return k


class Sharded:
    def __init__(self, mesh):
        self.mesh = mesh

    def state(self, p, s):
        return parallel.replicate((p, s), self.mesh)

    def batch(self, x, y):
        return parallel.shard_batch((x, y), self.mesh)

    def key(self, k):
        return parallel.replicate(k, self.mesh)


class ProcessLocal(Sharded):
    """Multi-process: this process passes only its share of each global batch to ``shard_batch``."""

    def batch(self, x, y):
        share = len(x) // jax.process_count()
        rows = slice(jax.process_index() * share, (jax.process_index() + 1) * share)
        return parallel.shard_batch((x[rows], y[rows]), self.mesh)


def naive_step(apply_fn, opt, mesh):
    """Per-device loss and gradients on the local shard, summed over devices: the error shifts are per shard."""
    P = PartitionSpec

    def local_grads(params, x, y):
        def loss_fn(p):
            logits = apply_fn(p, x, None)
            return sse_loss(logits, y), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return jax.lax.psum(grads, "data"), jax.lax.psum(loss, "data"), logits

    sharded = jax.shard_map(
        local_grads, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P(), P(), P("data"))
    )

    @jax.jit
    def step(params, opt_state, x, y, key=None):
        grads, loss, logits = sharded(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, logits

    return step


def main(out_dir: Path) -> None:
    assert len(jax.devices()) == 8, f"needs 8 devices, got {jax.devices()}"
    batches = digits_batches(STEPS, BATCH, label_dtype=np.int32)
    arrays: dict[str, np.ndarray] = {}
    meta = {"threefry_partitionable": bool(jax.config.jax_threefry_partitionable), "seconds": {}}

    def store(tag, result):
        leaves, losses, logits, snap = result
        for i, leaf in enumerate(leaves):
            arrays[f"{tag}/leaf{i}"] = leaf
        for i, leaf in enumerate(snap or []):
            arrays[f"{tag}@{MULTIHOST_STEPS}/leaf{i}"] = leaf
        arrays[f"{tag}/loss"], arrays[f"{tag}/logits"] = losses, logits

    for mode, cfg in CONFIGS.items():
        _, opt, apply_fn = setup(cfg)
        t = time.perf_counter()
        store(f"{mode}/ref", run(cfg, batches, make_train_step(apply_fn, opt), Local, snapshot=MULTIHOST_STEPS))
        meta["seconds"][f"{mode}/ref"] = time.perf_counter() - t
        for n in DEVICE_COUNTS:
            _, opt, apply_fn = setup(cfg)
            mesh = parallel.data_mesh(n)
            t = time.perf_counter()
            store(f"{mode}/{n}", run(cfg, batches, parallel.make_data_parallel_train_step(apply_fn, opt, mesh),
                                     Sharded(mesh)))
            meta["seconds"][f"{mode}/{n}"] = time.perf_counter() - t
        if mode == "nearest":
            mesh = parallel.data_mesh(8)
            store("nearest/naive8", run(cfg, batches, naive_step(apply_fn, opt, mesh), Sharded(mesh)))

    integer_mode(batches, store, meta, out_dir)

    # The same stochastic run with the legacy, non-partitionable threefry: still the same on 1 and 8
    # devices, but other random values than the default's (so runs compare only under one setting).
    jax.config.update("jax_threefry_partitionable", False)
    cfg = CONFIGS["stochastic"]
    for n in (1, 8):
        _, opt, apply_fn = setup(cfg)
        mesh = parallel.data_mesh(n)
        step = parallel.make_data_parallel_train_step(apply_fn, opt, mesh)
        store(f"legacy_rng/{n}", run(cfg, batches[:SHORT], step, Sharded(mesh)))
    jax.config.update("jax_threefry_partitionable", meta["threefry_partitionable"])

    # Argument checks that need several devices.
    mesh = parallel.data_mesh(8)
    _, opt, apply_fn = setup(CONFIGS["nearest"])
    step = parallel.make_data_parallel_train_step(apply_fn, opt, mesh)
    x, y = batches[0]
    meta["errors"] = {}
    for name, call in {
        "shard_batch(63 rows)": lambda: parallel.shard_batch(x[:63], mesh),
        "step(60 rows)": lambda: step(*opt_init(CONFIGS["nearest"], opt, setup(CONFIGS["nearest"])[0]), x[:60], y[:60]),
    }.items():
        try:
            call()
            meta["errors"][name] = None
        except ValueError as e:
            meta["errors"][name] = str(e)
    placed = parallel.shard_batch(x, mesh)
    meta["shard_rows"] = [int(s.data.shape[0]) for s in placed.addressable_shards]
    meta["shard_rows_match"] = all(
        np.array_equal(np.asarray(s.data), x[s.index]) for s in placed.addressable_shards
    )

    # The compiled (partitioned) HLO of one nearest-mode step, for 1 and 8 devices.
    cfg = CONFIGS["nearest"]
    for n in (1, 8):
        params0, opt, apply_fn = setup(cfg)
        mesh = parallel.data_mesh(n)
        step = parallel.make_data_parallel_train_step(apply_fn, opt, mesh, donate=False)
        p, s = parallel.replicate(opt_init(cfg, opt, params0), mesh)
        x, y = parallel.shard_batch(batches[0], mesh)
        (out_dir / f"hlo_{n}.txt").write_text(step.lower(p, s, x, y, None).compile().as_text())
    naive = naive_step(apply_fn, opt, mesh)  # mesh: the 8-device one
    (out_dir / "hlo_naive8.txt").write_text(naive.lower(p, s, x, y, None).compile().as_text())

    np.savez(out_dir / "results.npz", **arrays)
    (out_dir / "meta.json").write_text(json.dumps(meta))


def integer_mode(batches, store, meta, out_dir: Path) -> None:
    """``integer=True`` data-parallel on 8 devices; the references are the float path on one device.

    The MLP in both modes over the same batches as above (its reference is ``{mode}/ref``), and ``ConvNet``
    (stochastic, ``CONV_STEPS`` steps of ``CONV_BATCH``; its reference ``conv/ref``). Each 8-device step
    is compiled once, its executable trains, and its StableHLO and compiled HLO go to ``OUT_DIR``. These
    executables are compiled at XLA's lowest backend optimization level (``INTEGER_COMPILE``), which
    leaves the HLO (partitioning, collectives, dtypes) as it is and takes a half to a third of the compile time;
    the products are on integers and every sum exact, so no optimization can change a bit (the default
    level's integer steps are compared with the float path in tests/test_jax_integer.py).
    """
    mesh = parallel.data_mesh(8)

    def integer_run(tag, cfg, net, data):
        params0, opt, apply_fn = setup(cfg, net, integer=True)
        step = parallel.make_data_parallel_train_step(apply_fn, opt, mesh, donate=False)
        p, s = parallel.replicate(opt_init(cfg, opt, params0), mesh)
        x, y = parallel.shard_batch(data[0], mesh)
        key = model_key(cfg, 0)
        lowered = step.lower(p, s, x, y, None if key is None else parallel.replicate(key, mesh))
        compiled = lowered.compile(INTEGER_COMPILE)
        (out_dir / f"hlo_{tag}.txt").write_text(compiled.as_text())
        (out_dir / f"stablehlo_{tag}.txt").write_text(lowered.as_text())
        return run(cfg, data, compiled, Sharded(mesh), net=net)

    t = time.perf_counter()
    for mode, cfg in CONFIGS.items():
        store(f"integer/{mode}/8", integer_run(f"integer_mlp_{mode}", cfg, "mlp", batches))
    cfg = CONFIGS["stochastic"]
    conv_batches = digits_batches(CONV_STEPS, CONV_BATCH, seed=1, label_dtype=np.int32)
    _, opt, apply_fn = setup(cfg, "conv")
    store("conv/ref", run(cfg, conv_batches, make_train_step(apply_fn, opt), Local, net="conv"))
    store("integer/conv/8", integer_run("integer_conv", cfg, "conv", conv_batches))
    meta["seconds"]["integer"] = time.perf_counter() - t


def multihost(out_dir: Path, process_id: int, n_processes: int, port: int) -> None:
    """One of ``n_processes`` processes (2 local CPU devices each): the same runs over all their devices."""
    jax.distributed.initialize(f"localhost:{port}", num_processes=n_processes, process_id=process_id)
    mesh = parallel.data_mesh()
    assert mesh.size == 2 * n_processes and len(jax.local_devices()) == 2, jax.devices()
    batches = digits_batches(STEPS, BATCH, label_dtype=np.int32)[:MULTIHOST_STEPS]
    arrays: dict[str, np.ndarray] = {}
    for mode, cfg in CONFIGS.items():
        _, opt, apply_fn = setup(cfg)
        step = parallel.make_data_parallel_train_step(apply_fn, opt, mesh)
        t = time.perf_counter()
        leaves, losses, logits, _ = run(cfg, batches, step, ProcessLocal(mesh))
        arrays[f"{mode}/seconds"] = np.float64(time.perf_counter() - t)
        for i, leaf in enumerate(leaves):
            arrays[f"{mode}/leaf{i}"] = leaf
        arrays[f"{mode}/loss"], arrays[f"{mode}/logits"] = losses, logits
    np.savez(out_dir / f"multihost_{process_id}.npz", **arrays)
    jax.distributed.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "--multihost":
        multihost(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main(Path(sys.argv[1]))
