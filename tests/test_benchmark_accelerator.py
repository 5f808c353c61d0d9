"""``python -m benchmarks.accelerator --smoke --out DIR``: the command runs, and its report holds together.

The command runs once per module, in a subprocess, as the accelerator machine has it: qtorch,
wage_torch, wage_train, scikit-learn, tqdm, matplotlib and orbax made unimportable (their imports
raise ImportError), so that nothing on the command's path may need them. On this CPU-only machine it
compares the CPU backend with itself: every bit must agree.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.accel_common import differing_elements, tree_differing_elements
from benchmarks.accel_report import evaluate_targets, markdown
from benchmarks.accel_train import VARIANTS, ModelSpec, init_params, model_specs
from wage_parity.testing import python_env, run_python
from wage_spec import fan_in, wage_init_limits

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_THE_ACCELERATOR = ("qtorch", "wage_torch", "wage_train", "sklearn", "tqdm", "matplotlib", "orbax")
FUNCTIONS = ("fixed_point_quantize", "fixed_point_quantize_with_mask", "shift", "C", "QW", "QG", "wage_quantize")

_RUN = f"""
import runpy, sys
for name in {ABSENT_ON_THE_ACCELERATOR!r}:
    sys.modules[name] = None  # import raises ImportError, as where the package is not installed
