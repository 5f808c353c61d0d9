"""Train steps for ``benchmarks.accelerator``: trajectories on two backends (phase b) and step timings (phase c).

Models (``wage_jax.models``): the MLP 784-1024-10 on 28x28 inputs and the paper's VGG7 on 32x32x3
(widths 128-256-512, dense 1024); ``--smoke`` shrinks both. Inputs are synthetic 8-bit images scaled to
``[-1, 1]`` (docs/contract.md §3) and random labels, generated with NumPy: the work per step, and the
bits a backend produces, do not depend on the data being real.

Variants of a step: ``wage`` (2-8-8-8, W and A nearest, G and E stochastic: the paper's modes),
``wage_nearest`` (every mode nearest), ``float`` (the same architecture unquantized, ``optax.sgd``,
float32 matmuls and convolutions at ``Precision.HIGHEST``, as the WAGE layers compute them),
``float_default`` (the same at the backend's default precision: TF32 tensor cores on NVIDIA GPUs),
``wage_integer`` (the WAGE layers' integer mode, where ``wage_jax.models.VGG7`` has one; phase d times it
against ``wage``, its float path, in interleaved rounds: ``integer_vs_float_path``).

Every step is jitted with its parameters donated and compiled ahead of time for one device
(``jit(...).lower(...).compile()``): the compile time, XLA's memory analysis and its flop count come
from that executable, and the timed steps run it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import optax

from benchmarks.accel_common import Budget, Devices, device_memory, is_out_of_memory, log, median
from benchmarks.accel_common import tree_differing_elements as tree_diff
from wage_jax import clip_params, make_train_step, sse_loss, wage_sgd
from wage_jax.models import MLP, VGG7
from wage_spec import WAGEConfig, fan_in, wage_init_limits

__all__ = [
    "ModelSpec",
    "Runner",
    "Variant",
    "VARIANTS",
    "has_integer_mode",
    "model_specs",
    "run_trajectory",
    "measure_speed",
    "largest_batch",
    "make_runner",
    "integer_vs_float_path",
    "stablehlo_products",
    "float_step",
    "wage_step",
    "time_variants",
]

LR_WAGE = 8.0  # the paper's first-phase learning rate
LR_FLOAT = 1e-4  # small enough that float SGD on random data stays finite (timing does not depend on it)
_SEED_INIT, _SEED_G, _SEED_STEPS = 0, 2, 3
_N_BATCHES = 4  # distinct synthetic batches, cycled through


# ---- the one place that knows wage_jax's training API (update here when it changes) -----------------------------


def _apply_fn(model) -> Callable[..., jax.Array]:
    def apply_fn(params, x, key):
        return model.apply({"params": params}, x, rngs=None if key is None else {"wage": key})

    return apply_fn


def wage_step(model, cfg: WAGEConfig, lr: float) -> tuple[Callable, Callable]:
    """``(init, step)`` of WAGE training with ``wage_jax.wage_sgd`` and ``wage_jax.make_train_step``.

    ``init(params) -> (params, opt_state)``; ``step(params, opt_state, x, y, key) -> (params, opt_state,
    loss, logits)``, not jitted (the caller jits and compiles it per device). ``key`` feeds the model's
    ``"wage"`` rng stream (None when nothing in the forward or backward is stochastic); ``wage_sgd``
    holds its own key for stochastic ``G`` (a fixed seed, so every device starts from the same key).
    This adapter is the only code here that depends on ``make_train_step``'s and ``wage_sgd``'s signatures.
    """
    key_G = jax.random.key(_SEED_G) if cfg.G_mode == "stochastic" else None
    opt = wage_sgd(cfg.bits_W, cfg.bits_G, lr, mode=cfg.G_mode, key=key_G)
    step = make_train_step(_apply_fn(model), opt, jit=False)

    def init(params):
        params = clip_params(params, cfg.bits_W)  # WAGE's accumulators start clipped (contract §3)
        return params, opt.init(params)

    return init, step


def float_step(model, lr: float) -> tuple[Callable, Callable]:
    """The float baseline's ``(init, step)``: the same loss (``sse_loss``), the plain gradient, ``optax.sgd``."""
    tx = optax.sgd(lr)

    def init(params):
        return params, tx.init(params)

    def step(params, opt_state, x, y, key=None):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return sse_loss(logits, y), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, logits

    return init, step


