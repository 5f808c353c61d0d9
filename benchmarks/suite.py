"""The benchmark suite, on any backend: ``python -m benchmarks [--platform cpu|gpu|tpu] [--smoke] [--out DIR]``.

Phases (``PHASES``, in order; each checks the budget before it starts and before each compilation):

* parity (device only): the parity corpus on the device and on the host CPU, bit for bit; QW's division
  cases (scale not a power of two) counted apart (``benchmarks.parity``);
* trajectories (device only): the MLP and VGG7 trained in lockstep on the device and on the host CPU, one
  init and one key, for every convolution lowering: differing accumulator and logit bits per step;
* quantizers: throughput against the copy bandwidth, wage_torch beside it on the CPU; the float32 matmul rate;
* steps: train-step time of WAGE against float, all-nearest, each lowering, torch on the CPU; which lowering
  is exact (trajectories) and fastest;
* parallel: the data-parallel step over the platform's devices against the plain step (same bits);
* inference: onnxruntime on the host CPU, the integer ONNX export against the float32 one (``benchmarks.inference``);
* profile (device only, with ``--out``): a ``jax.profiler`` trace of three VGG7 WAGE steps in ``DIR/trace``.

"Device only" phases run where the device under test is not the host CPU (and in ``--smoke``, which runs
everything at tiny sizes). The run states the platform it measures; ``--platform gpu`` where JAX has no GPU
fails in one line (a CUDA plugin that did not load leaves JAX on the CPU). Nothing global is set that the
command line does not ask for: ``--xla-flags`` is appended to ``XLA_FLAGS`` and printed in the report.
Output: the report (markdown) on stdout, and with ``--out``: ``DIR/benchmarks.json`` and ``DIR/benchmarks.md``,
written after every phase. Exit status 1 when a phase failed, 2 for a bad command line or a missing platform.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform as host_platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FULL_BUDGET_S, SMOKE_BUDGET_S = 420.0, 60.0
TARGET_IMAGES_PER_S = 17_000.0  # VGG7 WAGE at batch 128 on an H100/H200-class GPU
TARGET_CLASS = ("H100", "H200", "H800", "GH200", "B100", "B200", "GB200")


def _plan(smoke: bool, platform: str) -> dict[str, Any]:
    """Sizes, steps and limits of every phase. Compile estimates (s) decide what fits in the budget."""
    from benchmarks.steps import LOWERINGS, ModelSpec

    if smoke:
        return dict(
            smoke=True, mlp=ModelSpec("mlp", (8, 8), (("hidden", (16,)),)),
            conv=ModelSpec("lenet5", (16, 16, 1), (("widths", (1, 2)), ("hidden", 4))),
            # all-nearest WAGE and one lowering: each WAGE compilation costs seconds on a small CPU
            parity_workers=2, parity_limit_s=20, traj_steps=2, mlp_traj=[],
            conv_traj=["wage nearest", "wage nearest patches"], mlp_batches=[8], conv_batch=4,
            mlp_speed=[], conv_speed=["wage nearest", "float"], rounds=2, steps_per_round=1,
            quant_sizes=[2**12], matmul_n=64, compile_est_s=2, torch=False, mlp_targets={}, conv_targets={})
    gpu = platform != "cpu"
    return dict(
        smoke=False, mlp=ModelSpec("mlp", (28, 28), (("hidden", (1024,)),)), conv=ModelSpec("vgg7", (32, 32, 3)),
        parity_workers=8, parity_limit_s=90, traj_steps=8, mlp_traj=["wage", "wage nearest", "wage int conv"],
        conv_traj=list(LOWERINGS), mlp_batches=[128] if gpu else [64, 256], conv_batch=128 if gpu else 32,
        mlp_speed=["wage", "float"] if gpu else ["wage", "float", "wage nearest"],
        conv_speed=[*LOWERINGS, "float", "float default", "wage nearest"] if gpu else
        ["wage", "float", "wage nearest", "wage int conv", "wage patches"],  # in order: what does not fit is last
        rounds=5, steps_per_round=10 if gpu else 3, quant_sizes=[2**24, 2**26] if gpu else [2**16, 2**22],
        matmul_n=8192 if gpu else 1024, compile_est_s=20 if gpu else 15, torch=not gpu,
        # ratio targets over float's step time: (model, variant, batch or None) -> bound
        mlp_targets={} if gpu else {("wage nearest", None): 1.10, ("wage", 64): 1.25, ("wage", 256): 1.15},
        conv_targets={("wage", None): 1.05})


@dataclass
class Ctx:
    """What the phases share: options, devices, plan, budget, compiled runners, the result so far."""

    args: argparse.Namespace
    device: Any
    host: Any
    plan: dict[str, Any]
    budget: Any
    result: dict[str, Any]
    runners: dict[str, Any]

    @property
    def device_phases(self) -> bool:
        return self.device != self.host or self.args.smoke


# ---- phases ---------------------------------------------------------------------------------------------------


def phase_parity(ctx: Ctx) -> dict[str, Any]:
    from benchmarks.core import row
    from benchmarks.parity import DIVISION, run_parity

    res = run_parity(ctx.device, ctx.host, ctx.args.smoke, ctx.budget, ctx.plan["parity_workers"],
                     ctx.plan["parity_limit_s"])
    res["rows"] = [row(f"parity {g}", v["differ"], f"differing of {v['elements']:,} elements",
                       target=None if g == DIVISION else "figure == 0",
                       note="divides: XLA:GPU may divide approximately (docs/contract.md)" if g == DIVISION else "")
                   for g, v in sorted(res["groups"].items())]
    return res


def phase_trajectories(ctx: Ctx) -> dict[str, Any]:
    from benchmarks.core import row
    from benchmarks.headroom import headroom_rows
    from benchmarks.steps import trajectories

    runs, headroom = [], {}
    for key, batch in (("mlp", ctx.plan["mlp_batches"][0]), ("conv", ctx.plan["conv_batch"])):
        spec = ctx.plan[key]
        if not ctx.plan[f"{key}_traj"]:
            continue
        kept: dict[str, Any] = {}
        runs += trajectories(spec, ctx.plan[f"{key}_traj"], batch, ctx.plan["traj_steps"], ctx.device, ctx.host,
                             ctx.budget, ctx.plan["compile_est_s"], kept, headroom)
        ctx.runners.update({(spec.name, name, batch): r for name, r in kept.items()})
    for r in runs:  # a variant the device cannot compile is not compiled again for the speed rows
        if "error" in r:
            ctx.runners[(r["model"].split()[0], r["variant"], r["batch"])] = r["error"]
    rows = [row(f"trajectory {r['model'].split()[0]} {r['variant']} b{r['batch']}, {r['steps']} steps",
                r.get("differ total"), "differing elements", target="figure == 0",
                note=r.get("error") or (f"first at step {r['first differing step']}" if r["differ total"] else ""))
            for r in runs]
    rows += [r for label, h in headroom.items() for r in headroom_rows(label, h)]
    return {"runs": runs, "rows": rows, "headroom": headroom}


def phase_quantizers(ctx: Ctx) -> dict[str, Any]:
    from benchmarks import quantizers

    rows = quantizers.measure(ctx.device, ctx.plan["quant_sizes"], ctx.budget, ctx.args.smoke)
    if ctx.budget.allows(5, "matmul rate"):
        rows += quantizers.measure_matmul(ctx.device, ctx.plan["matmul_n"], ctx.args.smoke)
    return {"rows": rows}


def phase_steps(ctx: Ctx) -> dict[str, Any]:
    from benchmarks.core import fmt, log, row
    from benchmarks.steps import VARIANTS, make_runner, products, time_interleaved, torch_step_s

    plan, rows, exact = ctx.plan, [], {}
    for r in ctx.result.get("trajectories", {}).get("runs", []):
        exact[(r["model"].split()[0], r["variant"])] = r.get("differ total") == 0
    for key, batch_list in (("mlp", plan["mlp_batches"]), ("conv", [plan["conv_batch"]])):
        spec, targets = plan[key], plan[f"{key}_targets"]
        est = plan["compile_est_s"]
        for batch in batch_list:
            runners, failed = {}, {}
            if not plan[f"{key}_speed"]:
                continue
            for name in plan[f"{key}_speed"]:
                built = ctx.runners.get((spec.name, name, batch))
                if isinstance(built, str):
                    failed[name] = built
                elif built is not None:
                    runners[name] = built
                elif ctx.budget.allows(est, f"step {spec.name} {name} b{batch}"):
                    try:
                        runners[name] = make_runner(spec, VARIANTS[name], batch, ctx.device)
                        est = max(est, runners[name].compile_s)  # the next compilation costs about as much
                    except Exception as exc:  # noqa: BLE001 - e.g. integer convolutions XLA:GPU cannot compile
                        failed[name] = f"does not compile: {type(exc).__name__}: {str(exc).strip()[:200]}"
            if not runners or not ctx.budget.allows(1, f"timing {spec.name} b{batch}"):
                continue
            s = time_interleaved(runners, plan["rounds"], plan["steps_per_round"], ctx.budget)
            base = s.get("float")
            for name in plan[f"{key}_speed"]:
                if name in failed:
                    rows.append(row(f"{spec.name} b{batch} {name}", None, "ms/step", note=failed[name]))
                    continue
                if name not in runners:
                    continue
                r, ms = runners[name], s[name] * 1e3
                bound = targets.get((name, batch), targets.get((name, None)))
                p = products(r.stablehlo) if VARIANTS[name].integer or "patches" in name else None
                note = (f"{batch / s[name]:,.0f} img/s; compile {r.compile_s:.1f} s; XLA temp "
                        f"{fmt(r.memory.get('temp'), '{:.1f}')} MB; TFLOP/s {fmt(r.flops and r.flops / s[name] / 1e12)}"
                        + (f"; products int/f32/conv {p['integer']}/{p['float32']}/{p['convolutions']}" if p else "")
                        + (f"; exact: {exact[(spec.name, name)]}" if (spec.name, name) in exact else ""))
                rows.append(row(f"{spec.name} b{batch} {name}", ms, "ms/step", ratio=base and s[name] / base,
                                target=None if bound is None or base is None else f"ratio <= {bound}", note=note))
                log(f"  {spec.name} b{batch} {name}: {ms:.3f} ms/step")
                if name == "wage" and key == "conv" and _target_class(ctx):
                    rows.append(row(f"{spec.name} b{batch} wage images/s", batch / s[name], "images/s",
                                    target=f"figure >= {TARGET_IMAGES_PER_S:g}"))
            lowered = {n: s[n] for n in s if (spec.name, n) in exact and key == "conv"}
            if lowered:
                good = [n for n in lowered if exact[(spec.name, n)]]
                best = min(good, key=lowered.get) if good else None
                rows.append(row(f"{spec.name} b{batch}: fastest exact lowering", best and lowered[best] * 1e3,
                                "ms/step", note=f"{best}; exact: {', '.join(good) or 'none'}; not exact: "
                                f"{', '.join(n for n in lowered if not exact[(spec.name, n)]) or 'none'}"
                                + (f"; does not compile: {', '.join(failed)}" if failed else "")))
            if plan["torch"] and "wage" in s and ctx.budget.allows(30, f"torch {spec.name} b{batch}"):
                try:
                    t = torch_step_s(spec.name, batch, 3, 2 if key == "conv" else 10)
                except ImportError as exc:
                    ctx.budget.skipped.append(f"torch rows: {exc}")
                    continue
                goal = 5.0 if key == "mlp" else 1.5
                rows.append(row(f"{spec.name} b{batch}: torch WAGE / JAX WAGE", t["torch wage"] / s["wage"], "x",
                                target=f"figure >= {goal}", note=f"float: {t['torch float'] / base:.2f}x"
                                if base else ""))
    return {"rows": rows}


def phase_parallel(ctx: Ctx) -> dict[str, Any]:
    import jax
    import numpy as np

    from benchmarks.core import row, time_per_call, tree_differing_elements
    from benchmarks.steps import VARIANTS, batches, init_params
    from wage_jax import clip_params, make_train_step, parallel, wage_sgd

    spec, batch, v = ctx.plan["mlp"], ctx.plan["mlp_batches"][-1], VARIANTS["wage nearest"]
    devices = jax.devices(ctx.device.platform)
    n = max(d for d in (1, 2, 4, 8, len(devices)) if d <= len(devices) and batch % d == 0)
    model = spec.build(v)
    opt = wage_sgd(v.config.bits_W, v.config.bits_G, 1.0, mode="nearest")

    def apply_fn(p, x, key):
        return model.apply({"params": p}, x)

    params = jax.jit(lambda p: clip_params(p, v.config.bits_W))(init_params(spec, v))
    (x, y), out, rows = batches(spec, batch)[0], {}, []
    mesh = parallel.data_mesh(n, devices[:n])
    for name, step, args in (
            ("plain step", make_train_step(apply_fn, opt, donate=False),
             lambda: [jax.device_put(a, devices[0]) for a in (x, y)]),
            (f"data-parallel over {n} {ctx.device.platform} devices",
             parallel.make_data_parallel_train_step(apply_fn, opt, mesh, donate=False),
             lambda: list(parallel.shard_batch((x, y), mesh)))):
        p = jax.device_put(params, devices[0]) if name == "plain step" else parallel.replicate(params, mesh)
        state, xs = jax.jit(opt.init)(p), args()
        t = time_per_call(lambda step=step, p=p, state=state, xs=xs: step(p, state, *xs), reps=3,
                          target_s=0.01 if ctx.args.smoke else 0.2)
        out[name] = np.asarray(jax.device_get(step(p, state, *xs)[0]["dense0"]["kernel"]))
        rows.append(row(f"{spec.name} b{batch} {name}", batch / t.median, "images/s"))
    a, b = out.values()
    rows.append(row("data-parallel accumulators against the plain step", tree_differing_elements(a, b),
                    "differing elements", target="figure == 0"))
    return {"rows": rows}


def phase_profile(ctx: Ctx) -> dict[str, Any]:
    """Three WAGE steps of the convolution model traced into ``OUT/trace``, its files moved up to that folder."""
    import jax

    runner = ctx.runners.get((ctx.plan["conv"].name, "wage nearest" if ctx.args.smoke else "wage",
                              ctx.plan["conv_batch"]))
    if not hasattr(runner, "run") or ctx.args.out is None:
        return {"skipped": "no --out, or no compiled VGG7 WAGE step"}
    trace = ctx.args.out / "trace"
    shutil.rmtree(trace, ignore_errors=True)
    try:  # the profiler needs CUPTI on NVIDIA GPUs: where it fails, the report says so
        with jax.profiler.trace(str(trace), create_perfetto_trace=True):
            runner.run(3)
    except Exception as exc:  # noqa: BLE001
        return {"skipped": f"jax.profiler.trace failed: {type(exc).__name__}: {exc}"}
    for f in [f for f in trace.rglob("*") if f.is_file() and f.parent != trace]:
        f.replace(trace / f.name)  # the profiler nests them plugins/profile/<time>/: keep them one folder down
    for d in sorted((d for d in trace.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
        d.rmdir()
    return {"trace": str(trace), "files": sorted(f.name for f in trace.iterdir())}


def phase_loop_overhead(ctx: Ctx) -> dict[str, Any]:
    """wage-train's training loop vs a tight loop of the same jitted step (benchmarks/loop_overhead.py)."""
    from benchmarks.core import row

    try:  # wage-train's own dependencies (orbax, scikit-learn, tqdm) may be absent where the suite runs
        for name in ("orbax.checkpoint", "sklearn", "tqdm"):
            __import__(name)
        from benchmarks import loop_overhead
    except ImportError as exc:
        return {"skipped": f"wage-train cannot run here: {type(exc).__name__}: {exc}"}
    measured = (loop_overhead.measure(True, steps=2, epochs=2, only="lenet5", budget=ctx.budget) if ctx.args.smoke
                else loop_overhead.measure(False, budget=ctx.budget))
    rows = [row(m["name"], m["figure"], m["unit"], ratio=m["ratio"], target=f"ratio >= {m['target']}",
                note=f"tight loop {m['tight']:.0f} img/s; median pair ratio {m['pair_ratio_median']:.2f}")
            for m in measured]
    return {"rows": rows}


