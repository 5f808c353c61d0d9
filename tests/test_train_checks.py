"""One line for every input the run cannot take, and no resume onto something else: model vs data
shape, empty splits, resource limits, the torch backend variable, changed data, hand-edited config.json,
``--resume --integer``, and a resume on another device count.
"""

from __future__ import annotations

import json
import shutil
import signal

import numpy as np
import pytest

from wage_parity.testing import write_fake_mnist
from wage_train.cli import main, run

QUICK = ["--no-progress", "--hidden", "8", "--limit-batches", "1"]


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        run([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert e.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("wage-train: ")
    return lines[0]


# ------------------------------------------------------------------------------- model vs data, resources


def test_lenet5_on_images_it_cannot_take_is_one_line(tmp_path, capsys):
    line = _refused(["--preset", "paper-mnist", "--dataset", "digits", "--out-dir", tmp_path / "a"], capsys)
    assert "--model lenet5 (--preset paper-mnist) needs square images of at least 16x16" in line and "8x8" in line
    from wage_parity.testing import IDX_IMAGES_MAGIC, write_idx_file

    write_fake_mnist(tmp_path / "m", n_train=4, n_test=4, gz=False)
    for name, n in (("train", 4), ("t10k", 4)):
        write_idx_file(tmp_path / "m" / f"{name}-images-idx3-ubyte", IDX_IMAGES_MAGIC, np.zeros((n, 28, 20)), False)
    line = _refused(["--dataset", "mnist", "--data-dir", tmp_path / "m", "--model", "lenet5",
                     "--out-dir", tmp_path / "b"], capsys)
    assert "28x20" in line
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing left behind


def test_empty_test_split_via_the_cli_is_one_line(tmp_path, capsys):
    from wage_parity.testing import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, write_idx_file

    write_fake_mnist(tmp_path, n_train=4, n_test=4, gz=False)
    write_idx_file(tmp_path / "t10k-images-idx3-ubyte", IDX_IMAGES_MAGIC, np.zeros((0, 28, 28)), False)
    write_idx_file(tmp_path / "t10k-labels-idx1-ubyte", IDX_LABELS_MAGIC, np.zeros(0), False)
    line = _refused(["--dataset", "mnist", "--data-dir", tmp_path, "--out-dir", tmp_path / "o"], capsys)
    assert "t10k-images-idx3-ubyte: holds no images" in line


@pytest.mark.parametrize("argv,expected", [
    (["--seed", str(2**63)], "--seed 9223372036854775808: must be an integer in [0, 2^63-1]"),
    (["--devices", "4"], "--devices 4: this process has 1 JAX device(s)"),
    (["--lr", "1e30"], "--lr 1e+30: WAGE's update takes an lr in (0, 2^24]"),
    (["--factor", "1e-300"], "--factor 1e-300: layer 1 (fan-in 64) would get a scale of 2^500"),
    (["--factor", "1e300"], "--factor 1e+300: layer 1 (fan-in 64) would get an initializer limit of 2.17e+149"),
    (["--factor", "1e-100", "--float"], "--factor 1e-100: layer 1 (fan-in 64) would get an initializer limit"),
    (["--hidden", "4000000000"], "--hidden: MLP 64-4000000000-10 has 296,000,000,000 weights"),
    (["--hidden", "1000000000000"], "--hidden: MLP 64-1000000000000-10 has"),
    (["--model", "vgg7", "--vgg-hidden", "1000000000000"], "--widths / --vgg-hidden: VGG7"),
])
def test_resource_limits_are_one_line(tmp_path, capsys, argv, expected):
    argv = [*QUICK, *argv, "--out-dir", tmp_path / "o"]
    if "--hidden" in argv[5:]:
        del argv[1:3]  # QUICK's --hidden 8
    assert expected in _refused(argv, capsys)
    assert not (tmp_path / "o").exists()


def test_largest_seed_runs(tmp_path):
    run([*QUICK, "--epochs", "1", "--seed", str(2**63 - 1), "--out-dir", str(tmp_path / "o")])


def test_eval_batch_size_is_capped_at_the_evaluation_set(tmp_path, monkeypatch):
    from wage_train import loop

    made = []
    real = loop.make_runners
    monkeypatch.setattr(loop, "make_runners", lambda *a, **k: made.extend(real(*a, **k)) or made)
    run([*QUICK, "--epochs", "1", "--eval-batch-size", "1000000000", "--out-dir", str(tmp_path / "o")])
    assert [r.eval_batch_size for r in made] == [360]  # digits' 360 test images, not 10^9 (238 GiB of padding)
    assert json.loads((tmp_path / "o" / "config.json").read_text())["eval_batch_size"] == 1000000000


def test_bad_torch_backend_variable_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WAGE_TORCH_BACKEND", "bogus")
    line = _refused([*QUICK, "--framework", "torch", "--out-dir", tmp_path / "o"], capsys)
    assert "WAGE_TORCH_BACKEND='bogus' must be 'qtorch' or 'torch'" in line


def test_preset_with_another_model_takes_that_models_sizes(tmp_path):
    from wage_train.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--preset", "paper-mnist", "--model", "vgg7"])).to_dict()
    assert cfg["model"] == "vgg7" and cfg["widths"] == [128, 256, 512] and cfg["vgg_hidden"] == 1024


def test_signal_after_the_outputs_are_written_is_ignored(tmp_path):
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        main([*QUICK, "--epochs", "1", "--out-dir", str(tmp_path / "o")])
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # survives interpreter shutdown (no silent 143)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    """A run on fake MNIST set A (40 train / 12 test), stopped after 1 of 2 epochs; sets B (60) and C (40, other
    pixels) and A' (a copy of A elsewhere)."""
    root = tmp_path_factory.mktemp("resume")
    write_fake_mnist(root / "A", n_train=40, n_test=12, seed=0)
    write_fake_mnist(root / "B", n_train=60, n_test=12, seed=0)
    write_fake_mnist(root / "C", n_train=40, n_test=12, seed=7)
    shutil.copytree(root / "A", root / "A2")
    out = root / "run"
    run(["--dataset", "mnist", "--data-dir", str(root / "A"), "--batch-size", "16", "--epochs", "2", "--stop-after",
         "1", "--no-progress", "--hidden", "8", "--out-dir", str(out)])
    return root, out


@pytest.mark.parametrize("other,expected", [("B", "train 60 (was 40)"), ("C", "different contents (sha256)")])
def test_resume_on_other_data_is_refused(mnist_run, tmp_path, capsys, other, expected):
    root, saved = mnist_run
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    line = _refused(["--resume", "--out-dir", out, "--data-dir", root / other], capsys)
    assert "--resume: the data differs" in line and expected in line and str(root / "A") in line
    assert json.loads((out / "metrics.json").read_text())["history"][-1]["epoch"] == 1


def test_resume_on_the_same_data_elsewhere_continues(mnist_run, tmp_path):
    root, saved = mnist_run
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    run(["--resume", "--out-dir", str(out), "--data-dir", str(root / "A2"), "--no-progress"])
    assert [m["epoch"] for m in json.loads((out / "metrics.json").read_text())["history"]] == [1, 2]


@pytest.mark.parametrize("key,value,expected", [
    ("lr", 1e30, "lr=1e+30 is not valid"), ("batch_size", 0, "batch_size=0 is not valid"),
    ("seed", -1, "seed=-1 is not valid"), ("epochs", 2.5, "epochs=2.5 is not valid"),
    ("bits", [2, 8, 8], "bits=[2, 8, 8] is not valid"), ("G_mode", "up", "G_mode='up' is not valid"),
    ("float", "no", "float='no' is not valid"), ("integer", True, "--integer runs WAGE's JAX layers"),
    ("widths", [1, 2], "widths=[1, 2] must hold the 3 VGG7"), ("bits", [1, 8, 8, 8], "bits_W"),
    ("data_fingerprint", "abc", "data_fingerprint='abc' is not valid"),
    ("data_fingerprint", [1, 2], "data_fingerprint=[1, 2] is not valid"),
    ("data_fingerprint", {"sha256": [1]}, "the data differs"),
    ("hidden", [10**12], "--hidden: MLP 784-1000000000000-10 has"), ("factor", 1e-300, "--factor 1e-300"),
])
def test_hand_edited_config_is_validated_on_resume(mnist_run, tmp_path, capsys, key, value, expected):
    root, saved = mnist_run
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg[key] = value
    if key == "widths":
        cfg["model"] = "vgg7"
    if key == "integer":
        cfg["framework"] = "torch"
    (out / "config.json").write_text(json.dumps(cfg))
    line = _refused(["--resume", "--out-dir", out], capsys)
    assert expected in line and ("config.json" in line or key in ("hidden", "factor", "data_fingerprint"))


@pytest.mark.parametrize("extra", [["--framework", "torch"], ["--float"]])
def test_resume_integer_is_refused_where_a_new_run_would_be(tmp_path, capsys, extra):
    out = tmp_path / "run"
    run([*QUICK, *extra, "--epochs", "2", "--stop-after", "1", "--out-dir", str(out)])
    before = (out / "config.json").read_bytes()
    assert "--integer runs WAGE's JAX layers" in _refused(["--resume", "--integer", "--out-dir", out], capsys)
    assert (out / "config.json").read_bytes() == before


# ---------------------------------------------------------------------------------------- the lr schedule


@pytest.mark.parametrize("schedule", ["paper", "paper-epochs", "constant"])
@pytest.mark.parametrize("epochs", [1, 2, 3, 5, 6, 7, 60, 299, 300, 301])
def test_lazy_schedule_equals_the_table_bit_for_bit(schedule, epochs):
    from wage_train.runspec import LrSchedule, lr_table

    lazy, table = LrSchedule(0.75, epochs, schedule), lr_table(0.75, epochs, schedule)
    assert len(lazy) == epochs and list(lazy) == table and lazy[-1] == table[-1] and lazy[1:3] == table[1:3]
    pieces = lazy.segments()
    expanded = [v for i, (s, v) in enumerate(pieces)
                for _ in range(s, pieces[i + 1][0] if i + 1 < len(pieces) else epochs)]
    assert expanded == table and len(pieces) <= 3


def test_an_astronomical_epoch_count_costs_no_memory(tmp_path):
    """``--epochs 99999999999``: the old per-epoch list took 800 GB; the schedule is computed on demand."""
    from wage_train.runspec import LrSchedule

    lazy = LrSchedule(8.0, 99_999_999_999, "paper")
    assert lazy.segments() == [(0, 8.0), (66_666_666_666, 1.0), (83_333_333_332, 0.125)]
    summary = run([*QUICK, "--epochs", "99999999999", "--stop-after", "1", "--out-dir", str(tmp_path / "o")])
    assert summary["epochs_done"] == 1
    rows = json.loads((tmp_path / "o" / "metrics.json").read_text())["history"]
    assert [(r["epoch"], r["lr"]) for r in rows] == [(1, 8.0)]


# ------------------------------------------------------------------------- the process's surroundings


def _one_line_exit_2(p) -> str:
    err = p.stderr.decode("utf-8", "backslashreplace") if isinstance(p.stderr, bytes) else p.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("stdout", ["/dev/full", "closed"])
def test_print_config_to_a_full_or_closed_stdout_is_one_line(stdout):
    import subprocess
    import sys

    from wage_parity.testing import python_env

    target = open(stdout, "wb") if stdout != "closed" else None  # noqa: SIM115
    argv = [sys.executable, "-m", "wage_train", "--print-config"]
    if target is None:  # the child starts with file descriptor 1 closed
        argv = [sys.executable, "-c", "import os, runpy, sys; os.close(1); sys.stdout = None; sys.argv = "
                "['wage-train', '--print-config']; runpy.run_module('wage_train', run_name='__main__')"]
    try:
        p = subprocess.run(argv, stdout=target, stderr=subprocess.PIPE, timeout=120, env=python_env())
    finally:
        if target is not None:
            target.close()
    assert "--print-config: cannot write to standard output" in _one_line_exit_2(p)


def test_a_name_of_invalid_utf8_is_one_line(tmp_path):
    import subprocess
    import sys

    from wage_parity.testing import python_env

    p = subprocess.run([sys.executable, "-m", "wage_train", *QUICK, "--name", b"caf\xe9", "--out-dir",
                        tmp_path / "o"], capture_output=True, timeout=120, env=python_env())
    assert "--name" in _one_line_exit_2(p) and "UTF-8" in p.stderr.decode()
    assert not (tmp_path / "o").exists()


def test_a_jax_platform_this_machine_lacks_is_one_line(tmp_path):
    import subprocess
    import sys

    from wage_parity.testing import python_env

    p = subprocess.run([sys.executable, "-m", "wage_train", *QUICK, "--out-dir", tmp_path / "o"],
                       capture_output=True, text=True, timeout=120, env=python_env(JAX_PLATFORMS="nosuchplatform"))
    assert "JAX cannot start a backend (JAX_PLATFORMS='nosuchplatform'" in _one_line_exit_2(p)
    assert not (tmp_path / "o").exists()