# ---- models, variants, data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One kind of step: WAGE with a config, or the float baseline at a matmul precision."""

    name: str
    quantized: bool
    config: WAGEConfig = WAGEConfig()
    precision: str | None = "highest"  # float only: jax.default_matmul_precision while tracing; None: default
    integer: bool = False

    @property
    def stochastic(self) -> bool:
        return self.quantized and self.config.stochastic


VARIANTS = {
    "wage": Variant("wage", True, WAGEConfig()),
    "wage_nearest": Variant("wage_nearest", True, WAGEConfig.nearest()),
    "wage_integer": Variant("wage_integer", True, WAGEConfig(), integer=True),
    "float": Variant("float", False, precision="highest"),
    "float_default": Variant("float_default", False, precision=None),
}


@dataclass(frozen=True)
class ModelSpec:
    """A model and its input shape (per example); ``kwargs`` are the model's size arguments."""

    name: str
    input_shape: tuple[int, ...]
    kwargs: tuple[tuple[str, Any], ...] = ()

    def build(self, variant: Variant):
        cls = MLP if self.name == "mlp" else VGG7
        kwargs = dict(self.kwargs, config=variant.config, quantized=variant.quantized)
        if variant.integer:
            kwargs["integer"] = True
        return cls(**kwargs)

    def describe(self) -> str:
        size = " ".join(f"{k}={v}" for k, v in self.kwargs)
        return f"{self.name} {'x'.join(map(str, self.input_shape))}" + (f" ({size})" if size else "")

    def forward_macs(self) -> int:
        """Multiply-accumulates of one example's forward pass (the matmuls and convolutions)."""
        kw = dict(self.kwargs)
        if self.name == "mlp":
            sizes = [int(np.prod(self.input_shape)), *kw.get("hidden", (1024,)), kw.get("num_classes", 10)]
            return sum(a * b for a, b in zip(sizes, sizes[1:], strict=False))
        h, w, c = self.input_shape
        macs = 0
        for width in kw.get("widths", (128, 256, 512)):
            for pool in (False, True):
                macs += h * w * width * 9 * c
                c = width
                if pool:
                    h, w = h // 2, w // 2
        hidden = kw.get("hidden", 1024)
        return macs + h * w * c * hidden + hidden * kw.get("num_classes", 10)


def model_specs(smoke: bool) -> dict[str, ModelSpec]:
    """The MLP and VGG7 at full size, or shrunk for ``--smoke`` (VGG7 keeps CIFAR's 32x32x3 inputs)."""
    if smoke:
        return {
            "mlp": ModelSpec("mlp", (8, 8), (("hidden", (32,)),)),
            "vgg7": ModelSpec("vgg7", (32, 32, 3), (("widths", (4, 8, 8)), ("hidden", 16))),
        }
    return {"mlp": ModelSpec("mlp", (28, 28), (("hidden", (1024,)),)), "vgg7": ModelSpec("vgg7", (32, 32, 3))}


def has_integer_mode() -> bool:
    """Whether ``wage_jax.models.VGG7`` takes ``integer`` (the WAGE layers' integer arithmetic)."""
    return any(f.name == "integer" for f in dataclasses.fields(VGG7))


