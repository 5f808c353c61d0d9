"""Train-step time of WAGE (2-8-8-8) against float training, in JAX and in torch+qtorch.

    python -m benchmarks.train_step [--quick] [--markdown]

Models: the MLP 784-1024-10 (batches 64, 128, 256) and the paper's VGG7 at CIFAR-10 size (32x32x3,
widths 128-256-512, dense 1024; batch 32, or 16 with ``--quick``; 128 on a GPU). Inputs are random
in ``[-1, 1]``, labels random: the work per step does not depend on the data.

* JAX WAGE: ``wage_jax.models`` + ``wage_sgd`` (QG stochastic, key per step) in
  ``wage_jax.train.make_train_step`` (jitted, parameters donated).
* JAX float: the same model with ``quantized=False`` and ``optax.sgd`` on the same loss, jitted, donated.
* JAX WAGE all-nearest (diagnostic): every rounding mode nearest, i.e. the same step without its random
  draws (one uniform per weight per step for G, one per activation for E); ``all-nearest overhead``.
* torch WAGE: ``wage_torch.models`` + ``wage_torch.training.WAGETrainer.step`` (the reference loop on
  qtorch's CPU kernels).
* torch float: the same model with ``quantized=False``, ``torch.optim.SGD`` on the same loss.

Each (framework, model, variant) runs in its own subprocess (only that framework imported), so the
processes do not share allocator state or thread pools. A step is timed from the call until its
results are ready (``block_until_ready`` in JAX); the first steps are untimed warm-up (JAX compiles
there), the table gives the median of the timed steps. ``compiles`` is the number of entries in the
jitted step's cache after all steps (1: no recompilation). Workers call
``benchmarks.common.steady_malloc`` first (glibc reuses freed buffers instead of page-faulting fresh
ones every step), unless ``benchmarks.run --default-malloc``.

Memory (``peak MB``), measured after the timings: the peak resident set size during two more steps
above the RSS just before them, with glibc now serving blocks >= 64 KiB by ``mmap`` so that every
freed buffer leaves the RSS; this is the transient working memory of a step (activations, gradients,
temporaries, the new parameters where they are not donated), not what stays resident between steps.
For JAX, ``XLA temp MB`` is XLA's own buffer assignment for the compiled step
(``compiled.memory_analysis().temp_size_in_bytes``); ``device.memory_stats()`` is None on the CPU
(on a GPU its ``peak_bytes_in_use`` is shown instead of the RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import format_table, peak_rss_delta, steady_malloc

ROOT = Path(__file__).resolve().parents[1]
LR_WAGE = 8.0  # the paper's first-phase learning rate
LR_FLOAT = 1e-4  # small enough that float SGD on random data stays finite (timing does not depend on it)


def _plan(quick: bool, gpu: bool) -> list[dict]:
    mlp_batches = [64, 128, 256]
    vgg_batch = 128 if gpu else (16 if quick else 32)
    reps_mlp = dict(warmup=3, min_reps=10 if quick else 20, budget_s=0.5 if quick else 1.5)
    reps_vgg = dict(warmup=2, min_reps=3 if quick else 5, budget_s=0.0)
    runs = []
    frameworks = ["jax"] if gpu else ["jax", "torch"]
    for fw in frameworks:
        for variant in ("wage", "float", "wage_nearest"):
            if variant == "wage_nearest" and fw != "jax":
                continue
            runs.append(dict(framework=fw, model="mlp", variant=variant, batches=mlp_batches, **reps_mlp))
            if variant != "wage_nearest" or not quick:
                runs.append(dict(framework=fw, model="vgg7", variant=variant, batches=[vgg_batch], **reps_vgg))
    return runs


# ---- workers (run in a subprocess) ----------------------------------------------------------------------------


def _time_steps(step, warmup: int, min_reps: int, budget_s: float) -> tuple[list[float], float]:
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    last = first
    for _ in range(warmup - 1):
        t0 = time.perf_counter()
        step()
        last = time.perf_counter() - t0
    reps = max(min_reps, min(200, int(budget_s / max(last, 1e-6))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times, first


def _key(mode: str, seed: int):
    import jax

    return jax.random.key(seed) if mode == "stochastic" else None


def _apply(model):
    def apply_fn(p, xb, key):
        return model.apply({"params": p}, xb, rngs=None if key is None else {"wage": key})

    return apply_fn


def _float_step(model, tx):
    """The float baseline's step: same loss, plain gradient, ``tx`` (optax.sgd)."""
    import jax
    import optax

    from wage_jax.train import sse_loss

    def float_step(p, s, xb, yb, key=None):
        def loss_fn(q):
            logits = model.apply({"params": q}, xb)
            return sse_loss(logits, yb), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss, logits

    return float_step


