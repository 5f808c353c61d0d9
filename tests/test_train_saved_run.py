"""A saved run in one call (``wage_train.load_run``) and ``wage-train eval RUN_DIR``: the accuracy they give is
the run's recorded final accuracy, bit for bit, whatever the framework, model and rounding."""

from __future__ import annotations

import json

import numpy as np
import pytest

import wage_train
from wage_data import load_dataset
from wage_parity.testing import write_fake_mnist
from wage_train.cli import run

QUICK = ["--no-progress", "--hidden", "16", "--limit-batches", "2", "--epochs", "2"]


def _recorded(out, framework: str) -> float:
    return json.loads((out / "metrics.json").read_text())["summary"]["frameworks"][framework]["final_test_acc"]


def _eval(argv, capsys) -> tuple[dict, str]:
    result = run(["eval", *map(str, argv)])
    return result, capsys.readouterr().out


@pytest.mark.parametrize("extra", [[], ["--W-mode", "stochastic", "--A-mode", "stochastic"],
                                   ["--float"], ["--framework", "torch"]],
                         ids=["wage", "stochastic-forward", "float", "torch"])
def test_eval_gives_the_recorded_final_accuracy(tmp_path, capsys, extra):
    out = tmp_path / "run"
    run([*QUICK, *extra, "--out-dir", str(out)])
    loaded = wage_train.load_run(out)
    framework = "torch" if "torch" in extra else "jax"
    assert loaded.framework == framework and loaded.config.float == ("--float" in extra)
    assert (loaded.wage is None) == ("--float" in extra)
    result, printed = _eval([out], capsys)
    assert result["test_acc"] == _recorded(out, framework)  # the same float, not merely close
    assert result["examples"] == 360 and "(the same bits)" in printed


def test_compare_run_loads_either_framework(tmp_path, capsys):
    out = tmp_path / "run"
    run([*QUICK, "--compare", "--out-dir", str(out)])
    capsys.readouterr()
    assert wage_train.load_run(out).framework == "jax"
    for fw in ("jax", "torch"):
        result, printed = _eval([out, "--framework", fw], capsys)
        assert result["test_acc"] == _recorded(out, fw) and printed.startswith(f"{fw}: test accuracy")


def test_loaded_model_predicts_from_raw_pixels(tmp_path):
    write_fake_mnist(tmp_path / "mnist", n_train=40, n_test=12)
    out = tmp_path / "run"
    run(["--dataset", "mnist", "--data-dir", str(tmp_path / "mnist"), "--model", "vgg7", "--widths", "4,4,8",
         "--vgg-hidden", "16", "--batch-size", "8", *QUICK, "--out-dir", str(out)])
    loaded = wage_train.load_run(out)
    data = load_dataset("mnist", tmp_path / "mnist")
    inputs = loaded.preprocess(data.x_test)
    assert inputs.dtype == np.float32 and inputs.shape == (12, 32, 32, 1)  # VGG7 pads 28 -> 32
    assert inputs.min() >= -1.0 and inputs.max() <= 1.0 and (inputs[:, :2] == -1.0).all()
    predicted = loaded.predict(data.x_test)
    assert predicted.shape == (12,) and predicted.dtype.kind == "i"
    # The Flax module and parameters on their own give the same classes.
    logits = loaded.model.apply({"params": loaded.params}, inputs)
    np.testing.assert_array_equal(np.asarray(logits).argmax(-1), predicted)
    assert float((predicted == data.y_test).mean()) == _recorded(out, "jax")


def test_eval_refusals_are_one_line(tmp_path, capsys):
    for argv, expected in [([tmp_path / "none"], "config.json not found"),
                           ([tmp_path / "run", "--framework", "torch"], "trained jax"),
                           ([tmp_path / "run", "--dataset", "mnist", "--data-dir", tmp_path / "mnist"],
                            "the run's model takes (8, 8, 1)")]:
        if argv[0] == tmp_path / "run" and not (tmp_path / "run").exists():
            run([*QUICK, "--out-dir", str(tmp_path / "run")])
            write_fake_mnist(tmp_path / "mnist", n_train=8, n_test=4)
            capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            run(["eval", *map(str, argv)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and expected in err and len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------------------ wage-train export


def test_export_writes_onnx_and_stablehlo_that_predict_as_the_run(tmp_path, capsys):
    """``wage-train export`` of a short digits run: onnxruntime's and the StableHLO's classes are
    ``load_run(...).predict``'s on every test image."""
    ort = pytest.importorskip("onnxruntime")
    import jax

    out = tmp_path / "run"
    run([*QUICK, "--out-dir", str(out)])
    assert run(["export", str(out), "--format", "onnx"]) == {"path": str(out / "model.onnx"), "format": "onnx"}
    hlo = tmp_path / "net.stablehlo"
    run(["export", str(out), "--format", "stablehlo", "--out", str(hlo)])
    assert f"wrote {hlo} (stablehlo" in capsys.readouterr().out
    loaded = wage_train.load_run(out)
    raw = load_dataset("digits").x_test
    want = loaded.predict(raw)
    images = loaded.preprocess(raw)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"images": images})[0].argmax(-1), want)
    logits = jax.export.deserialize(hlo.read_bytes()).call(images)
    np.testing.assert_array_equal(np.asarray(logits).argmax(-1), want)
    assert len(set(want.tolist())) > 1  # a network that predicts one class would hide a wrong export


@pytest.mark.parametrize(("extra", "says"), [(["--framework", "torch"], "not a torch one"),
                                            (["--float"], "not a float one")], ids=["torch", "float"])
def test_export_of_a_torch_or_float_run_is_one_line(tmp_path, capsys, extra, says):
    out = tmp_path / "run"
    run([*QUICK, *extra, "--out-dir", str(out)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run(["export", str(out), "--format", "stablehlo"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and says in err and "export needs a JAX WAGE run" in err
    assert not (out / "model.stablehlo").exists()


def test_export_without_onnx_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    out = tmp_path / "run"
    run([*QUICK, "--out-dir", str(out)])
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx fails
    with pytest.raises(SystemExit) as exc:
        run(["export", str(out), "--format", "onnx"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "pip install 'wage-jax[export]'" in err
