"""The training example end to end: every mode on a tiny budget, resume, compare, errors, reports."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

from wage_parity.testing import f32_bits, python_env, run_python, write_fake_cifar, write_fake_mnist
from wage_train.checkpoints import latest_checkpoint
from wage_train.cli import parse_bits, run
from wage_train.float_recipe import STANDARD_LR
from wage_train.reporting import results_table
from wage_train.runspec import lr_table

QUICK = ["--no-progress", "--limit-batches", "3"]


def _rows(path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _check_outputs(out, frameworks, epochs):
    rows = _rows(out / "metrics.csv")
    expected = [(e, f) for e in range(1, epochs + 1) for f in frameworks]
    assert [(int(r["epoch"]), r["framework"]) for r in rows] == expected
    for r in rows:
        assert np.isfinite(float(r["loss"])) and 0 <= float(r["test_acc"]) <= 1 and float(r["images_per_s"]) > 0
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert latest_checkpoint(out / "checkpoints").name == f"epoch_{epochs:04d}"
    cfg = json.loads((out / "config.json").read_text())
    return rows, cfg, np.load(out / "weights.npz")


# ------------------------------------------------------------------------------------- single runs


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_wage_run_learns_and_keeps_weights_on_the_grid(tmp_path, framework):
    out = tmp_path / "run"
    summary = run(["--framework", framework, "--epochs", "2", "--limit-batches", "5", "--no-progress",
                   "--out-dir", str(out)])
    rows, cfg, weights = _check_outputs(out, [framework], 2)
    assert cfg["bits"] == [2, 8, 8, 8] and cfg["G_mode"] == "stochastic" and not cfg["float"]
    # 10 WAGE steps (5 at lr 8) already beat chance (10%) on digits.
    assert summary["frameworks"][framework]["final_test_acc"] > 0.2
    # Paper schedule for 2 epochs: lr 8 in epoch 1, then 1/8 (lr 1 has an empty share).
    assert [float(r["lr"]) for r in rows] == [8.0, 0.125]
    # bits_W = 2: the clipped accumulators lie in [-0.5, 0.5] (C), on a QG grid of 2^-7 * lr multiples.
    for w in weights.values():
        if framework == "torch":
            w = np.clip(w, -0.5, 0.5)  # the reference stores C() of them only at the next step
        assert np.abs(w).max() <= 0.5
        assert len(np.unique(w)) > 3  # accumulators, not the 3-valued forward weights


# The standard recipe (the default) in both frameworks; wage-sse once (the cheaper torch run): its update rule is
# pinned framework by framework in tests/test_float_recipe.py.
@pytest.mark.parametrize(("framework", "recipe", "lr"), [("jax", "standard", STANDARD_LR["mlp"]),
                                                        ("torch", "standard", STANDARD_LR["mlp"]),
                                                        ("torch", "wage-sse", 0.001)])
def test_float_baseline_run(tmp_path, framework, recipe, lr):
    out = tmp_path / "float"
    summary = run(["--float", "--float-recipe", recipe, "--framework", framework, "--epochs", "2", "--schedule",
                   "constant", "--no-progress", "--out-dir", str(out)])
    rows, cfg, weights = _check_outputs(out, [framework], 2)
    # The standard recipe anneals by a cosine over its 22 steps (--schedule does not apply): lr/2 at step 11,
    # recorded as the float32 lr the step takes.
    lrs = pytest.approx([lr, lr / 2], rel=1e-6) if recipe == "standard" else [lr, lr]
    assert cfg["float"] and cfg["lr"] == lr and [float(r["lr"]) for r in rows] == lrs
    # 22 SGD steps beat chance (10%).
    assert summary["frameworks"][framework]["final_test_acc"] > 0.25
    # Unquantized: weights take (nearly) as many values as elements, and leave WAGE's 2-bit range.
    w = next(iter(weights.values()))
    assert len(np.unique(w)) > 0.9 * w.size


def test_validation_split_holds_out_training_examples_and_never_reads_the_test_set(tmp_path, capsys, monkeypatch):
    from wage_data import hold_out_validation, load_digits_split

    full = load_digits_split()
    held = hold_out_validation(full, 0.2)
    assert held.eval_split == "validation" and (len(held.x_train), len(held.x_test)) == (1150, 287)
    # A partition of the training set (rows are unique images up to duplicates: compare as multisets of rows).
    joined = np.concatenate([held.x_train, held.x_test]).reshape(1437, -1)
    assert sorted(map(bytes, joined)) == sorted(map(bytes, full.x_train.reshape(1437, -1)))
    assert np.array_equal(np.bincount(np.concatenate([held.y_train, held.y_test])), np.bincount(full.y_train))
    # The split is fixed (independent of the run's seed).
    assert np.array_equal(hold_out_validation(full, 0.2).y_test, held.y_test)

    # The CLI evaluates on that split: poison the test set, the run must not see it.
    poisoned = type(full)(full.name, full.x_train, full.y_train, full.x_test * 0, full.y_test * 0 + 99,
                          full.max_value)
    monkeypatch.setattr("wage_train.cli.load_dataset", lambda name, data_dir=None: poisoned)
    out = tmp_path / "val"
    summary = run(["--float", "--validation", "0.2", "--epochs", "2", "--schedule", "constant", "--no-progress",
                   "--out-dir", str(out)])
    printed = capsys.readouterr().out
    assert "1150 train / 287 validation (held out of training; test set unused)" in printed
    assert "final validation accuracy" in printed
    assert json.loads((out / "config.json").read_text())["validation"] == 0.2
    assert 0.25 < summary["frameworks"]["jax"]["final_test_acc"] <= 1.0  # label 99 would give 0


# ------------------------------------------------------------------------------------------ compare


def test_compare_nearest_is_bit_identical(tmp_path):
    out = tmp_path / "cmp"
    summary = run(["--compare", "--epochs", "2", *QUICK, "--out-dir", str(out)])
    assert summary["compare"] == {"identical_all_epochs": True, "first_divergent_epoch": None}
    cfg = json.loads((out / "config.json").read_text())
    assert {cfg[m] for m in ("W_mode", "A_mode", "G_mode", "E_mode")} == {"nearest"}
    compare = _rows(out / "compare.csv")
    assert len(compare) == 2
    for c in compare:
        assert int(c["steps"]) == 3 and int(c["steps_logits_differ"]) == 0
        assert int(c["accumulator_elements"]) == 64 * 256 + 256 * 10 and int(c["accumulator_elements_differ"]) == 0
        assert int(c["test_predictions_differ"]) == 0 and int(c["test_logits_differ"]) == 0
    rows = _rows(out / "metrics.csv")
    jax_rows = [r for r in rows if r["framework"] == "jax"]
    torch_rows = [r for r in rows if r["framework"] == "torch"]
    for a, b in zip(jax_rows, torch_rows, strict=True):
        assert (a["train_acc"], a["test_acc"]) == (b["train_acc"], b["test_acc"])
        # Identical logits; the loss's float32 sum may be reduced in a different order.
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5)
    # And the saved final weights agree: JAX == C(torch) (JAX keeps its accumulators clipped).
    w = np.load(out / "weights.npz")
    assert np.array_equal(f32_bits(w["jax.dense0"].T), f32_bits(np.clip(w["torch.layers.2.weight"], -0.5, 0.5)))


def test_compare_with_stochastic_gradients_reports_the_divergence(tmp_path, capsys):
    out = tmp_path / "cmp_sto"
    summary = run(["--compare", "--G-mode", "stochastic", "--epochs", "1", *QUICK, "--out-dir", str(out)])
    assert "draws different random numbers" in capsys.readouterr().out
    assert summary["compare"]["identical_all_epochs"] is False
    c = _rows(out / "compare.csv")[0]
    assert int(c["accumulator_elements_differ"]) > 0 and int(c["steps_logits_differ"]) >= 1


# ------------------------------------------------------------------------------------------- resume


def _checkpoint_leaves(out, framework):
    ckpt = latest_checkpoint(out / "checkpoints")
    with ocp.StandardCheckpointer() as c:
        return c.restore((ckpt / framework).resolve())


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path, framework):
    # WAGE 2-8-8-8 with stochastic G and E: the PRNG state (JAX keys / torch generator) and the data
    # order must both be restored for the bits to agree.
    args = ["--framework", framework, "--epochs", "2", *QUICK]
    full, part = tmp_path / "full", tmp_path / "part"
    run([*args, "--out-dir", str(full)])
    run([*args, "--out-dir", str(part), "--stop-after", "1"])
    assert _rows(part / "metrics.csv")[-1]["epoch"] == "1"
    after_one = dict(np.load(part / "weights.npz"))
    run([*args, "--out-dir", str(part), "--resume"])
    a, b = np.load(full / "weights.npz"), np.load(part / "weights.npz")
    assert sorted(a) == sorted(b)
    for k in a:
        assert np.array_equal(f32_bits(a[k]), f32_bits(b[k])), f"{k} differs after resume"
    assert _rows(full / "metrics.csv")[1]["loss"] == _rows(part / "metrics.csv")[1]["loss"]
    if framework == "jax":
        la, lb = _checkpoint_leaves(full, "jax"), _checkpoint_leaves(part, "jax")
        assert sorted(la) == sorted(lb)  # params, step count, optimizer and forward keys
        for k in la:
            assert np.array_equal(np.asarray(la[k]), np.asarray(lb[k])), k
    else:
        sa, sb = _checkpoint_leaves(full, "torch"), _checkpoint_leaves(part, "torch")
        assert sa["step_count"] == sb["step_count"] == 6
        assert np.array_equal(sa["torch_rng_state"], sb["torch_rng_state"])
    # The weights after one epoch differ from the final ones: the comparison above can fail.
    assert any(not np.array_equal(f32_bits(after_one[k]), f32_bits(a[k])) for k in a)


def test_resume_refuses_a_changed_training_option(tmp_path, capsys):
    out = tmp_path / "r"
    run(["--epochs", "2", *QUICK, "--out-dir", str(out), "--stop-after", "1", "--framework", "torch"])
    with pytest.raises(SystemExit) as e:
        run(["--epochs", "2", *QUICK, "--out-dir", str(out), "--resume", "--lr", "4"])
    assert e.value.code == 2
    assert "lr=8.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(["--out-dir", str(tmp_path / "none"), "--resume"])


# ------------------------------------------------------------------------------- MNIST and CIFAR-10


def test_mnist_run_from_idx_files(tmp_path):
    write_fake_mnist(tmp_path / "mnist", n_train=40, n_test=12)
    out = tmp_path / "out"
    summary = run(["--dataset", "mnist", "--data-dir", str(tmp_path / "mnist"), "--hidden", "32",
                   "--batch-size", "16", "--epochs", "1", "--no-progress", "--out-dir", str(out)])
    assert summary["model"] == "MLP 784-32-10"
    rows, cfg, _ = _check_outputs(out, ["jax"], 1)
    assert cfg["dataset"] == "mnist" and not cfg["augment"]


def test_cifar10_vgg7_run_with_augmentation(tmp_path):
    write_fake_cifar(tmp_path, per_batch=8, n_test=10)
    out = tmp_path / "out"
    summary = run(["--dataset", "cifar10", "--data-dir", str(tmp_path), "--framework", "torch", "--widths", "4,4,8",
                   "--vgg-hidden", "16", "--batch-size", "16", "--epochs", "1", "--no-progress",
                   "--out-dir", str(out)])
    assert summary["model"] == "VGG7 conv 4-4-8, dense 16-10"
    _, cfg, weights = _check_outputs(out, ["torch"], 1)
    assert cfg["augment"] and cfg["model"] == "vgg7" and cfg["epochs"] == 1
    assert weights["torch.layers.1.weight"].shape == (4, 3, 3, 3)  # conv0, NCHW


@pytest.mark.parametrize("dataset, expected", [("mnist", "t10k-labels-idx1-ubyte"), ("cifar10", "data_batch_5")])
def test_wrong_data_dir_is_one_clear_error(tmp_path, capsys, dataset, expected):
    with pytest.raises(SystemExit) as e:
        run(["--dataset", dataset, "--data-dir", str(tmp_path / "missing"), "--out-dir", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------- options and report


def test_option_errors(capsys):
    for argv, message in [
        (["--compare", "--float"], "--compare"),
        (["--bits", "2-8-8"], "W-A-G-E"),
        (["--bits", "1-8-8-8"], "bits_W"),
        (["--compare", "--framework", "torch"], "not allowed with"),
    ]:
        with pytest.raises(SystemExit) as e:
            run(argv)
        assert e.value.code == 2
        assert message in capsys.readouterr().err


def test_parse_bits_and_paper_schedule():
    assert parse_bits("2-8-8-8") == [2, 8, 8, 8]
    assert parse_bits("2-fp-8-fp") == [2, -1, 8, -1]
    # contract §3: 300 epochs: 8 for 0-199, 1 for 200-249, 1/8 for 250-299.
    table = lr_table(8.0, 300, "paper")
    assert table[:200] == [8.0] * 200 and table[200:250] == [1.0] * 50 and table[250:] == [0.125] * 50
    assert lr_table(0.003, 60, "paper")[45] == pytest.approx(0.003 / 8)
    assert lr_table(2.0, 3, "constant") == [2.0, 2.0, 2.0]


def test_results_table_aggregates_seeds(tmp_path):
    for seed, acc in [(0, 0.90), (1, 0.95)]:
        d = tmp_path / f"s{seed}"
        d.mkdir()
        metrics = {
            "config": {"dataset": "digits", "float": False, "bits": [2, 8, 8, 8], "epochs": 60, "seed": seed},
            "summary": {"model": "MLP 64-256-10", "frameworks": {"jax": {
                "final_test_acc": acc, "best_test_acc": acc + 0.01, "train_time_s": 3.0, "eval_time_s": 1.0}}},
        }
        (d / "metrics.json").write_text(json.dumps(metrics))
    table = results_table([tmp_path / "s0", tmp_path / "s1", tmp_path / "absent"])
    line = table.splitlines()[-1]
    # mean 92.50, sample std of (90, 95) = 3.54; best mean 93.50; 4.0 s per run.
    assert line == "| digits | MLP 64-256-10 | WAGE 2-8-8-8 | jax | 60 | 0,1 | 92.50% ± 3.54 | 93.50% | 4.0 s |"


@pytest.mark.slow
def test_jax_run_on_several_devices_equals_one_device(tmp_path):
    """--devices: data-parallel training over 4 virtual CPU devices (subprocesses, so the other tests keep
    one device) ends with the accumulators of a one-device run, whether its checkpoint resumes on the mesh or
    in a one-device process."""
    common = ["-m", "examples.train", "--epochs", "2", "--limit-batches", "4", "--batch-size", "64", "--hidden", "16",
              "--no-progress"]
    four_devices, one_device = python_env(devices=4), python_env()
    one, four, moved = tmp_path / "one", tmp_path / "four", tmp_path / "four-resumed-on-one"
    run_python([*common, "--out-dir", one, "--devices", "1"], env=one_device, timeout=None, check=True)
    run_python([*common, "--out-dir", four, "--devices", "4", "--stop-after", "1"], env=four_devices, timeout=None,
               check=True)
    shutil.copytree(four, moved)
    for out, env in ((four, four_devices), (moved, one_device)):
        done = run_python([*common, "--out-dir", out, "--resume"], env=env, timeout=None, check=True)
        assert "resumed" in done.stdout
        a, b = np.load(one / "weights.npz"), np.load(out / "weights.npz")
        assert a.files == b.files
        for name in a.files:
            assert np.array_equal(f32_bits(a[name]), f32_bits(b[name])), (out.name, name)


def test_integer_run_equals_the_float32_path_bit_for_bit(tmp_path, capsys):
    """``--integer`` (int8 operands, int32 sums) trains the same accumulators as the float32 path."""
    args = ["--epochs", "1", "--hidden", "32", *QUICK, "--G-mode", "stochastic", "--E-mode", "stochastic"]
    run([*args, "--out-dir", str(tmp_path / "f32")])
    run([*args, "--integer", "--out-dir", str(tmp_path / "int")])
    a, b = np.load(tmp_path / "f32" / "weights.npz"), np.load(tmp_path / "int" / "weights.npz")
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
        np.testing.assert_array_equal(f32_bits(a[name]), f32_bits(b[name]), err_msg=name)
    assert json.loads((tmp_path / "int" / "config.json").read_text())["integer"] is True
    with pytest.raises(SystemExit):
        run(["--integer", "--framework", "torch", "--out-dir", str(tmp_path / "t")])
    assert "--integer" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- the paper schedule


def test_paper_schedule_fits_any_epoch_count_and_is_unchanged_where_it_fitted():
    """lr 8 for the first 2/3 of the epochs (never none), 1 for the next 1/6, 1/8 for the rest: a 1-epoch run
    trains at lr 8 (it trained at 1/8); every count with a non-empty first 2/3 keeps its schedule exactly."""
    from wage_train.runspec import LrSchedule

    assert LrSchedule(8.0, 1, "paper").segments() == [(0, 8.0)]
    assert LrSchedule(8.0, 60, "paper").segments() == [(0, 8.0), (40, 1.0), (50, 0.125)]
    assert LrSchedule(8.0, 100, "paper").segments() == [(0, 8.0), (66, 1.0), (83, 0.125)]
    assert LrSchedule(8.0, 300, "paper").segments() == [(0, 8.0), (200, 1.0), (250, 0.125)]
    for epochs in range(2, 400):
        before = [8.0 if e < epochs * 2 // 3 else 1.0 if e < epochs * 5 // 6 else 0.125 for e in range(epochs)]
        assert lr_table(8.0, epochs, "paper") == before, epochs


def test_header_shows_the_lr_actually_used_per_segment(tmp_path, capsys):
    run([*QUICK, "--epochs", "1", "--out-dir", str(tmp_path / "one")])
    assert ", lr 8 (paper schedule) |" in capsys.readouterr().out
    rows = json.loads((tmp_path / "one" / "metrics.json").read_text())["history"]
    assert [r["lr"] for r in rows] == [8.0]
    run([*QUICK, "--epochs", "60", "--stop-after", "1", "--out-dir", str(tmp_path / "sixty")])
    assert ", lr 8 (epochs 1-40), 1 (41-50), 0.125 (51-60) (paper schedule) |" in capsys.readouterr().out
