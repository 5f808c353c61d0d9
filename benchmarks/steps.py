"""Train steps for the suite: one step builder (``wage_jax.make_train_step`` over ``wage_jax.models``), lockstep
trajectories on the device against the host CPU, and interleaved step timings.

Variants of a step (``VARIANTS``): ``wage`` (2-8-8-8, W and A nearest, G and E stochastic: the paper's modes,
float32 products, the backend's convolution), ``wage nearest`` (every mode nearest), the convolution lowerings
(``wage patches``; the integer mode ``wage int conv``, ``wage int int8_f32``, ``wage int patches``: see
``wage_jax._src.conv_lowering``), and the float baseline: the same architecture unquantized with
``optax.sgd``, at ``Precision.HIGHEST`` (``float``, float32 products as the WAGE layers compute them) and at
the backend's default (``float default``: TF32 on NVIDIA GPUs). Inputs are synthetic 8-bit images scaled to
``[-1, 1]`` and random labels: the work per step, and the bits a backend produces, do not depend on real data.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import optax

from benchmarks.core import Budget, differing_elements, log, median, tree_differing_elements
from wage_jax import clip_params, make_train_step, wage_sgd
from wage_jax.models import MLP, VGG7, LeNet5
from wage_spec import WAGEConfig, fan_in, wage_init_limits

__all__ = ["LOWERINGS", "VARIANTS", "ModelSpec", "Runner", "Variant", "make_runner", "products", "time_interleaved",
           "trajectories"]

LR_WAGE, LR_FLOAT = 8.0, 1e-4  # the paper's first-phase rate; a float rate small enough to stay finite
_SEED_INIT, _SEED_G, _SEED_KEYS, _N_BATCHES = 0, 2, 3, 4


@dataclass(frozen=True)
class Variant:
    name: str
    quantized: bool = True
    nearest: bool = False  # every rounding mode nearest (else the paper's: G and E stochastic)
    integer: bool = False
    lowering: str = "conv"
    precision: str | None = "highest"  # the float baseline's matmul precision; None: the backend's default

    @property
    def config(self) -> WAGEConfig:
        return WAGEConfig.nearest() if self.nearest else WAGEConfig()

    @property
    def stochastic(self) -> bool:
        return self.quantized and self.config.stochastic


VARIANTS = {v.name: v for v in (
    Variant("wage"), Variant("wage nearest", nearest=True), Variant("wage patches", lowering="patches"),
    Variant("wage int conv", integer=True), Variant("wage int int8_f32", integer=True, lowering="int8_f32"),
    Variant("wage int patches", integer=True, lowering="patches"),
    Variant("wage nearest patches", nearest=True, lowering="patches"),
    Variant("float", quantized=False), Variant("float default", quantized=False, precision=None),
)}
# every lowering of the paper's modes; on the CPU all give the same bits (tests/test_jax_conv_lowering.py)
LOWERINGS = ("wage", "wage patches", "wage int conv", "wage int int8_f32", "wage int patches")


@dataclass(frozen=True)
class ModelSpec:
    """A ``wage_jax.models`` class name, its input shape per example and its size arguments."""

    name: str
    input_shape: tuple[int, ...]
    kwargs: tuple[tuple[str, Any], ...] = ()

    def build(self, v: Variant):
        cls = {"mlp": MLP, "vgg7": VGG7, "lenet5": LeNet5}[self.name]
        return cls(**dict(self.kwargs), config=v.config, quantized=v.quantized, integer=v.integer,
                   lowering=v.lowering)

    def describe(self) -> str:
        size = " ".join(f"{k}={v}" for k, v in self.kwargs)
        return f"{self.name} {'x'.join(map(str, self.input_shape))}" + (f" ({size})" if size else "")


def init_params(spec: ModelSpec, v: Variant) -> Any:
    """Initial kernels as NumPy float32, drawn once for every device from the layers' own ``U(-L, L)``:
    ``wage_spec.wage_init_limits`` for WAGE layers, Flax's ``variance_scaling(factor, "fan_in", "uniform")``
    for float ones (jax.random would cost the CPU backend a compilation per kernel shape)."""
    model = spec.build(v)
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "wage": jax.random.key(1)},
                                               np.zeros((1, *spec.input_shape), np.float32))["params"])
    rng = np.random.default_rng(_SEED_INIT)

    def draw(s):
        fan = fan_in(s.shape, layout="flax")
        limit = wage_init_limits(fan, v.config.bits_W, v.config.factor)[0] if v.quantized else math.sqrt(
            3.0 * v.config.factor / fan)
        return rng.uniform(-limit, limit, s.shape).astype(np.float32)

    return jax.tree_util.tree_map(draw, shapes)


def batches(spec: ModelSpec, batch: int, seed: int = 7) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(((rng.integers(0, 256, (batch, *spec.input_shape)) / 255.0) * 2.0 - 1.0).astype(np.float32),
             rng.integers(0, 10, batch).astype(np.int32)) for _ in range(_N_BATCHES)]


def step_keys(n: int) -> np.ndarray:
    """The raw bits of ``n`` PRNG keys, one per step: every device wraps the same bits."""
    with jax.default_device(jax.devices("cpu")[0]):
        return np.asarray(jax.random.key_data(jax.random.split(jax.random.key(_SEED_KEYS), n)))


class Runner:
    """One variant's train step compiled ahead of time on one device, with its state; ``run(n)`` takes ``n`` steps.

    The step is ``wage_jax.make_train_step`` with ``wage_sgd`` (WAGE; accumulators start clipped) or
    ``optax.sgd`` (float), jitted with the parameters donated. ``compile_s``, ``memory`` (XLA's analysis,
    MB) and ``flops`` (XLA's count) describe the executable the timed steps run.
    """

    def __init__(self, spec: ModelSpec, v: Variant, device: Any, params: Any, data: list, keys: np.ndarray | None,
                 compiled: Any = None):
        self.spec, self.variant, self.device, self.batch = spec, v, device, data[0][0].shape[0]
        model = spec.build(v)
        cfg = v.config
        with jax.default_device(device):  # wage_sgd's key lives on the device that runs the step
            tx = wage_sgd(cfg.bits_W, cfg.bits_G, LR_WAGE, mode=cfg.G_mode,
                          key=jax.random.key(_SEED_G) if cfg.G_mode == "stochastic" else None) if v.quantized \
                else optax.sgd(LR_FLOAT)
            step = make_train_step(
                lambda p, x, k: model.apply({"params": p}, x, rngs=None if k is None else {"wage": k}), tx,
                jit=False)
            # one compilation for the initial state (eager clipping would compile each operation per shape)
            self.params, self.opt_state = jax.jit(lambda p: (lambda q: (q, tx.init(q)))(
                clip_params(p, cfg.bits_W) if v.quantized else p))(jax.device_put(params, device))
            self.data = [jax.device_put(b, device) for b in data]
            self.keys = [None] if keys is None else [jax.random.wrap_key_data(jax.device_put(k, device)) for k in keys]
            t0 = time.perf_counter()
            precision = jax.default_matmul_precision(v.precision) if v.precision and not v.quantized \
                else contextlib.nullcontext()
            with precision:
                lowered = jax.jit(step, donate_argnums=(0, 1)).lower(self.params, self.opt_state, *self.data[0],
                                                                     self.keys[0])
                self.stablehlo = lowered.as_text()
                self.compiled = compiled or lowered.compile()
            self.compile_s = time.perf_counter() - t0
        self.steps = 0
        self.loss = self.logits = None

    def dispatch(self) -> None:
        x, y = self.data[self.steps % len(self.data)]
        key = self.keys[self.steps % len(self.keys)]
        self.params, self.opt_state, self.loss, self.logits = self.compiled(self.params, self.opt_state, x, y, key)
        self.steps += 1

    def run(self, n: int) -> float:
        """``n`` steps dispatched back to back, one wait for the last: seconds per step."""
        t0 = time.perf_counter()
        for _ in range(n):
            self.dispatch()
        jax.block_until_ready((self.params, self.loss))
        return (time.perf_counter() - t0) / max(n, 1)

    @property
    def memory(self) -> dict[str, float]:
        try:
            m = self.compiled.memory_analysis()
            return {k: getattr(m, f"{k}_size_in_bytes") / 2**20 for k in ("temp", "argument", "output")}
        except Exception:  # noqa: BLE001 - optional per backend
            return {}

    @property
    def flops(self) -> float | None:
        try:
            cost = self.compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            return float(cost["flops"]) if cost.get("flops", 0) > 0 else None
        except Exception:  # noqa: BLE001
            return None


def make_runner(spec: ModelSpec, v: Variant, batch: int, device: Any, steps: int = 8) -> Runner:
    return Runner(spec, v, device, init_params(spec, v), batches(spec, batch, seed=1),
                  step_keys(steps) if v.stochastic else None)


def products(stablehlo: str) -> dict[str, int]:
    """The step's matmuls and convolutions by operand type, read before XLA's optimizations (the same on every
    backend): ``integer`` (int8/int16 operands), ``float32``, ``other``; and the convolutions among them."""
    counts = {"integer": 0, "float32": 0, "other": 0, "convolutions": 0}
    for line in stablehlo.splitlines():
        found = re.search(r"stablehlo\.(dot_general|convolution)", line)
        if not found or "->" not in line:
            continue
        counts["convolutions"] += found.group(1) == "convolution"
        operands = re.findall(r"tensor<[^>]*x(\w+)>", line.rsplit("->", 1)[0])
        kind = "integer" if operands and all(t in ("i8", "i16") for t in operands) else (
            "float32" if operands and all(t == "f32" for t in operands) else "other")
        counts[kind] += 1
    return counts


def trajectories(spec: ModelSpec, names: list[str], batch: int, steps: int, device: Any, host: Any,
                 budget: Budget, compile_est_s: float, keep: dict[str, Runner],
                 headroom: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each variant in ``names`` trained ``steps`` steps on ``device`` against one host CPU reference in lockstep.

    The reference is the first variant's configuration on the host's backend convolution; every variant with
    the same rounding modes (all lowerings of the paper's modes) is compared with it, since on the CPU every
    lowering gives the same bits. One init, the same batches, the same raw key bits on both. Per variant:
    accumulator elements and logits whose bits differ, per step. A variant that does not compile on the
    device is reported with its error. A variant starts only if ``compile_est_s``, raised to the slowest
    compilation so far, fits in the budget. The device runners go to ``keep`` (timed later without recompiling).
    With ``headroom``, each host reference also measures its steps' sums (``benchmarks.headroom.measure``):
    ``headroom["<model> b<batch>[ nearest]"] = {layer: {product: [bound / 2^24 per step]}}``.
    """
    from benchmarks import headroom as exactness

    rows: list[dict[str, Any]] = []
    refs: dict[bool, list] = {}
    ref_compiled: dict[bool, Any] = {}
    for name in names:
        v = VARIANTS[name]
        # a new host reference also compiles its step and, with headroom, its probe
        if not budget.allows(compile_est_s * (1 if v.nearest in refs else 2 + (headroom is not None)),
                             f"trajectory {spec.name} {name}"):
            continue
        params, data = init_params(spec, v), batches(spec, batch)
        keys = step_keys(steps) if v.stochastic else None
        if v.nearest not in refs:  # the host reference of these rounding modes: backend convolution, float path
            ref = Runner(spec, Variant("reference", nearest=v.nearest), host, params, data, keys)
            ref_compiled[v.nearest] = ref.compiled
            refs[v.nearest] = []

            def record(ref=ref, kept=refs[v.nearest]):
                kept.append(jax.device_get((ref.params, ref.logits)))

            if headroom is not None:
                label = f"{spec.name} b{batch}" + (" nearest" if v.nearest else "")
                headroom[label] = exactness.measure(ref, steps, record)
            else:
                for _ in range(steps):
                    ref.dispatch()
                    record()
            del ref
        out = {"model": spec.describe(), "variant": name, "batch": batch, "steps": steps}
        same = device == host and not v.integer and v.lowering == "conv"  # the reference's own program
        try:
            runner = Runner(spec, v, device, params, data, keys, compiled=ref_compiled[v.nearest] if same else None)
        except Exception as exc:  # noqa: BLE001 - a step the backend cannot compile is a finding
            rows.append({**out, "error": f"does not compile: {type(exc).__name__}: {str(exc).strip()[:300]}"})
            log(f"  {name}: {rows[-1]['error'][:160]}")
            continue
        acc, logits = [], []
        for params_ref, logits_ref in refs[v.nearest]:
            runner.dispatch()
            p, lg = jax.device_get((runner.params, runner.logits))
            acc.append(tree_differing_elements(p, params_ref))
            logits.append(differing_elements(lg, logits_ref))
        keep[name] = runner
        compile_est_s = max(compile_est_s, runner.compile_s)  # the next variant is checked against this one's cost
        first = next((i for i, (a, b) in enumerate(zip(acc, logits, strict=True)) if a or b), None)
        rows.append({**out, "accumulators differ per step": acc, "logits differ per step": logits,
                     "differ total": sum(acc) + sum(logits), "first differing step": first,
                     "compile s": runner.compile_s, "products": products(runner.stablehlo)})
        log(f"  {name}: {sum(acc)} accumulator elements, {sum(logits)} logits differ over {steps} steps")
    return rows


def time_interleaved(runners: dict[str, Runner], rounds: int, steps_per_round: int,
                     budget: Budget | None = None) -> dict[str, float]:
    """Median seconds per step of each runner, timed in turn ``steps_per_round`` steps at a time (so every
    variant sees the same clocks and the same other processes), after one warm-up step each; with a
    ``budget``, as many rounds (at least one) as the warm-up's step times say fit in it."""
    one = sum(r.run(1) for r in runners.values())
    if budget is not None and one * steps_per_round * rounds > budget.remaining():
        fit = max(1, int(budget.remaining() / max(one * steps_per_round, 1e-9)))
        budget.skipped.append(f"{rounds - fit} of {rounds} timing rounds of {', '.join(runners)}")
        rounds = fit
    times: dict[str, list[float]] = {n: [] for n in runners}
    for _ in range(rounds):
        for n, r in runners.items():
            times[n].append(r.run(steps_per_round))
    return {n: median(t) for n, t in times.items()}


def torch_step_s(model_name: str, batch: int, rounds: int, steps: int) -> dict[str, float]:
    """wage_torch's reference loop (``WAGETrainer.step``) and torch float SGD on the same models, s per step."""
    import torch

    from wage_torch.models import MLP as TMLP
    from wage_torch.models import VGG7 as TVGG7
    from wage_torch.training import WAGETrainer, sse_loss

    rng = np.random.default_rng(batch)
    shape = (1, 28, 28) if model_name == "mlp" else (3, 32, 32)
    x = torch.from_numpy(rng.uniform(-1, 1, (batch, *shape)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, batch))
    out = {}
    for quantized in (True, False):
        torch.manual_seed(0)
        cfg = WAGEConfig()
        model = TMLP(784, hidden=(1024,), config=cfg, quantized=quantized) if model_name == "mlp" \
            else TVGG7(config=cfg, quantized=quantized)
        if quantized:
            trainer = WAGETrainer(model, cfg)

            def step(trainer=trainer):
                trainer.step(x, y, LR_WAGE)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=LR_FLOAT)

            def step(model=model, opt=opt):
                opt.zero_grad(set_to_none=True)
                sse_loss(model(x), y).backward()
                opt.step()
        step()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            times.append((time.perf_counter() - t0) / steps)
        out["torch wage" if quantized else "torch float"] = median(times)
    return out
