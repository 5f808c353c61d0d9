"""``python -m benchmarks``: the suite runs on the CPU in ``--smoke`` (as the accelerator command would, with the
packages the accelerator machine lacks made unimportable), states its platform, refuses a platform JAX does not
have, keeps to its budget, and its measurement core counts what it says it counts.

Kept cheap: one in-process smoke run of the trajectory (one lowering on a LeNet-5 smaller than the MLP), step,
quantizer and profile phases; the parity phase runs under a budget that stops it part-way."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.core import Budget, PhaseMemory, differing_elements, row, time_per_call
from benchmarks.parity import DIVISION, _group
from benchmarks.suite import main, markdown
from wage_parity.cases import Call, Case

ABSENT_ON_THE_ACCELERATOR = ("qtorch", "wage_train", "sklearn", "tqdm", "matplotlib", "orbax")


def _main(argv: list[str]) -> int:
    with pytest.MonkeyPatch.context() as mp:
        for name in ABSENT_ON_THE_ACCELERATOR:
            mp.setitem(sys.modules, name, None)  # import raises ImportError, as where it is not installed
        # qtorch may already be loaded by an earlier test in this process: wage_torch must not see it either
        mp.setattr("wage_torch.backend.qtorch_modules", lambda: None)
        return main(argv)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = _main(["--smoke", "--only", "trajectories", "steps", "quantizers", "profile", "--out", str(out)])
    return rc, json.loads((out / "benchmarks.json").read_text()), (out / "benchmarks.md").read_text(), out


@pytest.mark.slow  # the shared smoke run: 10-25 s on 2 cores, mostly three LeNet-5 compilations
def test_the_smoke_run_states_its_platform_and_writes_both_reports(smoke):
    rc, result, md, _ = smoke
    assert rc == 0
    phases = result["phases"]
    assert set(phases) == {"trajectories", "steps", "quantizers", "profile"}
    assert not [p for p in phases.values() if "error" in p]
    assert result["meta"]["platform"] == "cpu" and result["environment"]["platform"] == "cpu"
    assert "**Platform: cpu: the host CPU, no accelerator measured" in md
    assert result["meta"]["elapsed s"] < result["meta"]["budget s"] and not result["notes"]
    assert result["meta"]["compiles"] >= result["meta"]["planned compiles"] > 0  # eager ones come on top
    for p in phases.values():  # each phase's own peak, not the process's
        assert p["memory"]["kind"] == "host RSS" and p["memory"]["peak MB"] is not None


@pytest.mark.slow  # the shared smoke run: 10-25 s on 2 cores, mostly three LeNet-5 compilations
def test_a_lowering_trajectory_agrees_bit_for_bit_and_leaves_no_convolution(smoke):
    _, result, md, _ = smoke
    runs = {r["variant"]: r for r in result["phases"]["trajectories"]["runs"]}
    assert set(runs) == {"wage nearest", "wage nearest patches"}
    for r in runs.values():
        assert r["accumulators differ per step"] == r["logits differ per step"] == [0, 0]
        assert r["first differing step"] is None
    assert runs["wage nearest"]["products"]["convolutions"] == 2 * 3 - 1  # fwd, dx, dw; no dx for conv0
    assert runs["wage nearest patches"]["products"]["convolutions"] == 0
    rows = [r for r in result["phases"]["trajectories"]["rows"] if r["name"].startswith("trajectory")]
    assert [r["passed"] for r in rows] == [True, True] and all(r["target"] == "figure == 0" for r in rows)
    assert "| trajectory lenet5 wage nearest patches b4, 2 steps | 0 |" in md


@pytest.mark.slow  # the shared smoke run: 10-25 s on 2 cores, mostly three LeNet-5 compilations
def test_the_trajectories_report_each_layers_headroom_per_step(smoke):
    _, result, md, _ = smoke
    headroom = result["phases"]["trajectories"]["headroom"]
    assert list(headroom) == ["lenet5 b4 nearest"]
    layers = headroom["lenet5 b4 nearest"]
    assert list(layers) == ["conv0", "conv1", "dense0", "dense1"]
    for products in layers.values():
        assert set(products) == {"forward", "input_grad", "kernel_grad"}
        assert all(len(r) == 2 and all(0 < v < 1 for v in r) for r in products.values())  # 2 steps, tiny sums
    rows = {r["name"]: r for r in result["phases"]["trajectories"]["rows"] if r["name"].startswith("headroom")}
    assert len(rows) == 4 and all(r["passed"] and r["target"] == "figure <= 1" for r in rows.values())
    conv0 = rows["headroom lenet5 b4 nearest conv0"]
    assert conv0["figure"] == max(max(r) for r in layers["conv0"].values())
    assert "exact in any order" in conv0["note"] and "| headroom lenet5 b4 nearest conv0 |" in md


def test_a_headroom_past_2_to_the_24_misses_its_target():
    from benchmarks.headroom import headroom_rows

    (r,) = headroom_rows("vgg7 b512", {"conv0": {"forward": [0.01, 0.02], "input_grad": [0.1, 0.1],
                                                 "kernel_grad": [0.9, 3.6]}})
    assert r["figure"] == 3.6 and r["passed"] is False
    assert r["note"] == ("forward 0.02, input_grad 0.1, kernel_grad 3.6; worst: kernel_grad at step 1; past 2^24: "
                         "float32 sums may round (identity within the bound only)")


@pytest.mark.slow  # the shared smoke run: 10-25 s on 2 cores, mostly three LeNet-5 compilations
def test_step_rows_relate_wage_to_float_and_name_the_fastest_exact_lowering(smoke):
    _, result, _, _ = smoke
    rows = {r["name"]: r for r in result["phases"]["steps"]["rows"]}
    wage, flt = rows["lenet5 b4 wage nearest"], rows["lenet5 b4 float"]
    assert wage["figure"] > 0 and flt["figure"] > 0 and flt["ratio"] == 1.0
    assert wage["ratio"] == pytest.approx(wage["figure"] / flt["figure"])
    assert "exact: True" in wage["note"]
    assert rows["lenet5 b4: fastest exact lowering"]["note"].startswith("wage nearest;")


@pytest.mark.slow  # the shared smoke run: 10-25 s on 2 cores, mostly three LeNet-5 compilations
def test_quantizer_rows_report_the_division_case_apart(smoke):
    _, result, _, _ = smoke
    rows = {r["name"]: r for r in result["phases"]["quantizers"]["rows"]}
    assert {"uniform draws alone, 2^12", "QW 2-bit nearest, scale 3 (division), 2^12",
            "QG 8-bit stochastic, 2^12"} <= set(rows)
    for name in ("QW 2-bit nearest, scale 3 (division), 2^12", "QG 8-bit stochastic, 2^12"):
        assert rows[name]["figure"] > 0 and rows[name]["ratio"] > 0 and rows[name]["target"] is None  # smoke sizes
    assert rows["QW 2-bit nearest, scale 3 (division), 2^12: wt-torch / jax"]["figure"] > 0  # wage_torch, no qtorch
    assert not [n for n in rows if "qtorch" in n]


@pytest.mark.slow  # the shared smoke run: 10-25 s on 2 cores, mostly three LeNet-5 compilations
def test_the_trace_lies_within_two_folders_of_out(smoke):
    _, result, _, out = smoke
    files = [p.relative_to(out) for p in out.rglob("*") if p.is_file()]
    assert {f.parts[0] for f in files} == {"benchmarks.json", "benchmarks.md", "trace"}
    assert all(len(f.parts) <= 2 for f in files), files
    assert any(f.name.endswith(".xplane.pb") for f in files)
    assert sorted(result["phases"]["profile"]["files"]) == sorted(f.name for f in files if f.parts[0] == "trace")


# Run in a fresh interpreter: torch made unimportable by a finder (a None in sys.modules would break SciPy's
# array-API probe, which wage-train's scikit-learn import reaches), every phase, and torch never loaded.
_WITHOUT_TORCH = """
import sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "qtorch", "wage_torch"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Blocker())
from benchmarks.suite import main
rc = main(sys.argv[1:])
print("torch loaded:", any(m.split(".")[0] == "torch" for m in sys.modules))
sys.exit(rc)
"""


@pytest.mark.slow  # every phase at smoke sizes in a fresh interpreter: 20-40 s on 2 cores
def test_the_smoke_run_needs_no_torch_and_runs_every_phase(tmp_path):
    from benchmarks.suite import PHASES
    from wage_parity.testing import python_env, run_python

    root = Path(__file__).resolve().parents[1]
    proc = run_python(["-c", _WITHOUT_TORCH, "--smoke", "--budget-s", "600", "--out", str(tmp_path)],
                      env=python_env(pythonpath=[root]),
                      cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "torch loaded: False" in proc.stdout
    result = json.loads((tmp_path / "benchmarks.json").read_text())
    assert list(result["phases"]) == [p.name for p in PHASES]
    assert not [n for n, p in result["phases"].items() if "error" in p or "skipped" in p]
    assert result["phases"]["parity"]["cases run"] == result["phases"]["parity"]["cases selected"] > 0
    assert [r["passed"] for r in result["phases"]["loop overhead"]["rows"]] != []


@pytest.mark.parametrize("form", [["--xla-flags", "--xla_cpu_enable_fast_math=false --xla_dump_to=none"],
                                  ["--xla-flags=--xla_cpu_enable_fast_math=false --xla_dump_to=none"]])
def test_xla_flags_take_the_documented_form_and_the_joined_one(form, monkeypatch):
    from benchmarks import suite

    seen = {}
    monkeypatch.setenv("XLA_FLAGS", "--xla_earlier=1")
    monkeypatch.setattr(suite, "run", lambda args, argv: seen.setdefault("args", args) and 0)
    assert suite.main(["--smoke", *form, "--only", "parity"]) == 0
    assert seen["args"].xla_flags == "--xla_cpu_enable_fast_math=false --xla_dump_to=none"
    assert seen["args"].only == ["parity"]
    assert suite.os.environ["XLA_FLAGS"] == "--xla_earlier=1 --xla_cpu_enable_fast_math=false --xla_dump_to=none"


def test_the_loop_overhead_phase_keeps_to_the_budget():
    from benchmarks import loop_overhead

    budget = Budget(1.0)
    assert loop_overhead.measure(False, budget=budget) == []  # starts nothing: 30 s per model do not fit
    assert [s.split(" (")[0] for s in budget.skipped] == ["loop overhead lenet5", "loop overhead vgg7"]


def test_asking_for_a_platform_jax_does_not_have_fails_in_one_line(tmp_path, capsys):
    assert _main(["--platform", "gpu", "--smoke", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("benchmarks: --platform gpu: JAX has no such device here")
    assert "default backend 'cpu'" in err
    assert not (tmp_path / "out").exists()


def test_the_budget_stops_the_run_part_way(tmp_path, monkeypatch):
    """Parity checks the budget before each case and quantizers before starting: with 5 s for the whole
    corpus, parity stops part-way, quantizers never starts, and the run ends within a case's time of the budget."""
    from benchmarks import parity

    full = parity.select_cases(smoke=False)
    monkeypatch.setattr(parity, "select_cases", lambda smoke: full)
    t0 = time.monotonic()
    assert _main(["--smoke", "--only", "parity", "quantizers", "--budget-s", "5", "--out", str(tmp_path)]) == 0
    wall = time.monotonic() - t0
    result = json.loads((tmp_path / "benchmarks.json").read_text())
    parity = result["phases"]["parity"]
    assert 0 < parity["cases run"] < parity["cases selected"]
    assert "quantizers" not in result["phases"]
    notes = " ".join(result["notes"])
    assert "skipped for time: parity:" in notes and "skipped for time: phase quantizers" in notes
    assert result["meta"]["elapsed s"] < 5 + 2.0 and wall < 5 + 3.0
    with pytest.raises(SystemExit) as exc:
        main(["--budget-s", "0"])
    assert exc.value.code == 2


