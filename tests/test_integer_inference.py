"""Inference with integers: every form of a trained network predicts the training forward's classes and logits.

The networks are trained here with wage_jax for a few steps (MLP and LeNet-5 on the embedded 8x8 digits,
LeNet-5's input upscaled to 28x28, VGG7 at a small width on the digits upscaled to 32x32x3); on every
test image the float32 training forward, the NumPy reference, the JAX integer forward, onnxruntime (both
rescale forms) and the deserialized StableHLO agree on the integer logits.
"""

from __future__ import annotations

import sys
import textwrap
import warnings
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from wage_jax import clip_params, make_train_step, wage_sgd
from wage_jax._src.integer_inference import quantize_input as jax_input_codes
from wage_jax.export import (
    check_float32_agreement,
    export_model,
    export_run,
    float32_onnx,
    integer_forward,
    integer_onnx,
    integer_program,
    stablehlo_bytes,
)
from wage_jax.models import MLP, VGG7, LeNet5
from wage_parity import spec_model
from wage_parity.testing import run_python
from wage_spec import WAGEConfig
from wage_spec.integer_program import IntegerLayer, IntegerProgram, quantize_input, rescale, run_integer_program

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

CFG = WAGEConfig.nearest()
CFG_8_6 = WAGEConfig.nearest(bits_W=8, bits_A=6)  # wider weights (shifts 7 and more), narrower activations
N_TRAIN = 1437


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data.astype(np.float32) / 16.0) * 2 - 1, d.target  # [-1, 1], as the contract's inputs


def _upscale(x: np.ndarray, factor: int, pad: int, channels: int) -> np.ndarray:
    img = np.kron(x.reshape(-1, 8, 8), np.ones((factor, factor), np.float32))
    img = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), constant_values=-1.0)
    return np.repeat(img[..., None], channels, axis=-1)


def _train(model, x, y, steps: int):
    cfg = model.config
    params = clip_params(model.init(jax.random.key(0), x[:2]), cfg.bits_W)
    tx = wage_sgd(cfg.bits_W, cfg.bits_G, 8.0, "nearest")
    state = tx.init(params)
    step = make_train_step(lambda p, xb, key: model.apply(p, xb), tx)
    for i in range(steps):
        sl = slice(i * 64 % (N_TRAIN - 64), i * 64 % (N_TRAIN - 64) + 64)
        params, state, _, _ = step(params, state, x[sl], y[sl])
    return params


NETWORKS = {
    # name: (model, inputs from the 8x8 digits, training steps, test accuracy it reaches at least; chance 0.1)
    "mlp": (lambda: MLP(config=CFG, hidden=(64,)), lambda x: x, 40, 0.5),
    "lenet5": (lambda: LeNet5(config=CFG, widths=(8, 16), hidden=32), lambda x: _upscale(x, 3, 2, 1), 40, 0.5),
    "mlp w8 a6": (lambda: MLP(config=CFG_8_6, hidden=(64,)), lambda x: x, 40, 0.5),
    "vgg7": (lambda: VGG7(config=CFG, widths=(8, 16, 16), hidden=32), lambda x: _upscale(x, 4, 0, 3), 80, 0.3),
}


@pytest.fixture(scope="module", params=[
    "mlp", "mlp w8 a6", "lenet5", pytest.param("vgg7", marks=pytest.mark.slow)])
def trained(request):
    make, inputs, steps, accuracy = NETWORKS[request.param]
    x, y = _digits()
    x = inputs(x)
    model = make()
    params = _train(model, x, y, steps)
    test_x, test_y = x[N_TRAIN:], y[N_TRAIN:]
    logits = np.asarray(jax.jit(model.apply)(params, test_x))
    program = integer_program(model, params, model.config)
    return SimpleNamespace(name=request.param, accuracy=accuracy, model=model, params=params, x=test_x, y=test_y,
                           logits=logits, program=program)


