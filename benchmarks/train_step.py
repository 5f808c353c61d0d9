"""Train-step time of WAGE (2-8-8-8) against float training, in JAX and in torch+qtorch.

    python -m benchmarks.train_step [--quick] [--markdown]

Models: the MLP 784-1024-10 (batches 64, 128, 256) and the paper's VGG7 at CIFAR-10 size (32x32x3,
widths 128-256-512, dense 1024; batch 32, or 16 with ``--quick``; 128 on a GPU). Inputs are random
in ``[-1, 1]``, labels random: the work per step does not depend on the data.

* JAX WAGE: ``wage_jax.models`` + ``wage_sgd`` (QG stochastic, key per step) in
  ``wage_jax.make_train_step`` (jitted, parameters donated).
* JAX float: the same model with ``quantized=False`` and ``optax.sgd`` on the same loss, in the same
  ``make_train_step``.
* JAX WAGE all-nearest (diagnostic): every rounding mode nearest, i.e. the same step without its random
  draws (one uniform per weight per step for G, one per activation for E); ``all-nearest overhead``.
* torch WAGE: ``wage_torch.models`` + ``wage_torch.training.WAGETrainer.step`` (the reference loop on
  qtorch's CPU kernels).
* torch float: the same model with ``quantized=False``, ``torch.optim.SGD`` on the same loss.

Each (framework, model) runs in its own subprocess (only that framework imported, so XLA's and
torch's thread pools never compete), and within it the variants are timed in turn, one step of each
per round, so that all of them see the same load from other processes on a shared machine. A step is
timed from the call until its results are ready (``block_until_ready`` in JAX); the first steps are
untimed warm-up (JAX compiles there), the table gives the median of the timed steps. ``compiles`` is
the number of entries in the jitted step's cache after all steps (1: no recompilation). Workers call
``benchmarks.common.steady_malloc`` first (glibc reuses freed buffers instead of page-faulting fresh
ones every step), unless ``benchmarks.run --default-malloc``.

Memory (``peak MB``), measured after the timings: the peak resident set size during two more steps
above the RSS just before them, with glibc now serving blocks >= 64 KiB by ``mmap`` so that every
freed buffer leaves the RSS; this is the transient working memory of a step (activations, gradients,
temporaries, the new parameters where they are not donated), not what stays resident between steps.
For JAX, ``XLA temp MB`` is XLA's own buffer assignment for the compiled step
(``compiled.memory_analysis().temp_size_in_bytes``); ``device.memory_stats()`` is None on the CPU
(on a GPU its ``peak_bytes_in_use`` is shown instead of the RSS).

``others' cores``: how many cores other processes kept busy while the worker ran (``/proc/stat`` minus
this process tree). torch's OpenMP pool suffers most from it: with 2 threads on 2 cores and another
process on one of them, each parallel region waits for a descheduled thread (float MLP steps of 2-3 ms
on an idle machine were measured at ~100 ms that way). Figures from rows well above 0 are not clean.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import CpuShare, format_table, peak_rss_delta, steady_malloc

ROOT = Path(__file__).resolve().parents[1]
LR_WAGE = 8.0  # the paper's first-phase learning rate
LR_FLOAT = 1e-4  # small enough that float SGD on random data stays finite (timing does not depend on it)


def _plan(quick: bool, gpu: bool) -> list[dict]:
    """One worker per (framework, model); each interleaves its variants step by step."""
    mlp_batches = [64, 128, 256]
    vgg_batch = 128 if gpu else (16 if quick else 32)
    reps_mlp = dict(warmup=3, min_reps=10 if quick else 20, budget_s=0.6 if quick else 2.0)
    reps_vgg = dict(warmup=2, min_reps=3 if quick else 5, budget_s=0.0)
    jax_mlp = ["wage", "float", "wage_nearest"]
    jax_vgg = ["wage", "float"] if quick else ["wage", "float", "wage_nearest"]
    runs = [
        dict(framework="jax", model="mlp", variants=jax_mlp, batches=mlp_batches, **reps_mlp),
        dict(framework="jax", model="vgg7", variants=jax_vgg, batches=[vgg_batch], **reps_vgg),
    ]
    if not gpu:
        runs += [
            dict(framework="torch", model="mlp", variants=["wage", "float"], batches=mlp_batches, **reps_mlp),
            dict(framework="torch", model="vgg7", variants=["wage", "float"], batches=[vgg_batch], **reps_vgg),
        ]
    return runs


# ---- workers (run in a subprocess) ----------------------------------------------------------------------------


def _time_interleaved(steps: dict, warmup: int, min_reps: int, budget_s: float) -> dict:
    """Time the step functions of ``steps`` (variant -> callable) in turn, one step of each per round.

    Interleaving puts every variant under the same load from other processes (which drifts from second to
    second on a shared machine), so their ratios stay meaningful when the absolute times do not.
    Returns ``variant -> (times, first)``; ``first`` is the first call (JAX: tracing and compilation).
    """
    first, last = {}, {}
    for v, step in steps.items():
        t0 = time.perf_counter()
        step()
        first[v] = last[v] = time.perf_counter() - t0
    for _ in range(warmup - 1):
        for v, step in steps.items():
            t0 = time.perf_counter()
            step()
            last[v] = time.perf_counter() - t0
    reps = max(min_reps, min(200, int(budget_s / max(sum(last.values()), 1e-6))))
    times: dict = {v: [] for v in steps}
    for _ in range(reps):
        for v, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[v].append(time.perf_counter() - t0)
    return {v: (times[v], first[v]) for v in steps}


def _key(mode: str, seed: int):
    import jax

    return jax.random.key(seed) if mode == "stochastic" else None


def _jax_step(model_name: str, variant: str, x, y):
    """``(step, info)``: a closure running one donated, jitted train step of ``variant``; ``info()`` -> dict."""
    import jax
    import optax

    from wage_jax import clip_params, make_train_step, wage_sgd
    from wage_jax.models import MLP, VGG7
    from wage_spec import WAGEConfig

    # 2-8-8-8, G and E stochastic, W and A nearest (the paper's setting); "wage_nearest": every mode nearest,
    # the same step without random numbers (a diagnostic: how much of the overhead the random draws are).
    cfg = WAGEConfig.nearest() if variant == "wage_nearest" else WAGEConfig()
    quantized = variant != "float"
    cls = MLP if model_name == "mlp" else VGG7
    model = cls(hidden=(1024,), config=cfg, quantized=quantized) if cls is MLP else cls(config=cfg, quantized=quantized)
    # Eager init runs op by op (~15 s for VGG7); jitted, it compiles once.
    params = jax.jit(model.init)({"params": jax.random.key(0), "wage": jax.random.key(1)}, x[:1])["params"]
    if quantized:
        tx = wage_sgd(cfg.bits_W, cfg.bits_G, LR_WAGE, mode=cfg.G_mode, key=_key(cfg.G_mode, 2))
        params = clip_params(params, cfg.bits_W)
        keys = list(jax.random.split(jax.random.key(3), 8)) if cfg.stochastic else [None]
    else:
        tx = optax.sgd(LR_FLOAT)
        keys = [None]
    opt_state = tx.init(params)
    jitted = make_train_step(
        lambda p, xb, k: model.apply({"params": p}, xb, rngs=None if k is None else {"wage": k}), tx)
    state = {"p": params, "s": opt_state, "i": 0}

    def step():
        key = keys[state["i"] % len(keys)]
        state["i"] += 1
        p, s, loss, _ = jitted(state["p"], state["s"], x, y, key)
        jax.block_until_ready((p, s, loss))
        state["p"], state["s"] = p, s

    def info() -> dict:
        out = {"compiles": jitted._cache_size() if hasattr(jitted, "_cache_size") else None, "xla_temp": None}
        try:  # the executable the steps ran (cached: no new compilation)
            compiled = jitted.lower(state["p"], state["s"], x, y, keys[0]).compile()
            out["xla_temp"] = compiled.memory_analysis().temp_size_in_bytes
            out.update(hlo_summary(compiled))
        except Exception:  # noqa: BLE001 - memory and cost analysis are optional per backend
            pass
        return out

    return step, info


def hlo_summary(compiled) -> dict:
    """What the compiled step does, from XLA itself: bytes accessed and flops (``cost_analysis``), and in the
    optimized HLO the number of fusions (each a pass over memory) and of reductions."""
    import re

    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    text = compiled.as_text()
    entry = text[text.find("ENTRY"):]
    copies = [_elements(m.group(1)) * 4 for m in re.finditer(r"= f32\[([\d,]+)\]\S* copy\(", entry)]
    return {
        "bytes_accessed": cost.get("bytes accessed"),
        "flops": cost.get("flops"),
        "fusions": len(re.findall(r"^\s*(?:ROOT )?%?\S+ = \S+ fusion\(", text, re.M)),
        "reduces": len(re.findall(r" reduce\(", text)),
        # whole-array float32 copies in the entry computation (>= 64 KiB): donated buffers XLA copies first
        "copies_mb": sum(b for b in copies if b >= 2**16) / 2**20,
    }


def _elements(dims: str) -> int:
    n = 1
    for d in dims.split(","):
        n *= int(d)
    return n


def _torch_step(model_name: str, variant: str, x, y):
    import torch

    from wage_spec import WAGEConfig
    from wage_torch.models import MLP, VGG7
    from wage_torch.training import WAGETrainer, sse_loss

    cfg = WAGEConfig()
    quantized = variant == "wage"
    torch.manual_seed(0)
    if model_name == "mlp":
        model = MLP(784, hidden=(1024,), config=cfg, quantized=quantized)
    else:
        model = VGG7(config=cfg, quantized=quantized)
    if quantized:
        trainer = WAGETrainer(model, cfg)

        def step():
            trainer.step(x, y, LR_WAGE)

    else:
        opt = torch.optim.SGD(model.parameters(), lr=LR_FLOAT)

        def step():
            opt.zero_grad(set_to_none=True)
            sse_loss(model(x), y).backward()
            opt.step()

    return step, lambda: {"compiles": None, "xla_temp": None}


def _worker(spec: dict) -> list[dict]:
    """All variants of one (framework, model), every batch; rows ``{variant, batch, times, first, ...}``."""
    import numpy as np

    fw, model_name = spec["framework"], spec["model"]
    if fw == "jax":
        import jax
        import jax.numpy as jnp

        convert = jnp.asarray
        accelerator = jax.default_backend() != "cpu"
        make = _jax_step
        shape = (28, 28) if model_name == "mlp" else (32, 32, 3)
        label_dtype = np.int32
    else:
        import torch

        convert = torch.from_numpy
        accelerator = False
        make = _torch_step
        shape = (1, 28, 28) if model_name == "mlp" else (3, 32, 32)
        label_dtype = np.int64
    rows, all_steps = [], []
    for batch in spec["batches"]:
        rng = np.random.default_rng(batch)
        x = convert(rng.uniform(-1, 1, (batch, *shape)).astype(np.float32))
        y = convert(rng.integers(0, 10, batch).astype(label_dtype))
        built = {v: make(model_name, v, x, y) for v in spec["variants"]}
        timed = _time_interleaved({v: b[0] for v, b in built.items()}, spec["warmup"], spec["min_reps"],
                                  spec["budget_s"])
        for v, (step, info) in built.items():
            row = dict(variant=v, batch=batch, times=timed[v][0], first=timed[v][1], rss_peak=None, **info())
            if fw == "jax" and accelerator:
                import jax

                stats = jax.devices()[0].memory_stats() or {}
                row["device_peak"] = stats.get("peak_bytes_in_use")
            rows.append(row)
            all_steps.append(step)
    if not accelerator:  # RSS peaks last: they change the allocator's policy for the rest of the process
        for row, step in zip(rows, all_steps, strict=True):
            row["rss_peak"] = peak_rss_delta(step)
    return rows


def worker_main(spec_json: str) -> None:
    """Entry point of a worker subprocess: run one spec, print one JSON line."""
    spec = json.loads(spec_json)
    if spec.get("steady_malloc", True):
        steady_malloc()
    print("RESULT " + json.dumps(_worker(spec)))


# ---- driver -------------------------------------------------------------------------------------------------


def measure(quick: bool = False, log=print, steady: bool = True) -> dict:
    """Run every worker; return ``{"gpu": bool, "runs": [(spec, rows)]}``."""
    import jax

    gpu = jax.default_backend() == "gpu"
    results = []
    for spec in _plan(quick, gpu):
        spec["steady_malloc"] = steady
        log(f"  train step: {spec['framework']} {spec['model']} {spec['variants']} batches {spec['batches']}")
        env = dict(os.environ)
        try:
            share = CpuShare().start()
        except (OSError, ValueError, IndexError):
            share = None
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.train_step", "--worker", json.dumps(spec)],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"worker {spec} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        rows = json.loads(lines[-1][len("RESULT "):])
        if share is not None:
            others, wall, _ = share.stop()
            for row in rows:
                row["others"] = others / wall  # cores kept busy by other processes while this worker ran
        results.append((spec, rows))
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
            out[(spec["framework"], spec["model"], row["variant"], row["batch"])] = row
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

    def best(fw, m, v, b):
        r = idx.get((fw, m, v, b))
        return min(r["times"]) if r else float("nan")

    ratio_rows = []
    for m, b in keys:
        jw, jf, jn = best("jax", m, "wage", b), best("jax", m, "float", b), best("jax", m, "wage_nearest", b)
        row = [m, b, f"{(jw / jf - 1) * 100:+.1f}%", "-" if jn != jn else f"{(jn / jf - 1) * 100:+.1f}%"]
        if has_torch:
            tw, tf = best("torch", m, "wage", b), best("torch", m, "float", b)
            row += [f"{tw / jw:.1f}x", f"{tf / jf:.2f}x"]
        ratio_rows.append(row)
    ratio_header = ["model", "batch", "WAGE overhead", "all-nearest overhead"]
    if has_torch:
        ratio_header += ["WAGE torch/JAX", "float torch/JAX"]
    step_table += (
        "\n\nThe same ratios from each variant's fastest step (other processes only ever add time, so these"
        " are the least disturbed by them; the targets use the medians above)\n"
        + format_table(ratio_header, ratio_rows, markdown)
    )

    mem_rows = []
    for (fw, m, v, b), r in sorted(idx.items(), key=lambda kv: (kv[0][1] != "mlp", kv[0][3], kv[0][0], kv[0][2])):
        t = r["times"]
        mem_rows.append([
            fw, m, v, b, len(t), f"{min(t) * 1e3:.2f}", f"{max(t) * 1e3:.2f}", f"{r['first']:.2f}",
            "-" if r["compiles"] is None else r["compiles"],
            _peak(r),
            "-" if r.get("xla_temp") is None else f"{r['xla_temp'] / 2**20:.1f}",
            "-" if r.get("bytes_accessed") is None else f"{r['bytes_accessed'] / 2**20:.1f}",
            "-" if r.get("fusions") is None else f"{r['fusions']}/{r['reduces']}",
            "?" if r.get("others") is None else f"{r['others']:.2f}",
        ])
    detail = ("Steps timed, spread, first call (s, JAX: compile), compiles, peak memory; from the compiled step:"
              " XLA's temp buffers, bytes accessed (cost_analysis) and fusions/reduces in the optimized HLO;"
              " others' cores: CPU used by other processes during the worker (0 = idle machine)\n") + format_table(
        ["framework", "model", "variant", "batch", "steps", "min ms", "max ms", "first s", "compiles",
         "peak MB", "XLA temp MB", "HLO MB accessed", "fusions/reduces", "others' cores"], mem_rows, markdown)
    note = ""
    if result["gpu"]:
        note = ("\n(GPU: JAX only; the torch here is a CPU build, and qtorch's CUDA kernels round differently"
                " from its CPU kernel, docs/contract.md §1.)")
    return step_table + "\n\n" + detail + note


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--torch-backend", choices=("qtorch", "torch"), help="wage_torch's kernel for the torch rows (default: qtorch)"
    )
    args = parser.parse_args(argv)
    if args.torch_backend:  # read by wage_torch in this process and in the worker processes
        os.environ["WAGE_TORCH_BACKEND"] = args.torch_backend
    if args.worker:
        worker_main(args.worker)
        return
    print(tables(measure(args.quick), args.markdown))


if __name__ == "__main__":
    main()