def phase_inference(ctx: Ctx) -> dict[str, Any]:
    """Integer against float32 ONNX inference under onnxruntime on the host CPU (benchmarks/inference.py)."""
    try:  # the export extra (onnx, onnxruntime) and scikit-learn's digits may be absent where the suite runs
        for name in ("onnx", "onnxruntime", "sklearn"):
            __import__(name)
        from benchmarks import inference
    except ImportError as exc:
        return {"skipped": f"the export extra or scikit-learn is missing: {type(exc).__name__}: {exc}"}
    return inference.measure(ctx.args.smoke, budget=ctx.budget)


@dataclass(frozen=True)
class Phase:
    name: str
    fn: Callable[[Ctx], dict[str, Any]]
    estimate_s: float  # the least time it needs to start (full sizes; smoke: a tenth)
    device_only: bool = False


PHASES = [
    Phase("parity", phase_parity, 20, device_only=True),
    Phase("trajectories", phase_trajectories, 40, device_only=True),
    Phase("quantizers", phase_quantizers, 20),
    Phase("steps", phase_steps, 40),
    Phase("parallel", phase_parallel, 10),
    Phase("loop overhead", phase_loop_overhead, 30),
    Phase("inference", phase_inference, 60),
    Phase("profile", phase_profile, 10, device_only=True),
]