def _jax_worker(spec: dict) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from wage_jax.models import MLP, VGG7
    from wage_jax.optax import wage_sgd
    from wage_jax.train import make_train_step
    from wage_spec import WAGEConfig

    # 2-8-8-8, G and E stochastic, W and A nearest (the paper's setting); "wage_nearest": every mode nearest,
    # the same step without random numbers (a diagnostic: how much of the overhead the random draws are).
    cfg = WAGEConfig.nearest() if spec["variant"] == "wage_nearest" else WAGEConfig()
    quantized = spec["variant"] != "float"
    if spec["model"] == "mlp":
        model, shape = MLP(hidden=(1024,), config=cfg, quantized=quantized), (28, 28)
    else:
        model, shape = VGG7(config=cfg, quantized=quantized), (32, 32, 3)
    out, steps = [], {}
    init = jax.jit(model.init)  # eager init runs op by op: ~15 s for VGG7
    for batch in spec["batches"]:
        rng = np.random.default_rng(batch)
        x = jnp.asarray(rng.uniform(-1, 1, (batch, *shape)).astype(np.float32))
        y = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
        params = init({"params": jax.random.key(0), "wage": jax.random.key(1)}, x[:1])["params"]
        if quantized:
            opt = wage_sgd(cfg.bits_W, cfg.bits_G, LR_WAGE, mode=cfg.G_mode, key=_key(cfg.G_mode, 2))
            params, opt_state = opt.init(params)
            jitted = make_train_step(_apply(model), opt)
            keys = list(jax.random.split(jax.random.key(3), 8)) if cfg.stochastic else [None]
        else:
            tx = optax.sgd(LR_FLOAT)
            opt_state = tx.init(params)
            jitted = jax.jit(_float_step(model, tx), donate_argnums=(0, 1))
            keys = [None]
        state = {"p": params, "s": opt_state, "i": 0}

        def step(jitted=jitted, keys=keys, state=state, x=x, y=y):
            key = keys[state["i"] % len(keys)]
            state["i"] += 1
            p, s, loss, _ = jitted(state["p"], state["s"], x, y, key)
            jax.block_until_ready((p, s, loss))
            state["p"], state["s"] = p, s

        times, first = _time_steps(step, spec["warmup"], spec["min_reps"], spec["budget_s"])
        compiles = jitted._cache_size() if hasattr(jitted, "_cache_size") else None
        row = dict(batch=batch, times=times, first=first, compiles=compiles, xla_temp=None)
        try:  # the executable the steps ran (cached: no new compilation)
            compiled = jitted.lower(state["p"], state["s"], x, y, keys[0]).compile()
            row["xla_temp"] = compiled.memory_analysis().temp_size_in_bytes
        except Exception:  # noqa: BLE001 - memory analysis is optional per backend
            pass
        stats = jax.devices()[0].memory_stats()
        if stats:
            row["device_peak"] = stats.get("peak_bytes_in_use")
        out.append(row)
        steps[batch] = step
    # RSS peaks last: they change the allocator's policy for the rest of the process.
    cpu = jax.default_backend() == "cpu"
    for row in out:
        row["rss_peak"] = peak_rss_delta(steps[row["batch"]]) if cpu else None
    return out


def _torch_worker(spec: dict) -> list[dict]:
    import numpy as np
    import torch

    from wage_spec import WAGEConfig
    from wage_torch.models import MLP, VGG7
    from wage_torch.training import WAGETrainer, sse_loss

    cfg = WAGEConfig()
    quantized = spec["variant"] == "wage"
    out = []
    steps = {}
    for batch in spec["batches"]:
        torch.manual_seed(0)
        if spec["model"] == "mlp":
            model, shape = MLP(784, hidden=(1024,), config=cfg, quantized=quantized), (1, 28, 28)
        else:
            model, shape = VGG7(config=cfg, quantized=quantized), (3, 32, 32)
        rng = np.random.default_rng(batch)
        x = torch.from_numpy(rng.uniform(-1, 1, (batch, *shape)).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, 10, batch).astype(np.int64))
        if quantized:
            trainer = WAGETrainer(model, cfg)

            def step(trainer=trainer, x=x, y=y):
                trainer.step(x, y, LR_WAGE)

        else:
            opt = torch.optim.SGD(model.parameters(), lr=LR_FLOAT)

            def step(model=model, opt=opt, x=x, y=y):
                opt.zero_grad(set_to_none=True)
                sse_loss(model(x), y).backward()
                opt.step()

        times, first = _time_steps(step, spec["warmup"], spec["min_reps"], spec["budget_s"])
        steps[batch] = step
        out.append(dict(batch=batch, times=times, first=first, compiles=None, xla_temp=None))
    for row in out:
        row["rss_peak"] = peak_rss_delta(steps[row["batch"]])
    return out


