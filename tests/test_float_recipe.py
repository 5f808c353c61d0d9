"""The float baseline's recipes: the standard one (softmax cross-entropy, SGD with momentum 0.9 on the
gradient clipped to norm 1, He init, lr per model family) in JAX and torch, the like-for-like ``wage-sse`` one,
and how ``wage-train`` keeps the recipe across ``--resume``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from wage_spec import WAGEConfig
from wage_train import float_recipe
from wage_train.cli import build_parser, config_from_args, run
from wage_train.config import RunConfig, UsageError
from wage_train.runspec import ModelSpec

QUICK = ["--no-progress", "--limit-batches", "3"]


def _resolve(argv: list[str]) -> dict:
    return config_from_args(build_parser().parse_args(argv)).to_dict()


# ------------------------------------------------------------------------------------------- the update


def _softmax_ce_grad(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy of ``logits = x @ w`` and its gradient, in float64 (closed form)."""
    z = x @ w
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    onehot = np.eye(w.shape[1])[y]
    loss = float(-(np.log(p) * onehot).sum(axis=1).mean())
    return loss, x.T @ (p - onehot) / len(x)


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_standard_recipe_is_clipped_momentum_sgd_on_mean_cross_entropy(framework):
    """Four steps of a one-layer network (logits = x W) against the closed-form gradient, clipped to a global norm
    of 1 (``g / ||g||`` when ``||g|| >= 1``), and the momentum update ``v <- 0.9 v + g``, ``W <- W - lr v``, the lr
    changing between steps (the schedule); loss reported summed over the batch. The inputs' scale makes the first
    steps' gradients shorter than 1 and the last ones longer, so that both branches of the clip are seen."""
    if framework == "jax":
        from wage_train.jax_runner import JaxRunner as Runner
    else:
        from wage_train.torch_runner import TorchRunner as Runner
    spec = ModelSpec("mlp", (4, 4, 1), num_classes=10, hidden=())
    lrs = [0.5, 0.5, 0.25, 0.25]  # one step per epoch
    runner = Runner(spec, WAGEConfig(factor=2.0), quantized=False, lrs=lrs, steps_per_epoch=1, seed=3,
                    float_recipe="standard")
    rng = np.random.default_rng(0)
    w = runner.accumulators()[0].astype(np.float64).T  # (16, 10): torch stores (out, in)
    unclipped, v, u = w.copy(), np.zeros_like(w), np.zeros_like(w)
    norms = []
    for lr, scale in zip(lrs, [0.05, 0.05, 20.0, 20.0], strict=True):
        x = (scale * rng.uniform(-1, 1, (8, 4, 4, 1))).astype(np.float32)
        y = rng.integers(0, 10, 8)
        x64 = x.reshape(8, 16).astype(np.float64)
        loss, g = _softmax_ce_grad(w, x64, y)
        norms.append(np.linalg.norm(g))
        reported, _ = runner.train_step(x, y)
        assert reported == pytest.approx(8 * loss, rel=1e-5)  # summed over the batch
        v = 0.9 * v + (g if norms[-1] < float_recipe.CLIP_NORM else g / norms[-1])
        w = w - lr * v
        u = 0.9 * u + _softmax_ce_grad(unclipped, x64, y)[1]
        unclipped = unclipped - lr * u
    assert norms[0] < 1 and norms[1] < 1 and norms[2] > 2 and norms[3] > 2  # both branches
    got = runner.accumulators()[0].T
    np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-6)
    assert np.abs(got - unclipped).max() > 1e-1  # without the clip it ends elsewhere: the comparison sees it


