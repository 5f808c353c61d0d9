"""Accelerator readiness in one command: parity with the CPU, and speed and memory, on a GPU or TPU (issue 12).

    python -m benchmarks.accelerator --out DIR            # on the accelerator: about 5 minutes
    python -m benchmarks.accelerator --smoke --out DIR    # tiny sizes, any machine (the test suite runs it)

Run from the repository root. On whatever backend JAX has (``jax.devices()[0]``), against the host CPU
backend (``jax.devices("cpu")[0]``) in the same process; on a CPU-only machine it compares the CPU with
itself. Phases, in order (each one's figures are written as soon as it ends):

a. parity: every case of the parity corpus (``wage_parity.cases``: every public wage_jax function, jit)
   plus keyed stochastic cases, on the device and on the CPU, counting differing float32 bit patterns
   (``benchmarks.accel_parity``);
b. trajectories: the MLP (200 steps) and the full-width VGG7 (20 steps, 32x32x3, batch 32) trained on
   the device and on the CPU in lockstep from one init and one key, every mode nearest and the paper's
   modes: differing accumulator elements and logits per step (``benchmarks.accel_train``);
c. speed and memory: VGG7 at batch 128, WAGE against float (float32 and the backend's default
   precision) and all-nearest WAGE; the MLP; quantizer throughput at 2^24 and 2^26 elements against the
   measured copy bandwidth, and the float32 matmul rate (``benchmarks.accel_quantizers``); then the
   largest VGG7 batch that fits (doubling up to 4096);
d. optional: wage_torch's torch backend on CUDA against its CPU (``benchmarks.accel_hooks``), and the
   WAGE layers' integer mode against their float path, VGG7 at batch 128 in interleaved rounds (images/s
   of both side by side), each where the project has it;
e. the device and versions, printed and written with every figure to ``DIR/accelerator.json``, and
   the targets with PASS/MISS and the tables to ``DIR/accelerator.md``.

``--compile-cache FOLDER`` keeps jax's persistent compilation cache there, so that a rerun mostly loads
its executables. The run keeps to ``--budget-s`` (300 s by default, 90 with ``--smoke``): optional work that would not
fit is skipped and listed in the notes. Where the speed target is missed on a GPU and time is left, a
``jax.profiler`` trace of three WAGE steps is written to ``DIR/trace``.

Exit status: 0 when every phase ran (targets may be missed: see the report), 1 when a phase failed.
Needs jax, flax, optax and numpy; torch for the corpus's draws (phase a) and the optional torch hook.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main", "run"]

FULL_BUDGET_S = 300.0
SMOKE_BUDGET_S = 90.0


def _plan(smoke: bool, cores: int) -> dict[str, Any]:
    """Sizes, steps and time limits of every phase."""
    if smoke:
        # VGG7 in the paper's modes only: each VGG7 variant is a compilation of ~10 s on a small CPU.
        return dict(
            parity_workers=2, parity_limit_s=40,
            mlp_batch=16, mlp_steps=10, vgg_traj_batch=8, vgg_traj_steps=3, vgg_modes=["wage"],
            vgg_batch=8, vgg_variants=["wage", "float"], rounds=3, steps_per_round=2, big_cap=16, big_est_s=5,
            quant_sizes=[2**12], quant_reps_s=0.05, matmul_n=256,
        )
    return dict(
        parity_workers=max(2, min(8, cores)), parity_limit_s=150,
        mlp_batch=128, mlp_steps=200, vgg_traj_batch=32, vgg_traj_steps=20, vgg_modes=["wage_nearest", "wage"],
        vgg_batch=128, vgg_variants=["wage", "float", "float_default", "wage_nearest"], rounds=5, steps_per_round=10,
        big_cap=4096, big_est_s=25,
        quant_sizes=[2**24, 2**26], quant_reps_s=0.3, matmul_n=8192,
    )


class _Run:
    """The results so far, written to ``DIR`` after every phase (a run cut short still leaves its figures)."""

    def __init__(self, out: Path, smoke: bool, budget_s: float, argv: list[str]) -> None:
        from benchmarks.accel_common import Budget

        self.out = out
        self.budget = Budget(budget_s)
        self.failed: list[str] = []
        self.result: dict[str, Any] = {
            "meta": {
                "command": "python -m benchmarks.accelerator " + " ".join(argv),
                "smoke": smoke,
                "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "budget s": budget_s,
                "elapsed s": 0.0,
                "phase seconds": {},
            },
            "notes": [],
        }

    def phase(self, name: str, fn: Callable[[], Any], key: str | None = None) -> Any:
        """Run one phase, store its result under ``key`` (or merge a dict), record its time or its error."""
        from benchmarks.accel_common import log

        log(f"[{self.budget.elapsed():6.1f} s] {name} ...")
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - a failing phase is reported; the others still run
            value = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
            self.failed.append(f"{name}: {value['error'][:300]}")
            log(f"  FAILED: {value['error']}")
        dt = time.perf_counter() - t0
        self.result["meta"]["phase seconds"][name] = round(dt, 2)
        if key is not None:
            self.result[key] = value
        log(f"  {name}: {dt:.1f} s")
        self.write()
        return value

    def write(self) -> None:
        from benchmarks.accel_report import evaluate_targets, markdown

        self.result["meta"]["elapsed s"] = round(self.budget.elapsed(), 1)
        self.result["notes"] = self._notes()
        self.result["targets"] = evaluate_targets(self.result)
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "accelerator.json", "w") as f:
            json.dump(self.result, f, indent=1, default=str)
        (self.out / "accelerator.md").write_text(markdown(self.result))

    def _notes(self) -> list[str]:
        notes = [f"skipped for time: {s}" for s in self.budget.skipped]
        notes += [f"phase failed: {failure} (the traceback is in the JSON)" for failure in self.failed]
        if self.result["meta"].get("same device"):
            notes.append("no accelerator: the CPU backend was compared with itself; the speed figures are the CPU's")
        return notes + self.result.get("extra notes", [])


def run(out: Path, smoke: bool, budget_s: float, argv: list[str]) -> int:
    """All phases; returns the exit status (1 when a phase failed)."""
    warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")
    from benchmarks import accel_hooks, accel_parity, accel_quantizers, accel_train
    from benchmarks.accel_common import Devices, environment, log

    devices = Devices.detect()
    state = _Run(out, smoke, budget_s, argv)
    meta = state.result["meta"]
    meta["same device"] = devices.same
    plan = _plan(smoke, os.cpu_count() or 1)
    meta["plan"] = plan
    env = state.phase("environment", lambda: environment(devices), "environment")
    for k, v in env.items():
        log(f"  {k}: {v}")
    budget = state.budget
    specs = accel_train.model_specs(smoke)

    # (a) parity
    parity_limit = min(plan["parity_limit_s"], 0.5 * budget.remaining())
    state.phase("parity", lambda: accel_parity.run_parity(
        devices, smoke, budget, plan["parity_workers"], parity_limit), "parity")

    # (b) trajectories; the device's runners are kept for the timings at the same batch (no second compile)
    runners: dict[tuple[str, str, int], Any] = {}
    trajectories: dict[str, Any] = {"runs": []}
    state.result["trajectories"] = trajectories
    for model, batch, steps, modes in (("mlp", plan["mlp_batch"], plan["mlp_steps"], ["wage_nearest", "wage"]),
                                       ("vgg7", plan["vgg_traj_batch"], plan["vgg_traj_steps"], plan["vgg_modes"])):
        for variant in modes:
            name = f"trajectory {model} {variant}"

            def one(model=model, batch=batch, steps=steps, variant=variant):
                row, runner = accel_train.run_trajectory(
                    specs[model], accel_train.VARIANTS[variant], batch, steps, devices)
                runners[(model, variant, batch)] = runner
                return row

            row = state.phase(name, one)
            row.setdefault("name", name)
            trajectories["runs"].append(row)
            if "error" not in row:
                log(f"  {row['accumulators differ total']} accumulator elements and {row['logits differ total']}"
                    f" logits differ over {steps} steps")
    state.write()

    # (c) speed and memory
    speed: dict[str, Any] = {}
    state.result["speed"] = speed
    vgg_variants = list(plan["vgg_variants"])
    if "float_default" in vgg_variants and devices.platform == "cpu":  # the CPU computes float32 at any precision
        vgg_variants.remove("float_default")

    def reuse(model: str, batch: int) -> dict[str, Any]:
        return {v: r for (m, v, b), r in runners.items() if m == model and b == batch}

    vgg_runners: dict[str, Any] = {}  # kept for the integer mode's comparison (phase d)

    def vgg():
        rows = accel_train.measure_speed(specs["vgg7"], vgg_variants, plan["vgg_batch"], devices, plan["rounds"],
                                         plan["steps_per_round"], reuse("vgg7", plan["vgg_batch"]), vgg_runners)
        for r in rows:
            log(f"  vgg7 {r['variant']:>14} batch {r['batch']}: {r['ms per step']:.3f} ms, {r['images/s']:,.0f} img/s")
        return rows

    speed["vgg7"] = state.phase("speed vgg7", vgg)

    # (d) the integer mode against its float path, right after (c)'s VGG7 (its float-path runner is reused)
    hooks: dict[str, Any] = {}
    state.result["hooks"] = hooks
    if accel_train.has_integer_mode():
        if budget.allows(plan["big_est_s"], "integer-mode VGG7"):
            speed["integer"] = state.phase("speed vgg7 integer", lambda: _integer(specs["vgg7"], plan, devices,
                                                                                  vgg_runners))
            hooks["wage_jax integer mode"] = "timed against the float path (see the integer-mode table)"
        else:
            hooks["wage_jax integer mode"] = "skipped for time (see the notes)"
    else:
        hooks["wage_jax integer mode"] = "skipped: wage_jax.models.VGG7 has no integer parameter"

    def mlp():
        rows = accel_train.measure_speed(specs["mlp"], ["wage", "float"], plan["mlp_batch"], devices,
                                         plan["rounds"], plan["steps_per_round"], reuse("mlp", plan["mlp_batch"]))
        for r in rows:
            log(f"  mlp {r['variant']:>6} batch {r['batch']}: {r['ms per step']:.3f} ms, {r['images/s']:,.0f} img/s")
        return rows

    speed["mlp"] = state.phase("speed mlp", mlp)
    speed["quantizers"] = state.phase("quantizer throughput", lambda: accel_quantizers.measure_quantizers(
        devices.accel, plan["quant_sizes"], budget, plan["quant_reps_s"]))
    speed["matmul"] = state.phase("matmul rate", lambda: accel_quantizers.measure_matmul(
        devices.accel, plan["matmul_n"], plan["quant_reps_s"]))

    # (d) optional hooks
    hooks["wage_torch on CUDA"] = state.phase("wage_torch on CUDA", lambda: accel_hooks.torch_cuda_parity(smoke))

    # (c, last) the largest batch that fits, with what time is left
    speed["largest batch"] = state.phase("largest batch", lambda: accel_train.largest_batch(
        specs["vgg7"], plan["vgg_batch"], plan["big_cap"], devices, budget, plan["big_est_s"],
        plan["steps_per_round"]))

    targets_missed = any(t["status"] == "MISS" and t["target"].startswith("(c)") for t in state.result["targets"])
    if targets_missed and not smoke and devices.platform == "gpu" and budget.allows(30, "profile trace"):
        state.result["profile"] = state.phase("profile", lambda: _profile(specs["vgg7"], plan, devices, out))

    meta["elapsed s"] = round(budget.elapsed(), 1)
    state.write()
    log(f"[{budget.elapsed():6.1f} s] done: {out / 'accelerator.json'}, {out / 'accelerator.md'}")
    for t in state.result["targets"]:
        log(f"  {t['status']:>5}  {t['target']}: {t['measured']}")
    return 1 if state.failed else 0


def _integer(spec, plan: dict[str, Any], devices, vgg_runners: dict[str, Any]) -> dict[str, Any]:
    """VGG7's WAGE step in the integer mode and on the float path at the speed batch; logs both images/s."""
    from benchmarks import accel_train
    from benchmarks.accel_common import log

    res = accel_train.integer_vs_float_path(spec, plan["vgg_batch"], devices, plan["rounds"], plan["steps_per_round"],
                                            vgg_runners)
    for r in res["rows"]:
        log(f"  vgg7 {r['variant']:>14} batch {r['batch']}: {r['ms per step']:.3f} ms, {r['images/s']:,.0f} img/s")
    if "integer speedup" in res:
        log(f"  integer mode: {res['integer speedup']:.2f}x the float path's speed; products {res['products']}")
    return res