# ---- the measurement core -------------------------------------------------------------------------------------------


def test_time_per_call_dispatches_many_calls_per_sync():
    calls, syncs = [], []
    timing = time_per_call(lambda: calls.append(1), reps=3, target_s=0.01, max_calls=50, sync=syncs.append)
    assert timing.calls == 50 and timing.reps == 3  # a call of ~0 s: the cap
    assert len(syncs) == 3 + 3 and len(calls) == 3 + 3 * 50  # warm-up and calibration, then one sync per repeat
    assert 0 <= timing.minimum <= timing.median <= timing.maximum


def test_rows_check_their_targets():
    assert row("a", 3.0, "ms", ratio=1.1, target="ratio <= 1.05")["passed"] is False
    assert row("a", 3.0, "ms", ratio=1.0, target="ratio <= 1.05")["passed"] is True
    assert row("b", 0, "elements", target="figure == 0")["passed"] is True
    assert row("b", 2, "elements", target="figure == 0")["passed"] is False
    assert row("c", 1.0, "ms")["passed"] is None and row("d", None, "ms", target="figure == 0")["passed"] is None


def test_differing_elements_counts_bit_patterns():
    a = np.array([0.0, 1.0, np.nan, 2.0], np.float32)
    b = np.array([-0.0, 1.0, np.nan, np.nextafter(np.float32(2.0), np.float32(3.0))], np.float32)
    assert differing_elements(a, b) == 2 and differing_elements(a, a[:3]) == 4