def _ort(model_proto, images: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": images})[0]


def _int_logits(t) -> np.ndarray:
    """The training forward's float32 logits on the integer grid (an exact power-of-two scaling)."""
    s = t.logits * 2.0 ** -t.program.logit_exponent
    assert np.array_equal(s, np.round(s))
    return s.astype(np.int32)


def test_every_form_gives_the_training_forwards_integer_logits(trained):
    expected = _int_logits(trained)
    # trained for real: well above chance, and the logits span many integers
    assert (expected.argmax(1) == trained.y).mean() > trained.accuracy
    assert len(np.unique(expected)) > 50
    forms = {
        "numpy": run_integer_program(trained.program, trained.x),
        "jax": np.asarray(jax.jit(lambda im: integer_forward(trained.program, im))(trained.x)),
        "onnx qlinear": _ort(integer_onnx(trained.program), trained.x),
        "onnx exact": _ort(integer_onnx(trained.program, "exact"), trained.x),
    }
    for name, logits in forms.items():
        assert logits.dtype == np.int32, name
        np.testing.assert_array_equal(logits, expected, err_msg=name)
    # the float32 ONNX export is the training forward too
    np.testing.assert_array_equal(_ort(float32_onnx(trained.program), trained.x), trained.logits)


def test_stablehlo_runs_where_only_jax_is_installed(trained, tmp_path):
    (tmp_path / "program.bin").write_bytes(stablehlo_bytes(trained.program))
    np.save(tmp_path / "images.npy", trained.x)
    # A fresh interpreter that cannot import this project: jax alone deserializes and runs the program.
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("wage_jax", "wage_spec", "wage_train", "wage_torch", "wage_parity"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import jax, numpy as np
        exported = jax.export.deserialize(open({str(tmp_path / "program.bin")!r}, "rb").read())
        np.save({str(tmp_path / "out.npy")!r}, np.asarray(exported.call(np.load({str(tmp_path / "images.npy")!r}))))
        assert not [m for m in sys.modules if m.startswith("wage")]
    """)
    run_python(["-c", script], cwd=tmp_path, check=True, timeout=300)
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, _int_logits(trained))


def _op_types(model_proto) -> set[str]:
    return {node.op_type for node in model_proto.graph.node}


def test_the_integer_onnx_graphs_hold_no_float_products(trained):
    kind = "MatMul" if trained.name.startswith("mlp") else "Conv"
    qlinear, exact = _op_types(integer_onnx(trained.program)), _op_types(integer_onnx(trained.program, "exact"))
    for ops in (qlinear, exact):
        assert not ops & {"Conv", "MatMul", "Gemm"}, ops
    assert f"QLinear{kind}" in qlinear and "MatMulInteger" in qlinear
    assert f"{kind}Integer" in exact and not any(op.startswith("QLinear") for op in exact)
    assert kind in _op_types(float32_onnx(trained.program))  # the comparison graph has them


def test_export_model_writes_what_onnxruntime_and_jax_run(trained, tmp_path):
    onnx_path, hlo_path = tmp_path / "net.onnx", tmp_path / "net.stablehlo"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the float32 bound holds on these images: no warning
        program = export_model(trained.model, trained.params, trained.model.config, "onnx", onnx_path,
                               images=trained.x)
    export_model(trained.model, trained.params, trained.model.config, "stablehlo", hlo_path)
    expected = _int_logits(trained)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"images": trained.x})[0], expected)
    meta = sess.get_modelmeta().custom_metadata_map
    assert int(meta["logit_exponent"]) == program.logit_exponent
    out = jax.export.deserialize(hlo_path.read_bytes()).call(trained.x[:3])
    np.testing.assert_array_equal(np.asarray(out), expected[:3])


# ----------------------------------------------------------------------------------- rounding and bounds


def test_rescale_rounds_half_to_even_and_clamps():
    s = np.arange(-3000, 3001)
    for shift in (0, 1, 2, 3, 5):
        # float64 divides these exactly; np.rint is round half to even
        expected = np.clip(np.rint(s / 2.0**shift), -127, 127)
        np.testing.assert_array_equal(rescale(s, shift, 127), expected)
    assert rescale(np.array([2, 6, 10, -2, -6]), 2, 127).tolist() == [0, 2, 2, 0, -2]  # ties 0.5, 1.5, 2.5


def test_input_codes_are_the_contracts_q_a_on_tricky_values():
    # ties, values next to ties, and values whose float32 y + 1/2 rounds up (contract §1)
    unit = 2.0**-7
    base = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 126.5, 127.5, 200.0, -300.0, 0.0, 1.0 - 2**-25])
    x = np.concatenate([base, np.nextafter(base, 10), np.nextafter(base, -10)]).astype(np.float32) * np.float32(unit)
    x = np.concatenate([x, np.random.default_rng(0).uniform(-1.2, 1.2, 5000).astype(np.float32)])
    expected = spec_model.wage_forward(x, 8)[0] * np.float32(128)
    np.testing.assert_array_equal(quantize_input(x, 8), expected)
    np.testing.assert_array_equal(np.asarray(jax.jit(jax_input_codes, static_argnums=1)(x, 8)), expected)


def _dense_program(fan_in: int, bits: int = 8, kernel_value: float = 1.0):
    cfg = WAGEConfig.nearest(bits_W=bits, bits_A=bits)
    model = MLP(config=cfg, hidden=(4,), num_classes=2)
    params = model.init(jax.random.key(0), np.zeros((1, fan_in), np.float32))
    params = jax.tree.map(lambda k: np.full(k.shape, kernel_value, np.float32), params)
    return model, params, cfg


def test_a_network_whose_sums_could_overflow_int32_is_refused():
    model, params, cfg = _dense_program(140_000)  # 140000 * 127 * 127 > 2^31
    with pytest.raises(ValueError, match=r"^layer 'dense0' could overflow int32: 140000 terms") as err:
        integer_program(model, params, cfg)
    assert "\n" not in str(err.value)


def test_the_float32_bound_is_checked_on_the_given_images(tmp_path):
    model, params, cfg = _dense_program(1100)  # 1100 * 127 * 127 > 2^24: not exact in float32 on every input
    program = integer_program(model, params, cfg)
    ones = np.ones((2, 1100), np.float32)
    with pytest.warns(UserWarning, match=r"^layers dense0: float32 sums exceed 2\^24"):
        assert check_float32_agreement(program, ones) == ["dense0"]
    quiet = np.full((2, 1100), 0.3, np.float32)  # 1100 * 38 * 127 < 2^24
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_float32_agreement(program, quiet) == []
    with pytest.warns(UserWarning, match="dense0"):
        export_model(model, params, cfg, "onnx", tmp_path / "m.onnx", images=ones)
    # beyond 2^24 the ONNX export uses the exact integer rescale, still the integer program
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (16, 1100)).astype(np.float32)
    graph = integer_onnx(program)
    assert "QLinearMatMul" not in _op_types(graph)
    np.testing.assert_array_equal(_ort(graph, images), run_integer_program(program, images))


@pytest.mark.parametrize("change, match", [
    ({"A_mode": "stochastic"}, "config.A_mode='stochastic'"),
    ({"W_mode": "stochastic"}, "config.W_mode='stochastic'"),
    ({"bits_W": 12}, "bits_W=12"),
    ({"bits_A": -1}, "bits_A=-1"),
])
def test_configs_without_an_integer_form_are_refused(change, match):
    cfg = WAGEConfig.nearest(**change)
    model = MLP(config=cfg, hidden=(4,))
    params = model.init(jax.random.key(0), np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError, match=match):
        integer_program(model, params, cfg)


def test_float_baselines_other_models_and_torch_runs_are_refused(tmp_path):
    model = MLP(config=CFG, hidden=(4,), quantized=False)
    params = model.init(jax.random.key(0), np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError, match="float baseline"):
        integer_program(model, params, CFG)
    with pytest.raises(ValueError, match="model must be a wage_jax.models"):
        integer_program(object(), params, CFG)
    with pytest.raises(ValueError, match="fmt must be one of"):
        export_model(model, params, CFG, "tflite", tmp_path / "m")
    with pytest.raises(ValueError, match="JAX run"):
        export_run(SimpleNamespace(framework="torch", params=None, wage=CFG), "onnx", tmp_path / "m")
    with pytest.raises(ValueError, match="WAGE run"):
        export_run(SimpleNamespace(framework="jax", params=params, wage=None), "onnx", tmp_path / "m")


def test_export_run_takes_a_loaded_run_and_the_shape_of_its_images(tmp_path):
    x, y = _digits()
    model = MLP(config=CFG, hidden=(16,))
    params = _train(model, x, y, 5)
    images = x[N_TRAIN:].reshape(-1, 8, 8, 1)  # wage-train feeds the MLP (N, 8, 8, 1) images
    run = SimpleNamespace(framework="jax", model=model, params=params, wage=CFG)
    program = export_run(run, "onnx", tmp_path / "run.onnx", images=images)
    assert program.input_shape == (8, 8, 1)
    export_run(run, "stablehlo", tmp_path / "run.stablehlo", images=images)
    expected = np.asarray(model.apply(params, images)) * 2.0 ** -program.logit_exponent
    sess = ort.InferenceSession(str(tmp_path / "run.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"images": images})[0], expected)
    out = jax.export.deserialize((tmp_path / "run.stablehlo").read_bytes()).call(images)
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_an_input_shape_the_model_cannot_take_is_refused():
    model = LeNet5(config=CFG, widths=(2, 4), hidden=8)
    params = model.init(jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32))
    assert integer_program(model, params, CFG).input_shape == (28, 28, 1)
    with pytest.raises(ValueError, match=r"input_shape \(32, 32, 1\) gives 100 features, dense0 takes 64"):
        integer_program(model, params, CFG, (32, 32, 1))
    with pytest.raises(ValueError, match=r"input_shape must be \(height, width, 1\)"):
        integer_program(model, params, CFG, (28, 28, 3))
    mlp = MLP(config=CFG, hidden=(4,))
    with pytest.raises(ValueError, match="does not hold dense0's 64 inputs"):
        integer_program(mlp, mlp.init(jax.random.key(0), np.zeros((1, 64), np.float32)), CFG, (8, 8, 2))


def test_images_with_nan_are_refused_eagerly():
    model = MLP(config=CFG, hidden=(4,))
    program = integer_program(model, model.init(jax.random.key(0), np.zeros((1, 2), np.float32)), CFG)
    bad = np.array([[0.5, np.nan]], np.float32)
    for run in (run_integer_program, integer_forward):
        with pytest.raises(ValueError, match="^images hold NaN or Inf"):
            run(program, bad)



@pytest.mark.parametrize("shift", [0, 1, 2, 3, 7])
def test_onnxruntime_qlinear_requantization_is_wages_rounding_on_every_sum(shift):
    # codes x0, x1 in [-127, 127] with the kernel (127, 1) give every sum S in [-16256, 16256], every tie included
    k0, k1 = np.meshgrid(np.arange(-127, 128), np.arange(-127, 128), indexing="ij")
    images = (np.stack([k0.ravel(), k1.ravel()], axis=1) / 128.0).astype(np.float32)  # exactly on the 8-bit grid
    s = 127 * k0.ravel() + k1.ravel()
    layers = (IntegerLayer("dense", np.array([[127], [1]], np.int8), shift, name="requantize"),
              IntegerLayer("dense", np.array([[1]], np.int8), 0, relu=False, requantize=False, name="read"))
    program = IntegerProgram(8, 8, layers, (2,), 0)
    graph = integer_onnx(program)
    assert "QLinearMatMul" in _op_types(graph)
    expected = np.clip(np.rint(s / 2.0**shift), 0, 127)[:, None]  # ReLU, Q_A's round half to even, the clamp
    np.testing.assert_array_equal(_ort(graph, images), expected)
    np.testing.assert_array_equal(run_integer_program(program, images), expected)


@pytest.mark.slow
def test_the_inference_benchmark_phase_reports_every_form_side_by_side(tmp_path):
    import json

    from benchmarks.suite import main

    assert main(["--smoke", "--only", "inference", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "benchmarks.json").read_text())["phases"]["inference"]["rows"]
    names = {r["name"] for r in rows}
    for net in ("lenet5", "vgg7"):
        assert {f"{net} b1 integer qlinear", f"{net} b8 integer qlinear", f"{net} float32 model"} <= names
        assert all(r["ratio"] > 0 for r in rows if r["name"].startswith(f"{net} b"))
    accuracies = {r["figure"] for r in rows if r["unit"] == "fraction"}
    assert len(accuracies) == 1, "every form of LeNet-5 has the training forward's accuracy"
    sizes = {r["name"]: r["figure"] for r in rows if r["unit"] == "bytes"}
    assert sizes["lenet5 integer qlinear model"] < sizes["lenet5 float32 model"] / 2


def test_the_deploying_guides_python_blocks_run(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    x, y = _digits()
    x = _upscale(x, 3, 2, 1)
    model = LeNet5(config=CFG, widths=(4, 8), hidden=16)
    params = _train(model, x, y, 3)
    test = x[N_TRAIN:N_TRAIN + 40]
    text = (Path(__file__).resolve().parents[1] / "docs" / "deploying.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    ns = {"model": model, "params": params, "config": CFG, "test_images": test, "images": test}
    for block in blocks:
        exec(block, ns)
    expected = np.asarray(model.apply(params, test))
    np.testing.assert_array_equal(ns["float_logits"], expected)
    np.testing.assert_array_equal(ns["logits"] * 2.0 ** ns["program"].logit_exponent, expected)


def test_a_shift_beyond_the_exact_rounding_range_is_refused():
    layers = (IntegerLayer("dense", np.ones((2, 1), np.int8), 15, name="wide"),
              IntegerLayer("dense", np.ones((1, 1), np.int8), 0, relu=False, requantize=False, name="read"))
    with pytest.raises(ValueError, match=r"^layer 'wide': shift 15 outside \[0, 14\]"):
        run_integer_program(IntegerProgram(8, 8, layers, (2,)), np.zeros((1, 2), np.float32))
    ok = (IntegerLayer("dense", np.ones((2, 1), np.int8), 14, name="wide"), layers[1])
    assert run_integer_program(IntegerProgram(8, 8, ok, (2,)), np.ones((1, 2), np.float32) * 0.5).tolist() == [[0]]


def test_without_onnx_the_onnx_export_names_the_extra(monkeypatch):
    model = MLP(config=CFG, hidden=(4,))
    program = integer_program(model, model.init(jax.random.key(0), np.zeros((1, 8), np.float32)), CFG)
    monkeypatch.setitem(sys.modules, "onnx", None)  # import raises ImportError, as where it is not installed
    with pytest.raises(ImportError, match=r"pip install 'wage-jax\[export\]'"):
        integer_onnx(program)
    assert stablehlo_bytes(program)  # StableHLO needs jax only