# ---- the run and its report -------------------------------------------------------------------------------------


def _runs(phase: Phase, ctx: Ctx) -> bool:
    return (not ctx.args.only or phase.name in ctx.args.only) and (ctx.device_phases or not phase.device_only)


def _target_class(ctx: Ctx) -> bool:
    return not ctx.args.smoke and ctx.device.platform == "gpu" and any(
        k in ctx.device.device_kind for k in TARGET_CLASS)


def planned_compiles(plan: dict[str, Any], phases: set[str], same_device: bool) -> int:
    """The executables the plan builds, counted from it: each corpus case on the device and on the host; per
    model, one host reference (and its headroom probe) per rounding configuration and each trajectory variant
    (on a CPU-only run the variants that are the reference's own program reuse it); each speed variant not
    already built; per size, each quantizer operation and the copy; two matmuls; the parallel phase's clipping,
    two steps and two optimizer inits; one initial state per step built. Small eager computations
    (``device_put``, key splits) come on top: the report counts every compilation through ``CompileCounter``."""
    from benchmarks.parity import select_cases
    from benchmarks.quantizers import OPS, SMOKE_OPS
    from benchmarks.steps import VARIANTS

    ops = len(SMOKE_OPS) if plan["smoke"] else len(OPS)
    n = ((ops + 1) * len(plan["quant_sizes"]) + 2 if "quantizers" in phases else 0) + 5 * ("parallel" in phases)
    n += 2 * len(select_cases(plan["smoke"])) if "parity" in phases else 0
    built = set()
    if "trajectories" in phases:
        for m in ("mlp", "conv"):
            names = plan[f"{m}_traj"]
            n += 3 * len({VARIANTS[v].nearest for v in names})  # the reference, its initial state, its headroom
            reused = [v for v in names if same_device and not VARIANTS[v].integer and VARIANTS[v].lowering == "conv"]
            n += 2 * len(names) - len(reused)
            built |= {(m, v) for v in names}
    for m, batches in (("mlp", plan["mlp_batches"]), ("conv", [plan["conv_batch"]])) if "steps" in phases else ():
        n += 2 * sum(1 for b in batches for v in plan[f"{m}_speed"] if (m, v) not in built or b != batches[0])
    return n