def test_the_memory_peak_is_the_phases_own():
    big = PhaseMemory(_cpu())
    buf = np.ones(2**24, np.float32)  # 64 MiB, touched
    first = big.stop()["peak MB"]
    del buf
    small = PhaseMemory(_cpu()).stop()["peak MB"]
    assert first >= 60 and small < 30  # the second phase does not inherit the first one's peak


def _cpu():
    import jax

    return jax.devices("cpu")[0]


def test_qw_division_cases_are_counted_apart():
    def qw(*names):
        return Case("QW", "x", tuple(Call(n, lambda: (), lambda x: x, lambda: ()) for n in names))

    case = qw("scale=3 nearest", "scale=1.5 nearest", "scale=4 stochastic", "scale=1 nearest",
              f"scale={2.0**40:g} nearest", f"scale={2.0**110:g} nearest")
    assert [_group(case, c) for c in case.calls] == [DIVISION, DIVISION, "QW", "QW", "QW", "QW"]
    assert _group(Case("QG", "x", case.calls[:1]), case.calls[0]) == "QG"


def test_a_failed_phase_and_a_missed_target_are_rendered():
    result = {"meta": {"smoke": False, "command": "c", "date": "d", "elapsed s": 1.0, "budget s": 2.0,
                       "platform statement": "gpu (H200)", "compiles": 3, "compile s": 1.0, "planned compiles": 2},
              "environment": {"platform": "gpu"}, "notes": ["phase failed: steps: boom"],
              "phases": {"steps": {"error": "RuntimeError: boom", "rows": []},
                         "trajectories": {"rows": [row("trajectory vgg7 wage", 5, "differing elements",
                                                       target="figure == 0")]}}}
    md = markdown(result)
    assert "FAILED: RuntimeError: boom" in md and "| trajectory vgg7 wage | 5 differing elements |" in md
    assert "| MISS |" in md and "**Platform: gpu (H200)**" in md


