"""``wage-train --distributed``: a multi-process JAX job (``jax.distributed``, CPU collectives over gloo on
127.0.0.1) whose processes have two virtual CPU devices each. It trains bit for bit like one process on one device
(weights and every metric but the timings), continues in one process, and ends in one line per process when a
process dies or the job cannot start."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import write_mnist_format_digits
from wage_parity.testing import python_env, run_python

ROOT = Path(__file__).resolve().parents[1]
TIMINGS = {"time_s", "images_per_s", "train_time_s", "eval_time_s"}
WHERE = {"out_dir", "name", "data_dir"}
MLP = ["--epochs", "3", "--limit-batches", "4", "--batch-size", "64", "--hidden", "16"]
# LeNet-5 on the digits upscaled to MNIST's 28x28, small, with the crop augmentation (each process crops its rows
# with the whole batch's draws) and the paper's stochastic G and E.
LENET = ["--dataset", "mnist", "--model", "lenet5", "--widths", "4,8", "--vgg-hidden", "16", "--augment",
         "--epochs", "3", "--limit-batches", "3", "--batch-size", "32"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(out: Path, args: list, n: int = 2, timeout_s: int = 30, per_process: dict | None = None,
           devices: dict | None = None) -> list:
    """Start the ``n`` processes of a job (2 virtual devices each, or ``devices[i]``) training into ``out``."""
    port, procs = _port(), []
    for i in range(n):
        extra = (per_process or {}).get(i, [])
        env = python_env(pythonpath=[ROOT], devices=(devices or {}).get(i, 2), JAX_PLATFORMS="cpu")
        cmd = [sys.executable, "-m", "wage_train", "--distributed", "--coordinator", f"127.0.0.1:{port}",
               "--num-processes", str(n), "--process-id", str(i), "--distributed-timeout", str(timeout_s),
               "--out-dir", str(out), "--no-progress", *map(str, args), *extra]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    return procs


def _finish(procs: list, timeout: float = 300) -> list[tuple[int, str, str]]:
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
        return [(p.returncode, *o) for p, o in zip(procs, outputs, strict=True)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def _job(out: Path, args: list, **kw) -> list[tuple[int, str, str]]:
    """Run a job to its end; every process must succeed."""
    results = _finish(_start(out, args, **kw))
    for i, (rc, stdout, stderr) in enumerate(results):
        assert rc == 0, f"process {i} exited {rc}:\n{stdout[-2000:]}\n{stderr[-2000:]}"
    return results


def _one_process(out: Path, args: list, *more: str) -> subprocess.CompletedProcess:
    return run_python(["-m", "wage_train", "--out-dir", out, "--no-progress", *args, *more], cwd=ROOT,
                      env=python_env(pythonpath=[ROOT], JAX_PLATFORMS="cpu"), timeout=None, check=True)


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMINGS | WHERE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _differing(a: Path, b: Path) -> dict[str, int]:
    """Elements that differ between two runs: per weight array (by bit pattern), and metrics.json's numbers."""
    out = {}
    with np.load(a / "weights.npz") as wa, np.load(b / "weights.npz") as wb:
        assert sorted(wa.files) == sorted(wb.files)
        for k in wa.files:
            out[k] = int((wa[k].view(np.uint32) != wb[k].view(np.uint32)).sum())
    ma, mb = (_strip(json.loads((d / "metrics.json").read_text())) for d in (a, b))
    out["metrics.json"] = sum(x != y for x, y in zip(_flat(ma), _flat(mb), strict=True))
    return out