def test_torch_clip_is_optax_clip_by_global_norm():
    """``torch_clip_gradients`` applies optax's rule to the gradients of several tensors (one global norm), leaves
    gradients shorter than the bound alone, and does nothing for ``wage-sse``."""
    import jax.numpy as jnp
    import optax
    import torch

    rng = np.random.default_rng(4)
    for scale in (0.01, 3.0):
        arrays = [(scale * rng.standard_normal(shape)).astype(np.float32) for shape in [(5, 3), (3,), (2, 2, 4)]]
        params = [torch.zeros(a.shape, requires_grad=True) for a in arrays]
        for p, a in zip(params, arrays, strict=True):
            p.grad = torch.from_numpy(a.copy())
        float_recipe.torch_clip_gradients("standard", params)
        want, _ = optax.clip_by_global_norm(float_recipe.CLIP_NORM).update([jnp.asarray(a) for a in arrays], None)
        for p, a, b in zip(params, arrays, want, strict=True):
            np.testing.assert_allclose(p.grad.numpy(), np.asarray(b), rtol=1e-6, atol=0)
            if scale < 1:
                assert np.array_equal(p.grad.numpy(), a)  # short: untouched
        total = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params))
        assert total == pytest.approx(min(1.0, math.sqrt(sum(float((a.astype(np.float64) ** 2).sum())
                                                               for a in arrays))), rel=1e-6)
        for p, a in zip(params, arrays, strict=True):
            p.grad = torch.from_numpy(a.copy())
        float_recipe.torch_clip_gradients("wage-sse", params)
        assert all(np.array_equal(p.grad.numpy(), a) for p, a in zip(params, arrays, strict=True))