def test_budget_records_what_it_skips():
    b = Budget(1.0)
    assert b.allows(0.5, "x") and not b.allows(5.0, "y")
    assert b.skipped == ["y (needs ~5 s, 1 s left)"]


def test_a_lowering_the_device_cannot_compile_is_reported_once_and_the_fastest_exact_one_named(monkeypatch):
    """The GPU path of the steps phase without a GPU: the trajectories left compiled runners (and one error,
    as XLA:GPU gives for int8 x int8 -> int32 convolutions); the speed rows reuse them, compile nothing, and
    name the fastest lowering whose trajectory was exact."""
    import argparse

    from benchmarks import steps, suite

    class Fake:  # a compiled step that takes a fixed time
        compile_s, memory, flops, stablehlo = 1.0, {"temp": 1.0}, None, ""

        def __init__(self, s):
            self.s = s

        def run(self, n):
            return self.s

    def refuse(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(steps, "make_runner", refuse)
    spec = steps.ModelSpec("vgg7", (32, 32, 3))
    plan = {"mlp": steps.ModelSpec("mlp", (28, 28)), "conv": spec, "mlp_batches": [], "mlp_speed": [],
            "mlp_targets": {}, "conv_batch": 128, "conv_targets": {("wage", None): 1.05}, "rounds": 1,
            "steps_per_round": 1, "compile_est_s": 1, "torch": False,
            "conv_speed": ["wage", "wage patches", "wage int conv", "wage int int8_f32", "float"]}
    runs = [{"model": "vgg7 32x32x3", "variant": v, "batch": 128, "differ total": d}
            for v, d in (("wage", 7), ("wage patches", 0), ("wage int int8_f32", 0))]
    runners = {("vgg7", v, 128): Fake(s) for v, s in
               (("wage", 0.010), ("wage patches", 0.012), ("wage int int8_f32", 0.011), ("float", 0.0100))}
    runners[("vgg7", "wage int conv", 128)] = "does not compile: XlaRuntimeError: UNIMPLEMENTED: ..."
    ctx = suite.Ctx(argparse.Namespace(smoke=False), _cpu(), _cpu(), plan, Budget(60), {"trajectories": {
        "runs": runs}}, runners)
    rows = {r["name"]: r for r in suite.phase_steps(ctx)["rows"]}
    assert rows["vgg7 b128 wage int conv"]["figure"] is None
    assert rows["vgg7 b128 wage int conv"]["note"].startswith("does not compile: XlaRuntimeError")
    assert rows["vgg7 b128 wage"]["ratio"] == pytest.approx(1.0) and rows["vgg7 b128 wage"]["passed"] is True
    assert "exact: False" in rows["vgg7 b128 wage"]["note"]
    best = rows["vgg7 b128: fastest exact lowering"]
    assert best["figure"] == pytest.approx(11.0)
    assert best["note"] == ("wage int int8_f32; exact: wage patches, wage int int8_f32; not exact: wage; "
                            "does not compile: wage int conv")


def test_the_loop_overhead_phase_is_skipped_with_a_reason_where_wage_train_cannot_run(tmp_path):
    rc = _main(["--smoke", "--only", "loop overhead", "--out", str(tmp_path)])
    phase = json.loads((tmp_path / "benchmarks.json").read_text())["phases"]["loop overhead"]
    assert rc == 0 and "wage-train cannot run here" in phase["skipped"], phase