sys.argv = ["benchmarks.accelerator"] + sys.argv[1:]
runpy.run_module("benchmarks.accelerator", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("accelerator")
    # A budget far above the smoke's usual minute: on a loaded machine the command would otherwise skip
    # its later phases for time (as it should), and the assertions below need every phase's output.
    proc = run_python(["-c", _RUN, "--smoke", "--budget-s", "900", "--out", out], cwd=ROOT,
                      env=python_env(pythonpath=[ROOT]), timeout=600)
    result = json.loads((out / "accelerator.json").read_text()) if (out / "accelerator.json").exists() else None
    md = (out / "accelerator.md").read_text() if (out / "accelerator.md").exists() else ""
    return proc, result, md


def test_the_smoke_run_succeeds_and_writes_both_files(smoke):
    proc, result, md = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert result is not None and md
    failed = [k for k, v in result.items() if isinstance(v, dict) and "error" in v]
    assert not failed, {k: result[k]["error"] for k in failed}
    assert result["meta"]["smoke"] is True
    assert result["meta"]["same device"] is True  # no accelerator here: the CPU against itself
    assert not [n for n in result["notes"] if n.startswith("phase failed")]
    assert result["meta"]["elapsed s"] < result["meta"]["budget s"]


def test_the_device_and_versions_are_reported(smoke):
    proc, result, _ = smoke
    env = result["environment"]
    for key in ("backend", "device", "jax", "jaxlib", "flax", "optax", "numpy", "python"):
        assert env[key], key
    assert "jax: " in proc.stdout and "backend: cpu" in proc.stdout


def test_every_quantizer_function_is_compared_with_zero_differing_bits(smoke):
    _, result, _ = smoke
    parity = result["parity"]
    assert set(parity["functions"]) == set(FUNCTIONS)
    for name, f in parity["functions"].items():
        assert f["compared"] > 0 and f["differ"] == 0, name
    assert parity["differ"] == 0 and parity["failures"] == []
    assert parity["cases run"] == parity["cases selected"] > len(FUNCTIONS)  # plus the keyed cases


def test_trajectories_agree_bit_for_bit_at_every_step(smoke):
    _, result, _ = smoke
    runs = result["trajectories"]["runs"]
    assert sorted((r["model"].split()[0], r["variant"]) for r in runs) == [
        ("mlp", "wage"), ("mlp", "wage_nearest"), ("vgg7", "wage")]  # --smoke: VGG7 in the paper's modes only
    for r in runs:
        assert len(r["accumulators differ per step"]) == len(r["logits differ per step"]) == r["steps"] > 0
        assert r["initial accumulators differ"] == 0
        assert set(r["accumulators differ per step"]) == {0} and set(r["logits differ per step"]) == {0}
        assert r["first differing step"] is None
        assert math.isfinite(r["final loss"]) and r["final loss"] > 0
        assert r["config"]["G_mode"] == ("stochastic" if r["variant"] == "wage" else "nearest")


def test_speed_figures_are_sane(smoke):
    _, result, _ = smoke
    speed = result["speed"]
    rows = speed["vgg7"] + speed["mlp"]
    assert {r["variant"] for r in speed["vgg7"]} == {"wage", "float"}
    assert {r["variant"] for r in speed["mlp"]} == {"wage", "float"}
    for r in rows:
        assert 0 < r["min ms"] <= r["ms per step"] <= r["max ms"]
        assert r["images/s"] == pytest.approx(r["batch"] / (r["ms per step"] / 1e3))
        assert r["analytic flops"] > 0 and r["achieved TFLOP/s"] > 0
        assert r["xla memory"].get("total", 1) > 0
    sizes = {r["elements"] for r in speed["quantizers"]}
    assert sizes == {2**12}
    for r in speed["quantizers"]:
        assert r["ms"] > 0 and r["GB/s"] > 0 and r["of copy"] > 0
    assert [r["precision"] for r in speed["matmul"]] == ["HIGHEST (float32)", "DEFAULT"]
    assert all(r["TFLOP/s"] > 0 for r in speed["matmul"])
    big = speed["largest batch"]
    assert big["largest"] >= speed["vgg7"][0]["batch"] and big["stopped"]


def test_optional_hooks_say_why_they_were_skipped(smoke):
    _, result, _ = smoke
    hooks = result["hooks"]
    assert "skipped" in hooks["wage_torch on CUDA"]  # no CUDA here (and wage_torch made unimportable)


def test_the_integer_mode_is_timed_against_the_float_path_side_by_side(smoke):
    """Phase d: VGG7 at the speed batch, ``wage_integer`` and ``wage`` (its float path) in interleaved rounds."""
    _, result, md = smoke
    integer = result["speed"]["integer"]
    assert "error" not in integer and "integer unsupported" not in integer, integer
    rows = {r["variant"]: r for r in integer["rows"]}
    assert set(rows) == {"wage", "wage_integer"}
    assert {r["batch"] for r in rows.values()} == {result["meta"]["plan"]["vgg_batch"]} == {integer["batch"]}
    for r in rows.values():
        assert 0 < r["min ms"] <= r["ms per step"] <= r["max ms"] and r["rounds"] == result["meta"]["plan"]["rounds"]
        assert integer["images/s"][r["variant"]] == pytest.approx(r["batch"] / (r["ms per step"] / 1e3))
    ms = {v: r["ms per step"] for v, r in rows.items()}
    assert integer["integer speedup"] == pytest.approx(ms["wage"] / ms["wage_integer"])
    # 6 convs and 2 dense layers, 3 products each less the first conv's input gradient; at --smoke's batch 8
    # the 4 kernel gradients of the 32x32 and 16x16 convs sum too many terms for 2^24 and stay float32
    assert integer["products"] == {"wage": {"integer": 0, "float32": 23, "other": 0},
                                   "wage_integer": {"integer": 19, "float32": 4, "other": 0}}
    assert integer["int8 after XLA"] is True
    assert "## (d) Integer mode against the float path" in md
    assert f"{rows['wage_integer']['images/s']:,.0f}" in md and f"{rows['wage']['images/s']:,.0f}" in md
    assert result["hooks"]["wage_jax integer mode"].startswith("timed")


def test_the_markdown_has_the_targets_with_their_status(smoke):
    _, result, md = smoke
    assert "## Targets" in md and "| target | measured | status |" in md
    statuses = [t["status"] for t in result["targets"]]
    assert statuses.count("PASS") == 4  # (a) and the three trajectories
    assert statuses.count("n/a (smoke sizes)") == 2  # the speed targets apply to full sizes on a GPU
    for t in result["targets"]:
        assert t["target"] in md
    assert "17,000 images/s" in md and "overhead <= 5%" in md


# ---- the pieces, without the command ------------------------------------------------------------------------------


def test_differing_elements_counts_bit_patterns():
    a = np.array([0.0, 1.0, np.nan, 2.0], np.float32)
    b = np.array([-0.0, 1.0, np.nan, np.nextafter(np.float32(2.0), np.float32(3.0))], np.float32)
    assert differing_elements(a, b) == 2  # the sign of zero and one ulp; the same NaN bits agree
    assert differing_elements(a, a[:3]) == 4
    assert tree_differing_elements({"x": a, "y": a}, {"x": b, "y": a}) == 2
    with pytest.raises(ValueError, match="structure"):
        tree_differing_elements([a], [a, a])


def _result(differ: int, acc: int, wage_ms: float, float_ms: float, device: str = "NVIDIA H200") -> dict:
    row = {"model": "vgg7", "batch": 128, "analytic flops": 1e12, "achieved TFLOP/s": 1.0, "xla flops": None,
           "xla memory": {}, "device memory after": None, "compile s": 1.0}
    return {
        "meta": {"smoke": False, "command": "c", "date": "d", "elapsed s": 1.0},
        "environment": {"backend": "gpu", "device": device},
        "parity": {"functions": {}, "compared": 10, "differ": differ, "cases skipped": 0, "failures": [],
                   "cases run": 1, "cases selected": 1, "seconds": 1.0, "workers": 1},
        "trajectories": {"runs": [{
            "model": "vgg7 32x32x3", "variant": "wage", "batch": 32, "steps": 20, "initial accumulators differ": 0,
            "compile s": {"accel": 1.0, "host": 1.0}, "run s": 1.0,
            "accumulators differ total": acc, "logits differ total": 0, "first differing step": 3 if acc else None,
            "exact sums guaranteed": {"max terms": 32768, "worst case exact": False}}]},
        "speed": {"vgg7": [
            {**row, "variant": "wage", "ms per step": wage_ms, "images/s": 128 / (wage_ms / 1e3)},
            {**row, "variant": "float", "ms per step": float_ms, "images/s": 128 / (float_ms / 1e3)},
        ]},
    }


def test_targets_pass_and_miss_on_the_figures():
    good = evaluate_targets(_result(0, 0, 7.0, 6.9))
    assert [t["status"] for t in good] == ["PASS", "PASS", "PASS", "PASS"]
    bad = evaluate_targets(_result(3, 5, 10.0, 8.0))
    assert [t["status"] for t in bad] == ["MISS", "MISS", "MISS", "MISS"]
    assert "step 3" in bad[1]["note"] and "2^24" in bad[1]["note"]
    assert "GFLOP" in bad[2]["note"]
    other = evaluate_targets(_result(0, 0, 10.0, 9.9, device="NVIDIA A10"))
    assert other[2]["status"].startswith("n/a") and other[3]["status"] == "PASS"
    assert "| MISS |" in markdown({**_result(3, 5, 10.0, 8.0), "targets": bad})


def test_a_report_with_failed_phases_still_renders():
    failed = {"error": "RuntimeError: boom", "traceback": "..."}
    result = _result(0, 0, 7.0, 6.9)
    result.update(parity=failed, speed={"vgg7": failed, "mlp": failed, "quantizers": failed, "matmul": failed},
                  trajectories={"runs": [{"name": "trajectory vgg7 wage", **failed}]})
    targets = evaluate_targets(result)
    assert [t["status"] for t in targets] == ["MISS", "MISS"]
    assert "boom" in targets[0]["note"] and "boom" in targets[1]["note"]
    assert "| MISS |" in markdown({**result, "targets": targets})


def test_vgg7_forward_macs_match_the_paper_architecture():
    # conv 3->128 and 128->128 at 32x32, 256s at 16x16, 512s at 8x8, dense 8192->1024->10
    expected = 1024 * 128 * 9 * (3 + 128) + 256 * 256 * 9 * (128 + 256) + 64 * 512 * 9 * (256 + 512)
    expected += 8192 * 1024 + 1024 * 10
    assert model_specs(smoke=False)["vgg7"].forward_macs() == expected
    assert model_specs(smoke=False)["mlp"].forward_macs() == 784 * 1024 + 1024 * 10


def test_initial_parameters_follow_the_layers_initializers():
    spec = ModelSpec("mlp", (8, 8), (("hidden", (32,)),))
    wage, flt = init_params(spec, VARIANTS["wage"]), init_params(spec, VARIANTS["float"])
    kernel = wage["dense0"]["kernel"]
    assert kernel.shape == (64, 32) and kernel.dtype == np.float32
    limit = wage_init_limits(fan_in(kernel.shape, layout="flax"), 2, 1.0)[0]
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.9 * limit
    assert np.abs(flt["dense0"]["kernel"]).max() <= math.sqrt(3.0 / 64)
    again = init_params(spec, VARIANTS["wage"])
    assert tree_differing_elements(wage, again) == 0  # one init, reproducible


def test_the_torch_hook_compares_every_function_of_the_documented_api():
    torch = pytest.importorskip("torch")
    from benchmarks.accel_hooks import _compare

    class StubWageTorch:  # the documented API's signatures, trivial arithmetic: the hook's plumbing is tested
        shift = staticmethod(lambda x: x / x.abs().max())
        C = staticmethod(lambda x, bits: x.clamp(-1, 1))
        QW = staticmethod(lambda x, bits, scale=1.0, mode="nearest", noise=None: torch.round(x * 2**(bits - 1)))
        QG = staticmethod(lambda x, bits_G, lr, mode="nearest", noise=None: x * lr)

        class WAGEQuantizer(torch.nn.Module):
            def __init__(self, bits_A, bits_E, A_mode, E_mode):
                super().__init__()

            def forward(self, x):
                return x * 0.5

    out = _compare(StubWageTorch, torch, smoke=True, devices=("cpu", "cpu"))
    assert out["differ"] == 0 and out["compared"] > 0
    assert {"shift", "C bits=2", "QW bits=2 stochastic (noise)", "WAGEQuantizer 8/8 nearest backward"} <= set(
        out["functions"])


def test_the_float_baseline_runs_at_both_precisions():
    from benchmarks.accel_common import Devices
    from benchmarks.accel_train import measure_speed

    spec = ModelSpec("mlp", (8, 8), (("hidden", (16,)),))
    rows = measure_speed(spec, ["float", "float_default"], 4, Devices.detect(), rounds=1, steps_per_round=1)
    assert [r["variant"] for r in rows] == ["float", "float_default"]
    assert all(r["ms per step"] > 0 and r["images/s"] > 0 for r in rows)


def test_the_budget_must_be_positive(tmp_path):
    from benchmarks.accelerator import main

    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--budget-s", "0"])
    assert exc.value.code == 2


def test_an_integer_step_that_does_not_compile_is_reported_with_the_float_path_timed(monkeypatch):
    """XLA:GPU implements integer convolutions only in some cuDNN patterns: the error is a finding, not a crash."""
    from benchmarks import accel_train
    from benchmarks.accel_common import Devices

    spec = model_specs(smoke=True)["vgg7"]

    class FloatPath:  # a built float-path runner (no compilation in this test)
        variant, batch, compile_s, memory, flops, stablehlo = VARIANTS["wage"], 8, 0.1, {}, None, None

        def __init__(self):
            self.spec = spec

        def run(self, n):
            return 1e-3

    def make_runner(spec, variant, *args, **kwargs):
        raise RuntimeError("UNIMPLEMENTED: Integer convolutions for CuDNN must have this pattern: ...")

    monkeypatch.setattr(accel_train, "make_runner", make_runner)
    res = accel_train.integer_vs_float_path(spec, 8, Devices.detect(), 2, 1, {"wage": FloatPath()})
    assert res["integer unsupported"].startswith("RuntimeError: UNIMPLEMENTED: Integer convolutions")
    assert [r["variant"] for r in res["rows"]] == ["wage"] and res["images/s"]["wage"] == pytest.approx(8000)
    assert "integer speedup" not in res
    md = markdown({**_result(0, 0, 7.0, 6.9), "targets": [], "speed": {"integer": res}})
    assert "## (d) Integer mode against the float path" in md and "does not compile on this backend" in md
