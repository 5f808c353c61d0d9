"""The public surface of ``wage_jax`` (and ``wage_data``): the names of each namespace are pinned here, every one
is documented, and ``wage_jax``'s implementation stays private (``wage_jax._src``)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import wage_jax
from wage_parity.testing import run_python

ROOT = Path(__file__).resolve().parents[1]

PUBLIC = {
    "wage_jax": {
        "C", "QG", "QW", "ScaleByQGState", "WAGEConfig", "checked", "clip_params", "fixed_point_quantize",
        "fixed_point_quantize_with_mask", "keep_params_clipped", "kernel_scale", "make_train_step", "max_pool_2x2",
        "scale_by_qg", "shift", "sse_loss", "straight_through", "wage_conv_general_dilated", "wage_dot_general",
        "wage_init", "wage_kernel_init", "wage_quantize", "wage_sgd",
    },
    "wage_jax.linen": {"WAGEConv", "WAGEConvGeneralDilated", "WAGEDense", "WAGEDotGeneral", "WAGEQuantizer"},
    "wage_jax.nnx": {"WAGEConv", "WAGEConvGeneralDilated", "WAGEDense", "WAGEDotGeneral", "WAGEQuantizer"},
    "wage_jax.models": {"MLP", "LeNet5", "VGG7"},
    "wage_jax.parallel": {"DATA_AXIS", "batch_sharding", "data_mesh", "make_data_parallel_train_step", "replicate",
                          "replicated_sharding", "shard_batch"},
    "wage_jax.integer": {"exact_in_float32", "integer_conv", "integer_dense", "integer_plan", "on_grid"},
    "wage_jax.export": {"FORMATS", "check_float32_agreement", "export_model", "export_run", "float32_onnx",
                        "integer_forward", "integer_onnx", "integer_program", "stablehlo_bytes"},
    "wage_jax.checked": {"EXACT_SUM_LIMIT", "QG", "QW", "check_exact_sums", "check_finite", "checkify",
                         "layer_sum_bounds", "shift", "sum_bounds", "wage_quantize"},
    "wage_data": {"DATASETS", "SOURCES", "DataError", "Dataset", "augment_crop", "augment_crop_flip",
                  "data_fingerprint", "ensure_dataset", "fetch", "hold_out_validation", "load_cifar10", "load_dataset",
                  "load_digits_split", "load_mnist", "load_svhn", "pad_images", "to_inputs"},
}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_namespace_exports_exactly_its_public_names(name):
    module = importlib.import_module(name)
    assert set(module.__all__) == PUBLIC[name]
    for attr in module.__all__:
        obj = getattr(module, attr)
        if callable(obj) or inspect.ismodule(obj):
            assert (obj.__doc__ or "").strip(), f"{name}.{attr} has no docstring"


def test_public_modules_are_the_namespaces_and_the_rest_is_private():
    public = {m.name for m in pkgutil.iter_modules(wage_jax.__path__) if not m.name.startswith("_")}
    assert public == {n.split(".")[1] for n in PUBLIC if n.startswith("wage_jax.")}
    assert not hasattr(wage_jax, "optax"), "no public module named after another package"
    # Public modules import private implementation, never each other's private names.
    for path in (ROOT / "wage_jax").glob("*.py"):
        for line in path.read_text().splitlines():
            if line.startswith("from wage_jax.") and " import " in line:
                imported = line.split(" import ", 1)[1]
                assert not any(n.strip().startswith("_") for n in imported.split(",")), f"{path.name}: {line}"


def test_the_layers_import_under_python_OO():
    # Docstrings are None under -OO: nothing may assume them at import time.
    run_python(["-OO", "-c", "import wage_jax.linen, wage_jax.nnx, wage_jax.models, wage_jax.parallel"], cwd=ROOT,
               check=True, timeout=300)


def test_WAGEConfig_comes_from_the_package_in_use():
    # One class, whichever package a user imports it from: a config made for one framework fits the other.
    from wage_spec import WAGEConfig

    assert wage_jax.WAGEConfig is WAGEConfig
    torch_package = pytest.importorskip("wage_torch", reason="wage_torch needs torch")
    assert torch_package.WAGEConfig is WAGEConfig and "WAGEConfig" in torch_package.__all__


def test_wage_data_imports_numpy_only():
    # The readers serve any training loop: importing them pulls in no framework and none of the optional readers.
    probe = ("import sys, wage_data; print(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'jax', 'torch', 'flax', 'scipy', 'sklearn', 'pooch', 'requests', 'tqdm', 'wage_train'}))")
    assert run_python(["-c", probe], cwd=ROOT, check=True, timeout=120).stdout.strip() == "[]"