def environment(device: Any) -> dict[str, Any]:
    import jax
    import numpy as np

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    plugins = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()
               if (d.metadata["Name"] or "").lower().startswith(("jax-cuda", "jax_cuda", "jax-rocm", "libtpu"))}
    return {"platform": device.platform, "device": device.device_kind, "devices": len(jax.devices(device.platform)),
            "default backend": jax.default_backend(), "host cores": os.cpu_count(),
            "python": host_platform.python_version(),
            "jax": jax.__version__, "jaxlib": version("jaxlib"), "plugins": plugins, "flax": version("flax"),
            "optax": version("optax"), "numpy": np.__version__, "torch": version("torch"),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS")}


def markdown(result: dict[str, Any]) -> str:
    from benchmarks.core import fmt, table

    meta = result["meta"]
    mark = {True: "PASS", False: "MISS", None: ""}
    out = [f"# Benchmarks ({'smoke, tiny sizes' if meta['smoke'] else 'full'})", "",
           f"`{meta['command']}` on {meta['date']}: {meta['elapsed s']:.0f} s of a {meta['budget s']:.0f} s budget.",
           "", f"**Platform: {meta['platform statement']}**", "",
           f"Compilations: {meta['compiles']} counted ({meta['compile s']:.0f} s), {meta['planned compiles']} planned"
           " (step and kernel executables; small eager ones come on top).", "",
           table(["", ""], [[k, v] for k, v in result["environment"].items() if v not in (None, {}, "")]), ""]
    rows = [r for p in result["phases"].values() for r in p.get("rows", [])]
    targeted = [r for r in rows if r["target"]]
    if targeted:
        out += ["## Targets", "", table(["measure", "figure", "ratio", "target", "", "note"], [
            [r["name"], f"{fmt(r['figure'])} {r['unit']}", fmt(r["ratio"], "{:.3f}"), r["target"],
             mark[r["passed"]] or "n/a", r["note"]] for r in targeted]), ""]
    for name, p in result["phases"].items():
        out += [f"## {name}", "", f"{p.get('seconds', 0):.1f} s, {p.get('compiles', 0)} compilations, memory peak: "
                f"{_memory(p.get('memory'))}.", ""]
        if p.get("error") or p.get("skipped"):
            out += [f"{'FAILED' if p.get('error') else 'Skipped'}: {p.get('error') or p.get('skipped')}", ""]
        if p.get("rows"):
            out += [table(["measure", "figure", "unit", "ratio", "target", "", "note"], [
                [r["name"], fmt(r["figure"]), r["unit"], fmt(r["ratio"], "{:.3f}"), r["target"] or "",
                 mark[r["passed"]], r["note"]] for r in p["rows"]]), ""]
        if p.get("failures"):
            out += [f"- {f}" for f in p["failures"][:20]] + [""]
        if p.get("files"):
            out += [f"Trace in `{p['trace']}`: {', '.join(p['files'])}", ""]
    if result["notes"]:
        out += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(out)


def _memory(m: dict[str, Any] | None) -> str:
    if not m or m.get("kind") == "unavailable":
        return "not available"
    if m.get("below earlier peak"):
        return f"below an earlier phase's device peak ({m['process peak MB']:.0f} MB)"
    return f"{m['peak MB']:.1f} MB ({m['kind']}, above the phase's start)"


def run(args: argparse.Namespace, argv: list[str]) -> int:
    import jax

    from benchmarks.core import Budget, CompileCounter, PhaseMemory, log

    try:
        device = jax.devices(args.platform)[0] if args.platform else jax.devices()[0]
    except RuntimeError as exc:
        print(f"benchmarks: --platform {args.platform}: JAX has no such device here (default backend "
              f"{jax.default_backend()!r}: {str(exc).splitlines()[0][:200]})", file=sys.stderr)
        return 2
    host = jax.devices("cpu")[0]
    budget = Budget(args.budget_s)
    plan = _plan(args.smoke, device.platform)
    ctx = Ctx(args, device, host, plan, budget, {}, {})
    statement = (f"{device.platform} ({device.device_kind}), against the host CPU" if device != host else
                 "cpu: the host CPU, no accelerator measured" + (" (smoke: device phases compare the CPU with"
                                                                 " itself)" if args.smoke else ""))
    log(f"platform: {statement}")
    counter = CompileCounter()
    result: dict[str, Any] = {"meta": {
        "command": "python -m benchmarks " + " ".join(argv), "smoke": args.smoke, "platform": device.platform,
        "platform statement": statement, "budget s": args.budget_s,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "planned compiles": planned_compiles(plan, {p.name for p in PHASES if _runs(p, ctx)}, device == host)},
        "environment": environment(device), "phases": {}, "notes": []}
    ctx.result = result["phases"]
    failed = []

    def write() -> None:
        result["meta"].update({"elapsed s": budget.elapsed(), "compiles": counter.count, "compile s": counter.seconds})
        result["notes"] = [f"skipped for time: {s}" for s in budget.skipped] + [f"phase failed: {f}" for f in failed]
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "benchmarks.json").write_text(json.dumps(result, indent=1, default=str))
            (args.out / "benchmarks.md").write_text(markdown(result))

    for phase in PHASES:
        if not _runs(phase, ctx):
            continue
        if not budget.allows(phase.estimate_s / (10 if args.smoke else 1), f"phase {phase.name}"):
            continue
        log(f"[{budget.elapsed():6.1f} s] {phase.name} ...")
        memory, compiles0, t0 = PhaseMemory(device), counter.count, time.perf_counter()
        try:
            value = phase.fn(ctx)
        except Exception as exc:  # noqa: BLE001 - a failed phase is reported; the others still run
            value = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
            failed.append(f"{phase.name}: {value['error'][:300]}")
            log(f"  FAILED: {value['error'][:300]}")
        value.update(seconds=time.perf_counter() - t0, compiles=counter.count - compiles0, memory=memory.stop())
        result["phases"][phase.name] = value
        write()
    write()
    counter.close()
    print(markdown(result))
    return 1 if failed else 0


