"""Every teaching script in ``examples/`` runs end to end in its ``--smoke`` mode, one subprocess each."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import pytest

from wage_parity.testing import run_python

ROOT = Path(__file__).resolve().parents[1]
EPOCH = re.compile(r"loss(?:/image)? (\S+)\s+test accuracy (\S+)")

# example -> the smallest test accuracy its smoke run must reach (chance is 0.1; seeded, so each run is the same)
SMOKE = {"qpytorch_wage": 0.12, "flax_mnist": 0.3, "nnx_digits": 0.2}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMOKE))
def test_training_example_learns_in_smoke_mode(name: str) -> None:
    if name == "qpytorch_wage":
        pytest.importorskip("torch", reason="the QPyTorch example needs torch")
    out = run_python(["-m", f"examples.{name}", "--smoke"], cwd=ROOT, check=True, timeout=300).stdout
    epochs = EPOCH.findall(out)
    assert epochs, out
    loss, accuracy = (float(v) for v in epochs[-1])
    assert math.isfinite(loss) and loss > 0
    assert SMOKE[name] <= accuracy <= 1, out


@pytest.mark.slow
def test_data_parallel_example_equals_one_device_bit_for_bit() -> None:
    out = run_python(["-m", "examples.data_parallel", "--smoke"], cwd=ROOT, check=True, timeout=300).stdout
    assert "2 cpu devices" in out and "weights equal the one-device run's" in out, out


@pytest.mark.slow
def test_saved_run_example_predicts_what_the_run_recorded() -> None:
    out = run_python(["-m", "examples.saved_run", "--smoke"], cwd=ROOT, check=True, timeout=300).stdout
    found = re.search(r"test accuracy (\S+) \(the run recorded (\S+)\)", out)
    assert found and found[1] == found[2], out
    if importlib.util.find_spec("onnxruntime") is not None:  # the export extra: the integer ONNX predicts the same
        exported = re.search(r"onnxruntime's classes equal the run's on (\d+)/(\d+)", out)
        assert exported and exported[1] == exported[2], out


def test_every_example_has_a_smoke_mode_and_a_test() -> None:
    scripts = {p.stem for p in (ROOT / "examples").glob("*.py")} - {"__init__", "train"}  # train: wage-train's alias
    assert scripts == set(SMOKE) | {"data_parallel", "saved_run"}
    for name in scripts:
        assert "--smoke" in (ROOT / "examples" / f"{name}.py").read_text(), name


def test_mnist_example_refuses_a_folder_without_idx_files(tmp_path: Path) -> None:
    result = run_python(["-m", "examples.flax_mnist", "--data-dir", tmp_path], cwd=ROOT, timeout=120)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert f"MNIST not found under --data-dir {tmp_path}" in last and "train-images-idx3-ubyte[.gz]" in last, last
