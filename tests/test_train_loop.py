"""wage-train's loop keeps the device busy and writes a clean log to a file.

* the epoch's metrics and final weights equal those of a plain per-step loop written here (the loop
  before the prefetching one: ``JaxRunner.train_step`` with the forward key split on the host, the loss read after
  every step);
* between the first and the last step of an epoch nothing is copied from the device to the host;
* images/s counts the batch preparation;
* output that is not a terminal gets one line per epoch and no progress-bar frames.

One instrumented run (digits, MLP 64-16-10, 2 epochs of 3 batches of 32) serves the first four checks.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import time

import jax
import numpy as np
import pytest

from wage_parity.testing import f32_bits, python_env
from wage_train.cli import run

ARGS = ["--hidden", "16", "--epochs", "2", "--limit-batches", "3", "--batch-size", "32"]
ROW = re.compile(r"^\s+\d+\s+jax\s")
DELAY = 0.1  # added to each batch's preparation
GUARD = "jax_transfer_guard_device_to_host"


@pytest.fixture(scope="module")
def instrumented_run(tmp_path_factory):
    """The CLI run, with stdout and stderr in memory (not a terminal, no progress option), a slower batch
    preparation, and every device-to-host copy refused from ``begin_epoch`` until ``end_epoch``.

    ``jax.transfer_guard_device_to_host`` refuses such copies on an accelerator; on the CPU backend, whose arrays
    are host memory, it lets everything through, so the copy itself (``jax.Array._value``, behind ``np.asarray``,
    ``float``, ``.item()``, ``.tolist()`` and ``jax.device_get``) is made to raise as well.
    """
    from jax._src.array import ArrayImpl

    from wage_train import loop
    from wage_train.jax_runner import JaxRunner

    out = tmp_path_factory.mktemp("loop") / "run"
    window, steps = {"open": False}, []
    real_value, real_to_inputs = ArrayImpl._value, loop.to_inputs
    begin, end, real_step = JaxRunner.begin_epoch, JaxRunner.end_epoch, JaxRunner.step

    def guarded_value(self):
        if window["open"]:
            raise AssertionError("a device-to-host copy between the epoch's first and last step")
        return real_value.fget(self)

    def guarded_begin(self, n):
        begin(self, n)
        jax.config.update(GUARD, "disallow_explicit")  # every thread: the batch producer's too
        window["open"] = True

    def guarded_end(self):
        window["open"] = False
        jax.config.update(GUARD, "allow")
        return end(self)

    def counted_step(self, b):
        steps.append(window["open"])
        return real_step(self, b)

    def slow_to_inputs(x, max_value):
        time.sleep(DELAY)
        return real_to_inputs(x, max_value)

    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ArrayImpl, "_value", property(guarded_value))
        window["open"] = True  # the guard can fail: a copy in the window raises
        with pytest.raises(AssertionError, match="device-to-host copy"):
            float(jax.numpy.ones(()) + 1)
        window["open"] = False
        mp.setattr(JaxRunner, "begin_epoch", guarded_begin)
        mp.setattr(JaxRunner, "end_epoch", guarded_end)
        mp.setattr(JaxRunner, "step", counted_step)
        mp.setattr(loop, "to_inputs", slow_to_inputs)
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                run([*ARGS, "--out-dir", str(out)])
        finally:
            jax.config.update(GUARD, "allow")
    return {"out": out, "steps": steps, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def _assert_equals_a_plain_per_step_loop(reference_run) -> dict:
    """The run's history and weights equal those of the synchronous loop (the loss read after every step),
    recomputed here; returns its config."""
    from wage_data import load_dataset, to_inputs
    from wage_train.config import RunConfig
    from wage_train.runner import make_runners
    from wage_train.runspec import LrSchedule, ModelSpec

    cfg = json.loads((reference_run / "config.json").read_text())
    data = load_dataset(cfg["dataset"])
    spec = ModelSpec(kind="mlp", image_shape=data.image_shape, num_classes=data.num_classes,
                     hidden=tuple(cfg["hidden"]), widths=tuple(cfg["widths"]), vgg_hidden=cfg["vgg_hidden"])
    batch, spe = cfg["batch_size"], cfg["limit_batches"]
    lrs = LrSchedule(cfg["lr"], cfg["epochs"], cfg["schedule"])
    (runner,) = make_runners(RunConfig.from_dict(cfg, "config.json"), spec, lrs, spe)
    rng = np.random.default_rng(cfg["seed"])
    expected = []
    for _ in range(cfg["epochs"]):
        order = rng.permutation(len(data.x_train))
        loss, correct = 0.0, 0
        for b in range(spe):
            idx = order[b * batch : (b + 1) * batch]
            yb = data.y_train[idx]
            step_loss, logits = runner.train_step(to_inputs(data.x_train[idx], data.max_value), yb)
            loss += step_loss
            correct += int((logits.argmax(-1) == yb).sum())
        test_pred = runner.predict(to_inputs(data.x_test, data.max_value)).argmax(-1)
        expected.append((loss / (spe * batch), correct / (spe * batch), float((test_pred == data.y_test).mean())))
    history = json.loads((reference_run / "metrics.json").read_text())["history"]
    assert [(m["loss"], m["train_acc"], m["test_acc"]) for m in history] == expected
    weights = np.load(reference_run / "weights.npz")
    ref = runner.raw_weights()
    assert sorted(weights.files) == sorted(f"jax.{k}" for k in ref)
    for k, v in ref.items():
        np.testing.assert_array_equal(f32_bits(weights[f"jax.{k}"]), f32_bits(v), err_msg=k)
    return cfg


def test_metrics_and_weights_equal_a_plain_per_step_loop(instrumented_run):
    cfg = _assert_equals_a_plain_per_step_loop(instrumented_run["out"])
    assert cfg["G_mode"] == cfg["E_mode"] == "stochastic"  # the forward key chain is exercised


def test_a_batch_mean_loss_is_reported_as_the_plain_loop_reports_it(tmp_path):
    """The standard float recipe's loss is a batch mean: the epoch's loss column is still per example, as the
    plain loop computes it (each step's mean times its batch size), not divided by the batch once more."""
    with contextlib.redirect_stdout(io.StringIO()):
        run([*ARGS, "--float", "--out-dir", str(tmp_path / "run")])
    cfg = _assert_equals_a_plain_per_step_loop(tmp_path / "run")
    assert cfg["float_recipe"] == "standard"


def test_no_device_to_host_copy_between_the_first_and_the_last_step(instrumented_run):
    assert instrumented_run["steps"] == [True] * 6  # 2 epochs x 3 steps, all inside the guarded window


def test_reported_throughput_counts_the_data_preparation(instrumented_run):
    """images/s = training images / the epoch loop's wall time: a slow batch preparation shows in it (before
    the prefetching loop only the step calls were timed)."""
    history = json.loads((instrumented_run["out"] / "metrics.json").read_text())["history"]
    for m in history:
        assert m["train_time_s"] >= 3 * DELAY  # three batches, prepared one after another
        assert m["images_per_s"] == pytest.approx(3 * 32 / m["train_time_s"])
        assert m["eval_time_s"] > 0 and m["time_s"] == pytest.approx(m["train_time_s"] + m["eval_time_s"])


def test_output_that_is_not_a_terminal_has_one_line_per_epoch_and_no_bar(instrumented_run):
    out, err = instrumented_run["stdout"], instrumented_run["stderr"]
    assert "\r" not in out + err and "epoch 1/2" not in err and "batch/s" not in err
    assert [int(ln.split()[0]) for ln in out.splitlines() if ROW.match(ln)] == [1, 2]


@pytest.mark.slow  # a subprocess (imports jax, flax, orbax): ~7-15 s
def test_a_log_written_to_a_file_has_one_line_per_epoch_and_no_bar(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        import subprocess
        import sys

        p = subprocess.run([sys.executable, "-m", "wage_train", *ARGS, "--out-dir", str(tmp_path / "run")],
                           stdout=f, stderr=subprocess.STDOUT, env=python_env(), timeout=300)
    text = log.read_text()
    assert p.returncode == 0, text
    assert "\r" not in text and "batch/s" not in text and "it/s" not in text
    rows = [ln for ln in text.splitlines() if ROW.match(ln)]
    assert [int(r.split()[0]) for r in rows] == [1, 2], text
    assert sum(ln.startswith("epoch  framework") for ln in text.splitlines()) == 1


def test_progress_bar_only_on_a_terminal_unless_asked(tmp_path, capsys, monkeypatch):
    import argparse
    import sys

    from wage_train.cli import _show_progress

    for tty in (True, False):
        monkeypatch.setattr(sys.stderr, "isatty", lambda tty=tty: tty)
        assert _show_progress(argparse.Namespace(progress=None, no_progress=None)) is tty
        assert _show_progress(argparse.Namespace(progress=True, no_progress=None)) is True
        assert _show_progress(argparse.Namespace(progress=None, no_progress=True)) is False
    monkeypatch.undo()
    with pytest.raises(SystemExit):
        run([*ARGS, "--progress", "--no-progress", "--out-dir", str(tmp_path / "x")])
    assert "not allowed with argument" in capsys.readouterr().err


def test_prefetcher_order_errors_and_early_exit():
    import threading

    from wage_train.prefetch import Prefetcher

    made = []

    def make(i):
        made.append(i)
        if i == 3:
            raise OSError("batch 3 unreadable")
        return i * 10

    got = []
    with pytest.raises(OSError, match="batch 3 unreadable"), Prefetcher(make, 6, depth=2) as items:
        for item in items:
            got.append(item)
    assert got == [0, 10, 20] and made == [0, 1, 2, 3]  # in order, the error at its item, nothing after it
    made.clear()
    with Prefetcher(make, 100, depth=2) as items:
        assert next(items) == 0
    # Leaving early stops the producer and waits for it: at most the queue's depth and one in hand were made.
    assert made == list(range(len(made))) and len(made) <= 4
    assert not [t for t in threading.enumerate() if t.name == "wage-train-batches"]