def synthetic_batches(spec: ModelSpec, batch: int, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` batches of 8-bit images scaled from ``[0, 1]`` to ``[-1, 1]`` (float32) and int32 labels in [0, 10)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        pixels = rng.integers(0, 256, (batch, *spec.input_shape))
        x = ((pixels / 255.0) * 2.0 - 1.0).astype(np.float32)
        out.append((x, rng.integers(0, 10, batch).astype(np.int32)))
    return out


def init_params(spec: ModelSpec, variant: Variant, seed: int = _SEED_INIT) -> Any:
    """The model's initial parameters as NumPy float32 arrays, drawn once (every device starts from them).

    Drawn with NumPy from the layers' own distributions, ``U(-L, L)`` per kernel: the WAGE initializer's
    ``L = max(1.5 / 2^(bits_W-1), sqrt(3 factor / fan_in))`` (``wage_spec.wage_init_limits``) for WAGE
    layers, Flax's ``variance_scaling(factor, "fan_in", "uniform")``, ``L = sqrt(3 factor / fan_in)``, for
    float ones. (``jax.random.uniform`` takes XLA's CPU backend seconds to compile per kernel shape; the
    draws only need to be the same on both devices.) Shapes and names come from ``jax.eval_shape`` of
    ``model.init``; a model with parameters other than kernels is initialized by its own ``init``.
    """
    model = spec.build(variant)
    x = np.zeros((1, *spec.input_shape), np.float32)

    def flax_init():
        return model.init({"params": jax.random.key(seed), "wage": jax.random.key(seed + 1)}, x)["params"]

    shapes = jax.eval_shape(flax_init)
    paths = jax.tree_util.tree_flatten_with_path(shapes)[0]
    if not all(getattr(path[-1], "key", None) == "kernel" for path, _ in paths):
        with jax.default_device(jax.devices("cpu")[0]):
            return jax.device_get(jax.jit(flax_init)())
    rng = np.random.default_rng(seed)
    cfg = variant.config

    def draw(shape_dtype) -> np.ndarray:
        fan = fan_in(shape_dtype.shape, layout="flax")
        limit = wage_init_limits(fan, cfg.bits_W, cfg.factor)[0] if variant.quantized else math.sqrt(
            3.0 * cfg.factor / fan)
        return rng.uniform(-limit, limit, shape_dtype.shape).astype(np.float32)

    return jax.tree_util.tree_map(draw, shapes)


def _step_keys(n: int) -> np.ndarray:
    """The raw data of ``n`` PRNG keys, one per step: each device wraps the same bits."""
    with jax.default_device(jax.devices("cpu")[0]):
        return np.asarray(jax.random.key_data(jax.random.split(jax.random.key(_SEED_STEPS), n)))


def _precision(variant: Variant):
    if variant.quantized or variant.precision is None:
        return contextlib.nullcontext()
    return jax.default_matmul_precision(variant.precision)


# ---- one compiled step on one device ----------------------------------------------------------------------------


class Runner:
    """A variant's compiled train step on one device, its state, batches and keys; ``run(n)`` takes ``n`` steps.

    ``compile_s``: tracing, lowering and compiling; ``memory``: XLA's memory analysis of the executable
    (bytes); ``flops``: XLA's flop count of one step (None where the backend gives none); ``stablehlo``:
    the step's StableHLO text before XLA's optimizations (None when ``compiled`` was passed in).
    """

    def __init__(self, spec: ModelSpec, variant: Variant, batch: int, device: Any, params_np: Any,
                 batches: list[tuple[np.ndarray, np.ndarray]], key_data: np.ndarray | None,
                 compiled: Any | None = None) -> None:
        self.spec, self.variant, self.batch, self.device = spec, variant, batch, device
        model = spec.build(variant)
        with jax.default_device(device):
            init, step = wage_step(model, variant.config, LR_WAGE) if variant.quantized else float_step(model, LR_FLOAT)
            self.params, self.opt_state = init(jax.device_put(params_np, device))
            self.batches = [jax.device_put(b, device) for b in batches]
            self.keys = [None] if key_data is None else [
                jax.random.wrap_key_data(jax.device_put(k, device)) for k in key_data]
            t0 = time.perf_counter()
            self.stablehlo = None
            if compiled is None:
                with _precision(variant):
                    jitted = jax.jit(step, donate_argnums=(0, 1))
                    x, y = self.batches[0]
                    lowered = jitted.lower(self.params, self.opt_state, x, y, self.keys[0])
                    self.stablehlo = lowered.as_text()
                    compiled = lowered.compile()
            self.compile_s = time.perf_counter() - t0
        self.compiled = compiled
        self.steps_taken = 0
        self.loss = self.logits = None

    def dispatch(self) -> None:
        """Enqueue one step (asynchronous: returns before the device is done)."""
        i = self.steps_taken
        x, y = self.batches[i % len(self.batches)]
        key = self.keys[i % len(self.keys)]
        self.params, self.opt_state, self.loss, self.logits = self.compiled(self.params, self.opt_state, x, y, key)
        self.steps_taken += 1

    def block(self) -> None:
        jax.block_until_ready((self.params, self.opt_state, self.loss))

    def run(self, n: int) -> float:
        """Take ``n`` steps back to back, wait for the last; seconds per step."""
        t0 = time.perf_counter()
        for _ in range(n):
            self.dispatch()
        self.block()
        return (time.perf_counter() - t0) / max(n, 1)

    @property
    def memory(self) -> dict[str, int]:
        try:
            m = self.compiled.memory_analysis()
        except Exception:  # noqa: BLE001 - optional per backend
            return {}
        if m is None:
            return {}
        fields = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
                  "generated_code_size_in_bytes")
        out = {f.replace("_size_in_bytes", ""): int(getattr(m, f)) for f in fields if hasattr(m, f)}
        if {"temp", "argument", "output"} <= out.keys():
            out["total"] = out["temp"] + out["argument"] + out["output"] - out.get("alias", 0)
        return out

    @property
    def flops(self) -> float | None:
        try:
            cost = self.compiled.cost_analysis()
        except Exception:  # noqa: BLE001
            return None
        if isinstance(cost, (list, tuple)):
            cost = cost[0] if cost else None
        value = (cost or {}).get("flops")
        return float(value) if value is not None and value > 0 else None


def make_runner(spec: ModelSpec, variant: Variant, batch: int, device: Any, host: Any = None, steps: int = 8,
                seed: int = 1) -> Runner:
    """A Runner with fresh synthetic batches, parameters drawn on the host, and ``steps`` step keys."""
    params = init_params(spec, variant)
    batches = synthetic_batches(spec, batch, _N_BATCHES, seed)
    keys = _step_keys(steps) if variant.stochastic else None
    return Runner(spec, variant, batch, device, params, batches, keys)


# ---- phase b: trajectories ----------------------------------------------------------------------------------------


def run_trajectory(spec: ModelSpec, variant: Variant, batch: int, steps: int,
                   devices: Devices) -> tuple[dict[str, Any], Runner]:
    """Train ``steps`` steps on the device under test and on the host CPU in lockstep, from one init and one key.

    Per step: how many accumulator elements (all layers) and logits differ in their bits, and whether the
    losses differ. Both runners get the same NumPy parameters, batches and raw key bits; ``wage_sgd``'s
    own key comes from the same seed on both. Returns the figures and the device's runner (its compiled
    step can be timed afterwards).
    """
    params = init_params(spec, variant)
    batches = synthetic_batches(spec, batch, _N_BATCHES, seed=7)
    keys = _step_keys(steps) if variant.stochastic else None
    if devices.same:  # the CPU against itself: one executable, two independent states
        accel = Runner(spec, variant, batch, devices.accel, params, batches, keys)
        host = Runner(spec, variant, batch, devices.host, params, batches, keys, compiled=accel.compiled)
        host.compile_s = accel.compile_s
    else:  # the two compilations run side by side
        with ThreadPoolExecutor(max_workers=2) as pool:
            accel, host = pool.map(lambda d: Runner(spec, variant, batch, d, params, batches, keys),
                                   (devices.accel, devices.host))
    init_differ = tree_diff(jax.device_get(accel.params), jax.device_get(host.params))
    acc_differ, logits_differ, loss_differ = [], [], []
    t0 = time.perf_counter()
    for _ in range(steps):
        accel.dispatch()  # the device runs its step while the host runs its own
        host.dispatch()
        a = jax.device_get((accel.params, accel.loss, accel.logits))
        h = jax.device_get((host.params, host.loss, host.logits))
        acc_differ.append(tree_diff(a[0], h[0]))
        logits_differ.append(tree_diff(a[2], h[2]))
        loss_differ.append(int(tree_diff(a[1], h[1]) > 0))
    run_s = time.perf_counter() - t0
    first = next((i for i, (p, q) in enumerate(zip(acc_differ, logits_differ, strict=True)) if p or q), None)
    n_params = sum(int(np.size(p)) for p in jax.tree_util.tree_leaves(params))
    row = {
        "model": spec.describe(), "variant": variant.name, "config": dataclasses.asdict(variant.config),
        "batch": batch, "steps": steps, "parameters": n_params, "logits per step": batch * 10,
        "initial accumulators differ": init_differ,
        "accumulators differ per step": acc_differ, "logits differ per step": logits_differ,
        "loss differs per step": loss_differ,
        "accumulators differ total": sum(acc_differ), "logits differ total": sum(logits_differ),
        "steps with a difference": sum(1 for p, q in zip(acc_differ, logits_differ, strict=True) if p or q),
        "first differing step": first,
        "final loss": float(np.asarray(jax.device_get(accel.loss))),
        "exact sums guaranteed": _exactness(spec, batch),
        "compile s": {"accel": accel.compile_s, "host": host.compile_s}, "run s": run_s,
    }
    return row, accel


def _exactness(spec: ModelSpec, batch: int) -> dict[str, Any]:
    """The largest weight-gradient sum (terms) and whether 2^24 bounds it in the worst case.

    A and E are 8-bit on a 2^-7 grid with magnitude at most 1, so each product is a multiple of 2^-14 and
    a sum of ``t`` terms is exact in float32 in any order when ``t * 2^14 <= 2^24``, i.e. ``t <= 1024``.
    Dense layers sum over the batch; convolutions over batch x height x width (largest at the input).
    The forward and input-gradient sums have at most 9 x 512 (or 8192) terms on a coarser grid: exact.
    """
    terms = batch if spec.name == "mlp" else batch * spec.input_shape[0] * spec.input_shape[1]
    return {"max terms": terms, "worst case exact": terms * 2**14 <= 2**24}


# ---- phase c: step timings ----------------------------------------------------------------------------------------


def time_variants(runners: dict[str, Runner], rounds: int, steps_per_round: int, warmup: int = 2) -> dict:
    """Time the runners in turn, ``steps_per_round`` steps of each per round; seconds per step per round.

    Interleaving puts every variant under the same conditions (clocks, other processes), so the ratios
    hold when the absolute times drift.
    """
    for r in runners.values():
        r.run(warmup)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, r in runners.items():
            times[name].append(r.run(steps_per_round))
    return times


def speed_row(runner: Runner, times: list[float], device: Any) -> dict[str, Any]:
    """One variant's figures: median ms per step, images/s, compile s, XLA memory and flops, achieved FLOP/s."""
    t = median(times)
    flops = runner.flops
    analytic = 3 * 2 * runner.spec.forward_macs() * runner.batch  # forward + 2x backward
    return {
        "model": runner.spec.describe(), "variant": runner.variant.name, "batch": runner.batch,
        "ms per step": t * 1e3, "min ms": min(times) * 1e3, "max ms": max(times) * 1e3, "rounds": len(times),
        "images/s": runner.batch / t, "compile s": runner.compile_s, "xla memory": runner.memory,
        "xla flops": flops, "analytic flops": analytic,
        "achieved TFLOP/s": analytic / t / 1e12,  # the matmuls' and convolutions' flops (XLA's count adds the rest)
        "device memory after": device_memory(device),
    }


def measure_speed(spec: ModelSpec, variants: list[str], batch: int, devices: Devices, rounds: int,
                  steps_per_round: int, reuse: dict[str, Runner] | None = None,
                  keep: dict[str, Runner] | None = None) -> list[dict[str, Any]]:
    """Build (compiling in parallel threads) and time ``variants`` of ``spec`` at ``batch`` on the device.

    ``reuse``: runners already built, by variant; ``keep``: a dict that receives the runners (by variant),
    for a later phase to time them again without compiling.
    """
    reuse = reuse or {}

    def build(name: str) -> Runner:
        return reuse.get(name) or make_runner(spec, VARIANTS[name], batch, devices.accel, devices.host)

    with ThreadPoolExecutor(max_workers=max(1, len(variants))) as pool:
        runners = dict(zip(variants, pool.map(build, variants), strict=True))
    if keep is not None:
        keep.update(runners)
    times = time_variants(runners, rounds, steps_per_round)
    return [speed_row(runners[n], times[n], devices.accel) for n in variants]


def stablehlo_products(text: str) -> dict[str, int]:
    """The matmuls and convolutions of a step's StableHLO by operand type: ``{"integer", "float32", "other"}``.

    ``integer``: int8 or int16 operands (the integer mode's; their results are int32), ``float32``: the
    float path's. Read before XLA's optimizations, so the counts are the same on every backend.
    """
    import re

    counts = {"integer": 0, "float32": 0, "other": 0}
    for line in text.splitlines():
        if not re.search(r"stablehlo\.(dot_general|convolution)", line) or "->" not in line:
            continue
        operands = re.findall(r"tensor<[^>]*x(\w+)>", line.rsplit("->", 1)[0])
        if operands and all(t in ("i8", "i16") for t in operands):
            counts["integer"] += 1
        elif operands and all(t == "f32" for t in operands):
            counts["float32"] += 1
        else:
            counts["other"] += 1
    return counts


def integer_vs_float_path(spec: ModelSpec, batch: int, devices: Devices, rounds: int, steps_per_round: int,
                          reuse: dict[str, Runner] | None = None) -> dict[str, Any]:
    """The WAGE step in the integer mode (``wage_integer``) and on its float path (``wage``), side by side.

    Both variants are the paper's modes (2-8-8-8, G and E stochastic) at ``batch``, timed in interleaved
    rounds (``time_variants``); the ``wage`` runner of the speed phase is reused when given (no second
    compilation). Where the backend cannot compile the integer step (XLA:GPU implements integer
    convolutions only in some cuDNN patterns), its error is reported and the float path is timed alone.

    Returns:
        ``{"rows": [float path row, integer row], "images/s": {variant: ...}, "integer speedup": float
        path ms / integer ms, "products": {variant: stablehlo_products}, "int8 after XLA": bool}``, or with
        ``"integer unsupported": "<error>"`` and only the float path's row.
    """
    reuse = reuse or {}
    runners = {"wage": reuse.get("wage") or make_runner(spec, VARIANTS["wage"], batch, devices.accel, devices.host)}
    out: dict[str, Any] = {"batch": batch}
    try:
        runners["wage_integer"] = make_runner(spec, VARIANTS["wage_integer"], batch, devices.accel, devices.host)
    except Exception as exc:  # noqa: BLE001 - an unsupported integer convolution is a finding, not a crash
        if is_out_of_memory(exc):
            raise
        out["integer unsupported"] = f"{type(exc).__name__}: {str(exc).strip()[:600]}"
        log(f"    the integer step does not compile here: {out['integer unsupported'][:200]}")
    times = time_variants(runners, rounds, steps_per_round)
    out["rows"] = [speed_row(runners[n], times[n], devices.accel) for n in runners]
    out["images/s"] = {r["variant"]: r["images/s"] for r in out["rows"]}
    out["products"] = {n: stablehlo_products(r.stablehlo) for n, r in runners.items() if r.stablehlo}
    if "wage_integer" in runners:
        ms = {r["variant"]: r["ms per step"] for r in out["rows"]}
        out["integer speedup"] = ms["wage"] / ms["wage_integer"]
        out["int8 after XLA"] = "s8[" in runners["wage_integer"].compiled.as_text()
    return out


def largest_batch(spec: ModelSpec, start: int, cap: int, devices: Devices, budget: Budget, est_s: float,
                  steps: int) -> dict[str, Any]:
    """Double the WAGE batch from ``2 * start`` up to ``cap`` until a step does not fit; time each that does.

    ``steps`` per round at ``start``, proportionally fewer at larger batches (at least 2). Before running,
    XLA's memory analysis is checked against the device's limit (where it has one); an out-of-memory
    error at compile or run time ends the search. Each size needs ``est_s`` of the budget (more above
    batch 1024, in proportion).
    """
    limit = (device_memory(devices.accel) or {}).get("bytes_limit")
    rows, stop = [], None
    batch = 2 * start
    while batch <= cap:
        if not budget.allows(est_s * max(1.0, batch / 1024), f"largest batch: {batch} and above"):
            stop = "time budget"
            break
        try:
            runner = make_runner(spec, VARIANTS["wage"], batch, devices.accel, devices.host)
            need = runner.memory.get("total")
            if limit and need and need > limit:
                stop = f"batch {batch}: XLA needs {need / 2**30:.1f} GiB > limit {limit / 2**30:.1f} GiB"
                break
            per_round = max(2, steps * start // batch)  # about the same number of images at every size
            times = time_variants({"wage": runner}, rounds=3, steps_per_round=per_round, warmup=1)["wage"]
        except Exception as exc:  # noqa: BLE001 - only out-of-memory ends the search quietly
            if not is_out_of_memory(exc):
                raise
            stop = f"batch {batch}: out of memory ({str(exc).splitlines()[0][:160]})"
            break
        rows.append(speed_row(runner, times, devices.accel))
        log(f"    batch {batch}: {rows[-1]['images/s']:,.0f} images/s")
        del runner
        batch *= 2
    if stop is None:
        stop = f"cap {cap} reached"
    return {"rows": rows, "largest": rows[-1]["batch"] if rows else start, "stopped": stop, "cap": cap}