def _profile(spec, plan: dict[str, Any], devices, out: Path) -> dict[str, Any]:
    """A ``jax.profiler`` trace of three WAGE steps at the speed batch (view it with TensorBoard or Perfetto)."""
    import jax

    from benchmarks import accel_train

    runner = accel_train.make_runner(spec, accel_train.VARIANTS["wage"], plan["vgg_batch"], devices.accel,
                                     devices.host)
    runner.run(2)
    trace = out / "trace"
    try:  # the profiler needs CUPTI on NVIDIA GPUs: where it fails, the report says so and the run goes on
        with jax.profiler.trace(str(trace)):
            runner.run(3)
    except Exception as exc:  # noqa: BLE001
        return {"skipped": f"jax.profiler.trace failed: {type(exc).__name__}: {exc}"}
    return {"trace": str(trace)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accelerator", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for accelerator.json and accelerator.md")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (any machine, under a minute)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"wall-clock budget in seconds (default {FULL_BUDGET_S:.0f}, {SMOKE_BUDGET_S:.0f} smoke)")
    parser.add_argument("--compile-cache", type=Path, default=None,
                        help="jax's persistent compilation cache folder: a rerun loads the executables instead of"
                             " compiling them again (the compile times it reports are then load times)")
    args = parser.parse_args(argv)
    budget = args.budget_s if args.budget_s is not None else (SMOKE_BUDGET_S if args.smoke else FULL_BUDGET_S)
    if not budget > 0:
        parser.error(f"--budget-s must be positive, got {budget}")
    if args.compile_cache is not None:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(args.compile_cache))
    return run(args.out, args.smoke, budget, argv)


if __name__ == "__main__":
    sys.exit(main())