def _joined_xla_flags(argv: list[str]) -> list[str]:
    """``--xla-flags VALUE`` as ``--xla-flags=VALUE``: argparse reads a separate value that starts with ``--``
    (every XLA flag does) as an option of its own and stops with "expected one argument"."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--xla-flags" and i + 1 < len(argv):
            out.append(f"--xla-flags={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--platform", choices=("cpu", "gpu", "tpu"),
                        help="the device to measure (default: JAX's default backend); fails if JAX has none")
    parser.add_argument("--out", type=Path, help="folder for benchmarks.json, benchmarks.md and the trace")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, every phase (the tests run it)")
    parser.add_argument("--budget-s", type=float, help=f"wall-clock budget (default {FULL_BUDGET_S:.0f}, "
                        f"{SMOKE_BUDGET_S:.0f} with --smoke); no phase or compilation starts past it")
    parser.add_argument("--only", nargs="+", choices=[p.name for p in PHASES], help="run only these phases")
    parser.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before JAX starts (printed); "
                        "'--xla-flags \"--xla_a --xla_b\"' and '--xla-flags=...' alike")
    args = parser.parse_args(_joined_xla_flags(argv))
    if args.budget_s is None:
        args.budget_s = SMOKE_BUDGET_S if args.smoke else FULL_BUDGET_S
    if not args.budget_s > 0:
        parser.error(f"--budget-s must be positive, got {args.budget_s:g}")
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {args.xla_flags}".strip()
    return run(args, argv)


if __name__ == "__main__":
    sys.exit(main())