def worker_main(spec_json: str) -> None:
    """Entry point of a worker subprocess: run one spec, print one JSON line."""
    spec = json.loads(spec_json)
    if spec.get("steady_malloc", True):
        steady_malloc()
    rows = _jax_worker(spec) if spec["framework"] == "jax" else _torch_worker(spec)
    print("RESULT " + json.dumps(rows))


# ---- driver -------------------------------------------------------------------------------------------------


def measure(quick: bool = False, log=print, steady: bool = True) -> dict:
    """Run every worker; return ``{"gpu": bool, "runs": [(spec, rows)]}``."""
    import jax

    gpu = jax.default_backend() == "gpu"
    results = []
    for spec in _plan(quick, gpu):
        spec["steady_malloc"] = steady
        log(f"  train step: {spec['framework']} {spec['model']} {spec['variant']} batches {spec['batches']}")
        env = dict(os.environ)
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.train_step", "--worker", json.dumps(spec)],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"worker {spec} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        results.append((spec, json.loads(lines[-1][len("RESULT "):])))
    return {"gpu": gpu, "runs": results}


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def index(result: dict) -> dict:
    """``{(framework, model, variant, batch): row}`` with ``row["median"]`` added (seconds)."""
    out = {}
    for spec, rows in result["runs"]:
        for row in rows:
            row = dict(row, median=median(row["times"]))
            out[(spec["framework"], spec["model"], spec["variant"], row["batch"])] = row
    return out


def _peak(r: dict) -> str:
    if r.get("rss_peak") is not None:
        return f"{r['rss_peak'] / 2**20:.1f}"
    if r.get("device_peak") is not None:  # on an accelerator: the device allocator's peak (whole process)
        return f"{r['device_peak'] / 2**20:.1f} (device)"
    return "n/a"


def tables(result: dict, markdown: bool = False) -> str:
    idx = index(result)
    keys = sorted({(m, b) for (_, m, _, b) in idx}, key=lambda k: (k[0] != "mlp", k[1]))
    has_torch = any(fw == "torch" for (fw, _, _, _) in idx)

    def ms(fw, m, v, b):
        r = idx.get((fw, m, v, b))
        return r["median"] if r else float("nan")

    rows = []
    for m, b in keys:
        jw, jf, jn = ms("jax", m, "wage", b), ms("jax", m, "float", b), ms("jax", m, "wage_nearest", b)
        row = [m, b, f"{jw * 1e3:.2f}", f"{jf * 1e3:.2f}", f"{(jw / jf - 1) * 100:+.1f}%",
               "-" if jn != jn else f"{(jn / jf - 1) * 100:+.1f}%"]
        if has_torch:
            tw, tf = ms("torch", m, "wage", b), ms("torch", m, "float", b)
            row += [f"{tw * 1e3:.2f}", f"{tf * 1e3:.2f}", f"{(tw / tf - 1) * 100:+.0f}%", f"{tw / jw:.1f}x",
                    f"{tf / jf:.2f}x"]
        row += [f"{b / jw:.0f}", f"{b / jf:.0f}"]
        if has_torch:
            row += [f"{b / tw:.0f}", f"{b / tf:.0f}"]
        rows.append(row)
    header = ["model", "batch", "JAX WAGE ms", "JAX float ms", "WAGE overhead", "all-nearest overhead"]
    if has_torch:
        header += ["torch WAGE ms", "torch float ms", "torch overhead", "WAGE torch/JAX", "float torch/JAX"]
    header += ["JAX WAGE img/s", "JAX float img/s"]
    if has_torch:
        header += ["torch WAGE img/s", "torch float img/s"]
    step_table = "Train step (median)\n" + format_table(header, rows, markdown)

    mem_rows = []
    for (fw, m, v, b), r in sorted(idx.items(), key=lambda kv: (kv[0][1] != "mlp", kv[0][3], kv[0][0], kv[0][2])):
        t = r["times"]
        mem_rows.append([
            fw, m, v, b, len(t), f"{min(t) * 1e3:.2f}", f"{max(t) * 1e3:.2f}", f"{r['first']:.2f}",
            "-" if r["compiles"] is None else r["compiles"],
            _peak(r),
            "-" if r.get("xla_temp") is None else f"{r['xla_temp'] / 2**20:.1f}",
        ])
    detail = "Steps timed, spread, first call (s, JAX: compile), compiles, peak memory\n" + format_table(
        ["framework", "model", "variant", "batch", "steps", "min ms", "max ms", "first s", "compiles",
         "peak MB", "XLA temp MB"], mem_rows, markdown)
    note = ""
    if result["gpu"]:
        note = ("\n(GPU: JAX only; the torch here is a CPU build, and qtorch's CUDA kernels round differently"
                " from its CPU kernel, SPEC §1.)")
    return step_table + "\n\n" + detail + note


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return
    print(tables(measure(args.quick), args.markdown))


if __name__ == "__main__":
    main()