def test_wage_sse_recipe_is_plain_sgd_on_summed_squared_error():
    from wage_train.jax_runner import JaxRunner

    spec = ModelSpec("mlp", (4, 4, 1), num_classes=10, hidden=())
    runner = JaxRunner(spec, WAGEConfig(), quantized=False, lrs=[0.01, 0.01], steps_per_epoch=1, seed=0,
                       float_recipe="wage-sse")
    rng = np.random.default_rng(1)
    w = runner.accumulators()[0].astype(np.float64).T
    for _ in range(2):
        x = rng.uniform(-1, 1, (8, 16)).astype(np.float32)
        y = rng.integers(0, 10, 8)
        err = x.astype(np.float64) @ w - np.eye(10)[y]
        loss, _ = runner.train_step(x.reshape(8, 4, 4, 1), y)
        assert loss == pytest.approx(0.5 * (err**2).sum(), rel=1e-5)
        w = w - 0.01 * x.T.astype(np.float64) @ err  # no momentum: the gradient of the summed loss
    np.testing.assert_allclose(runner.accumulators()[0].T, w, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_jax_and_torch_train_the_same_float_network_from_one_init():
    """The standard recipe in both frameworks from torch's initial weights: the same trajectory up to float32
    rounding (what ``--compare`` does for WAGE, here for a small CNN and the float baseline)."""
    from wage_train.jax_runner import JaxRunner
    from wage_train.torch_runner import TorchRunner

    spec = ModelSpec("lenet5", (16, 16, 1), widths=(4, 8), vgg_hidden=16)
    config = WAGEConfig(factor=2.0)
    common = dict(quantized=False, lrs=[0.05], steps_per_epoch=100, seed=0, float_recipe="standard")
    t = TorchRunner(spec, config, **common)
    j = JaxRunner(spec, config, init_weights=t.accumulators(), **common)
    rng = np.random.default_rng(2)
    for _ in range(5):
        x = rng.uniform(-1, 1, (16, 16, 16, 1)).astype(np.float32)
        y = rng.integers(0, 10, 16)
        (lt, _), (lj, _) = t.train_step(x, y), j.train_step(x, y)
        assert lj == pytest.approx(lt, rel=1e-4)
    for a, b in zip(t.accumulators(), j.accumulators(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)
    first = rng.uniform(-1, 1, (4, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(j.predict(first), t.predict(first), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_standard_recipe_draws_he_uniform_weights(framework):
    """He/Kaiming uniform: U(-sqrt(6 / fan_in), sqrt(6 / fan_in)) with --float's default factor 2."""
    cfg = _resolve(["--float"])
    assert cfg["factor"] == float_recipe.HE_FACTOR == 2.0
    spec = ModelSpec("mlp", (8, 8, 1), hidden=(512,))
    if framework == "jax":
        from wage_train.jax_runner import JaxRunner as Runner
    else:
        from wage_train.torch_runner import TorchRunner as Runner
    w = Runner(spec, WAGEConfig(factor=cfg["factor"]), quantized=False, lrs=[0.1], steps_per_epoch=1,
               seed=0).accumulators()[0]
    limit = math.sqrt(6 / 64)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
    assert np.var(w) == pytest.approx(2 / 64, rel=0.05)


# ------------------------------------------------------------------------------------------ configuration


def test_recipe_options_resolve():
    std = _resolve(["--float"])
    assert (std["float_recipe"], std["factor"], std["lr"]) == ("standard", 2.0, float_recipe.STANDARD_LR["mlp"])
    assert _resolve(["--float", "--model", "vgg7"])["lr"] == float_recipe.STANDARD_LR["vgg7"]
    sse = _resolve(["--float", "--float-recipe", "wage-sse"])
    assert (sse["float_recipe"], sse["factor"], sse["lr"]) == ("wage-sse", 1.0, None)  # lr known with the data
    assert _resolve(["--float", "--factor", "1.5"])["factor"] == 1.5  # explicit --factor wins
    assert _resolve(["--preset", "paper-mnist", "--float"])["factor"] == 2.0  # not the preset's WAGE factor
    assert _resolve([])["float_recipe"] is None and _resolve([])["factor"] == 1.0  # WAGE unchanged
    with pytest.raises(UsageError, match="--float-recipe wage-sse applies to the float baseline"):
        _resolve(["--float-recipe", "wage-sse"])
    assert float_recipe.default_lr("standard", "lenet5", (28, 28, 1)) == float_recipe.STANDARD_LR["lenet5"]
    assert float_recipe.default_lr("wage-sse", "mlp", (28, 28, 1)) == pytest.approx(0.001 * 64 / 784)
    with pytest.raises(ValueError, match="float recipe must be one of standard, wage-sse"):
        float_recipe.default_lr("adam", "mlp", (8, 8, 1))


def test_saved_recipe_is_validated():
    cfg = _resolve(["--float"])
    cfg["lr"] = 0.02
    RunConfig.from_dict(cfg, "config.json")
    for value, message in [("adam", "float_recipe='adam' is not valid (must be null or standard, wage-sse)"),
                           (None, "float_recipe=None is not valid with float=true")]:
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            RunConfig.from_dict({**cfg, "float_recipe": value}, "config.json")
    wage = _resolve([])
    with pytest.raises(UsageError, match="float_recipe='standard' is not valid with float=false"):
        RunConfig.from_dict({**wage, "float_recipe": "standard"}, "config.json")


@pytest.mark.parametrize(("recipe", "lr"), [("standard", float_recipe.STANDARD_LR["mlp"]), ("wage-sse", 0.001)])
def test_cli_default_lr_and_banner(tmp_path, capsys, recipe, lr):
    out = tmp_path / recipe
    run(["--float", "--float-recipe", recipe, "--epochs", "1", *QUICK, "--out-dir", str(out)])
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["float_recipe"], cfg["lr"]) == (recipe, lr)
    assert float_recipe.describe(recipe) in capsys.readouterr().out


def test_resume_keeps_the_recipe(tmp_path, capsys):
    out = tmp_path / "r"
    args = ["--float", "--float-recipe", "wage-sse", "--epochs", "2", *QUICK, "--out-dir", str(out)]
    run([*args, "--stop-after", "1"])
    with pytest.raises(SystemExit) as e:
        run(["--float", "--float-recipe", "standard", "--epochs", "2", *QUICK, "--out-dir", str(out), "--resume"])
    assert e.value.code == 2
    assert "float_recipe='wage-sse'" in capsys.readouterr().err
    run(["--epochs", "2", *QUICK, "--out-dir", str(out), "--resume"])  # no recipe given: the saved one
    assert json.loads((out / "config.json").read_text())["float_recipe"] == "wage-sse"
    assert float_recipe.describe("wage-sse") in capsys.readouterr().out


def test_resume_of_a_float_run_saved_before_the_recipes_is_wage_sse(tmp_path, capsys):
    out = tmp_path / "old"
    run(["--float", "--float-recipe", "wage-sse", "--epochs", "2", *QUICK, "--out-dir", str(out),
         "--stop-after", "1"])
    path = out / "config.json"
    saved = json.loads(path.read_text())
    del saved["float_recipe"]  # as wage-train wrote it before --float-recipe existed
    saved["factor"] = 1.0
    path.write_text(json.dumps(saved))
    run(["--epochs", "2", *QUICK, "--out-dir", str(out), "--resume"])
    assert json.loads(path.read_text())["float_recipe"] == "wage-sse"
    assert "resumed" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- the annealing


def test_annealed_lr_is_a_cosine_over_the_run_and_wage_sse_keeps_its_schedule():
    lr = float_recipe.annealed_lr("standard", 0.16, 10)
    got = [float(lr(t)) for t in range(13)]
    want = [0.16 * (1 + math.cos(math.pi * min(t, 10) / 10)) / 2 for t in range(13)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)  # float32
    assert got[0] == np.float32(0.16) and got[10:] == [0.0, 0.0, 0.0]
    assert all(a > b for a, b in zip(got[:10], got[1:10], strict=False))
    assert float(lr(10**12)) == 0.0  # beyond optax's int32 step count: the last lr
    assert float_recipe.annealed_lr("wage-sse", 0.16, 10) is None


def test_jax_and_torch_take_the_same_annealed_step():
    """The step the optax optimizer takes at step ``k`` (a fresh momentum, a gradient of 0.5, unclipped) and the one
    torch's SGD takes with the torch runner's lr at step ``k`` are the same float32 bits."""
    import jax
    import jax.numpy as jnp
    import optax
    import torch

    from wage_train.torch_runner import TorchRunner

    schedule = float_recipe.annealed_lr("standard", 0.16, 30)
    opt = float_recipe.jax_optimizer("standard", schedule)
    params = {"w": jnp.zeros((), jnp.float32)}
    fresh = opt.init(params)
    update = jax.jit(opt.update)
    spec = ModelSpec("mlp", (2, 2, 1), num_classes=2, hidden=())
    runner = TorchRunner(spec, WAGEConfig(), quantized=False, lrs=schedule, steps_per_epoch=10, seed=0)
    steps = []
    for k in [0, 1, 7, 15, 16, 29, 30, 31]:
        state = optax.tree_utils.tree_set(fresh, count=jnp.asarray(k, jnp.int32))
        updates = update({"w": jnp.float32(0.5)}, state, params)[0]
        jax_step = np.float32(optax.apply_updates(params, updates)["w"])  # from w = 0
        runner.step_count = k
        w = torch.zeros((), requires_grad=True)
        w.grad = torch.tensor(0.5)
        sgd = float_recipe.torch_optimizer("standard", [w], runner.current_lr())
        sgd.step()
        assert w.detach().numpy().tobytes() == jax_step.tobytes(), k
        steps.append(float(jax_step))
    assert steps[0] == np.float32(-0.08) and steps[-2:] == [0.0, 0.0]  # -lr * 0.5 from lr 0.16 down to 0


def test_float_run_anneals_over_its_epochs_and_says_so(tmp_path, capsys):
    out = tmp_path / "f"
    run(["--float", "--epochs", "3", *QUICK, "--out-dir", str(out)])
    header = capsys.readouterr().out
    assert "lr 0.16 cosine-annealed to 0 over the run" in header
    rows = json.loads((out / "metrics.json").read_text())["history"]
    lrs = [r["lr"] for r in rows]  # the lr of each epoch's first step, of 9 steps in all
    np.testing.assert_allclose(lrs, [0.16 * (1 + math.cos(math.pi * 3 * e / 9)) / 2 for e in range(3)], rtol=1e-6)
    sse = tmp_path / "s"
    run(["--float", "--float-recipe", "wage-sse", "--epochs", "3", *QUICK, "--out-dir", str(sse)])
    assert "(paper schedule)" in capsys.readouterr().out