def _flat(obj, prefix=""):
    if isinstance(obj, dict):
        for k in sorted(obj):
            yield from _flat(obj[k], f"{prefix}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _flat(v, f"{prefix}[{i}]")
    else:
        yield (prefix, obj)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> Path:
    return write_mnist_format_digits(tmp_path_factory.mktemp("mnist"))


def test_two_processes_train_the_mlp_of_one_process_bit_for_bit(tmp_path):
    _one_process(tmp_path / "one", MLP)
    (_, out0, err0), (_, out1, err1) = _job(tmp_path / "job", MLP)
    assert "epoch" in out0 and "final test accuracy" in out0  # process 0 reports ...
    assert out1 == "" and err1 == "" and err0 == ""  # ... the other says nothing, and neither shows the runtime's logs
    assert set(_differing(tmp_path / "one", tmp_path / "job").values()) == {0}


@pytest.mark.slow
def test_lenet5_in_two_processes_then_resumed_in_one_is_one_process_run(tmp_path, mnist):
    args = [*LENET, "--data-dir", mnist]
    _one_process(tmp_path / "one", args)
    job = tmp_path / "job"
    _job(job, [*args, "--stop-after", "2"])
    assert json.loads((job / "metrics.json").read_text())["summary"]["epochs_done"] == 2
    assert "resumed" in _one_process(job, args, "--resume").stdout  # one process, one device
    assert set(_differing(tmp_path / "one", job).values()) == {0}


@pytest.mark.slow
def test_overwrite_in_a_job_moves_the_old_run_aside_and_trains_the_same_bits(tmp_path):
    """Process 0 swaps the run into place after the first checkpoint; every process then writes into it."""
    _one_process(tmp_path / "one", MLP)
    job = tmp_path / "job"
    _job(job, [*MLP, "--epochs", "1"])
    (_, out0, _), _ = _job(job, [*MLP, "--overwrite"])
    assert "the previous run was moved to" in out0
    (aside,) = tmp_path.glob("job.old-*")
    assert json.loads((aside / "metrics.json").read_text())["summary"]["epochs_done"] == 1
    assert set(_differing(tmp_path / "one", job).values()) == {0}


@pytest.mark.slow
@pytest.mark.parametrize(("victims", "sig"), [((1,), signal.SIGKILL), ((0,), signal.SIGKILL),
                                              ((0, 1), signal.SIGTERM)])  # the last: a cluster's preemption
def test_a_killed_process_stops_the_others_in_one_line(tmp_path, victims, sig):
    out = tmp_path / "run"
    procs = _start(out, ["--epochs", "500", "--hidden", "64"], timeout_s=5)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "epoch_0002").is_dir():
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "the job did not train"
        time.sleep(0.1)
    for i in victims:
        procs[i].send_signal(sig)
    t0 = time.monotonic()
    results = _finish(procs, timeout=60)
    assert time.monotonic() - t0 < 30
    for i, (rc, _, err) in enumerate(results):
        if sig == signal.SIGKILL and i in victims:
            continue
        assert rc != 0 and len(err.splitlines()) == 1 and err.startswith("wage-train: ") and "--resume" in err, err
        if sig == signal.SIGTERM:
            assert "SIGTERM: interrupted" in err
    # The last completed checkpoint is intact: one process continues the run from it.
    done = _one_process(out, ["--resume", "--epochs", str(_epochs(out) + 1)])
    assert "resumed from" in done.stdout


def _epochs(out: Path) -> int:
    return max(int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("epoch_[0-9][0-9][0-9][0-9]"))


@pytest.mark.parametrize(("change", "said"), [
    ({"per_process": {1: ["--seed", "1"]}}, "process 1 runs another configuration than process 0 (name, seed differ)"),
    ({"devices": {1: 1}}, "every process of the job must have the same number of devices"),
    ({"per_process": {1: ["--out-dir", "{tmp}/elsewhere"]}}, "elsewhere is not visible from this process"),
    ({"per_process": {0: ["--batch-size", "66"], 1: ["--batch-size", "66"]}}, "--batch-size 66: a --distributed job "
     "splits each batch over its 4 devices (2 processes): give a multiple of 4"),
])
def test_processes_that_run_other_configurations_stop_in_one_line_each(tmp_path, change, said):
    per_process = {i: [a.format(tmp=tmp_path) for a in args] for i, args in change.get("per_process", {}).items()}
    results = _finish(_start(tmp_path / "run", MLP, **{**change, "per_process": per_process}))
    for rc, _, err in results:
        assert rc == 2 and len(err.splitlines()) == 1 and said in err, err
    assert not (tmp_path / "run").exists()  # created by process 0, removed again


def test_a_job_that_cannot_start_is_one_line(tmp_path):
    env = python_env(pythonpath=[ROOT], JAX_PLATFORMS="cpu")

    def refused(*args: str) -> tuple[int, str]:
        p = run_python(["-m", "wage_train", "--out-dir", tmp_path / "run", *args], cwd=ROOT, env=env, timeout=120)
        assert len(p.stderr.splitlines()) == 1, p.stderr
        return p.returncode, p.stderr

    t0 = time.monotonic()
    rc, err = refused("--distributed", "--coordinator", f"127.0.0.1:{_port()}", "--num-processes", "2",
                      "--process-id", "1", "--distributed-timeout", "2")
    assert rc != 0 and "could not join the job" in err and time.monotonic() - t0 < 60
    assert refused("--distributed", "--num-processes", "2", "--process-id", "2") == (
        2, "wage-train: error: --process-id 2: must be in [0, 1] for --num-processes 2\n")
    assert "no cluster environment detected" in refused("--distributed")[1]
    assert "applies to --distributed runs" in refused("--num-processes", "2")[1]
    assert "trains with JAX" in refused("--distributed", "--framework", "torch")[1]
    assert not (tmp_path / "run").exists()
