"""Fault injection for ``wage-train``: damaged checkpoints, SIGINT/SIGTERM at random points,
divergence, re-runs into an existing directory. Each case checks the exit status, a single message line, no
traceback, and that the last good state is intact and resumes bit-exactly.

Tiny runs (digits, MLP 64-16-10, 2 batches per epoch) shared through module-scoped fixtures.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from wage_data import DataError
from wage_parity.testing import python_env, run_python
from wage_train.safe_io import MANIFEST

RUN = ["--hidden", "16", "--epochs", "4", "--limit-batches", "2", "--no-progress"]
TRIED: Counter[str] = Counter()  # injected faults tried, by kind (printed at the end)


@pytest.fixture(scope="module", autouse=True)
def _report_fault_counts():
    """After the module's tests, print how many faults of each kind were injected (run with -s to see)."""
    yield
    print("\ninjected run faults tried:", dict(sorted(TRIED.items())))


def _cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return run_python(["-m", "wage_train", *args], timeout=timeout, env=python_env(PYTHONUNBUFFERED="1"))


def _weights(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "weights.npz") as f:
        return {k: f[k].copy() for k in f.files}


def _same_bits(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def _one_line_no_traceback(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("wage-train: ")
    return lines[0]


def _run_fails(argv: list[str], capsys: pytest.CaptureFixture[str], status: int) -> str:
    """Run ``wage-train argv`` in this process; it must exit with ``status`` and one line on stderr (returned)."""
    from wage_train.cli import run

    with pytest.raises(SystemExit) as e:
        run(argv)
    assert e.value.code == status
    return _one_line_no_traceback(capsys.readouterr().err)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``ref``: an uninterrupted 4-epoch run; ``half``: the same run stopped after 2 epochs."""
    root = tmp_path_factory.mktemp("faults")
    ref, half = root / "ref", root / "half"
    for out, extra in ((ref, []), (half, ["--stop-after", "2"])):
        p = _cli([*RUN, "--out-dir", str(out), *extra])
        assert p.returncode == 0, p.stderr
    return {"root": root, "ref": ref, "half": half, "ref_weights": _weights(ref)}


def _runners_for(out: Path):
    """Runners built as ``train`` builds them for the run in ``out``."""
    from wage_data import load_dataset
    from wage_train.config import RunConfig
    from wage_train.runner import make_runners, model_spec
    from wage_train.runspec import lr_table

    cfg = RunConfig.load(out / "config.json")
    spec = model_spec(cfg, load_dataset(cfg.dataset))
    return make_runners(cfg, spec, lr_table(cfg.lr, cfg.epochs, cfg.schedule), cfg.limit_batches)


def _state_bits(runners) -> list[bytes]:
    return [np.asarray(v).tobytes() for r in runners for v in r.raw_weights().values()]


@pytest.mark.slow
def test_every_checkpoint_file_flipped_or_truncated_falls_back_to_the_previous_good_one(runs, tmp_path):
    from wage_train.checkpoints import restore_checkpoint

    runners = _runners_for(runs["half"])
    clean = runs["half"] / "checkpoints"
    assert [p.name for p in sorted(clean.glob("epoch_*"))] == ["epoch_0001", "epoch_0002"]
    path, _ = restore_checkpoint(clean, runners)
    assert path.name == "epoch_0002"
    restore_checkpoint_one = tmp_path / "only1"
    shutil.copytree(clean, restore_checkpoint_one)
    shutil.rmtree(restore_checkpoint_one / "epoch_0002")
    restore_checkpoint(restore_checkpoint_one, runners)
    good = _state_bits(runners)

    files = sorted(p.relative_to(clean / "epoch_0002") for p in (clean / "epoch_0002").rglob("*") if p.is_file())
    assert Path(MANIFEST) in files and Path("state", "metadata") in files and len(files) >= 4
    rng = np.random.default_rng(0)
    for rel in files:
        for damage in ("flip", "truncate", "delete"):
            root = tmp_path / "ck"
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(clean, root)
            target = root / "epoch_0002" / rel
            raw = bytearray(target.read_bytes())
            if damage == "delete":
                target.unlink()
            elif damage == "truncate":
                target.write_bytes(raw[: int(rng.integers(0, max(len(raw), 1)))])
            else:
                if not raw:
                    continue
                raw[int(rng.integers(0, len(raw)))] ^= 1 << int(rng.integers(0, 8))
                target.write_bytes(bytes(raw))
            TRIED[f"checkpoint file {damage}"] += 1
            warnings: list[str] = []
            path, state = restore_checkpoint(root, runners, warn=warnings.append)
            assert path.name == "epoch_0001" and state["epoch"] == 1, (rel, damage)
            assert len(warnings) == 1 and "\n" not in warnings[0] and "epoch_0002" in warnings[0], warnings
            assert _state_bits(runners) == good, (rel, damage)
            # both damaged: refused in one line naming the newest
            if damage == "flip":
                (root / "epoch_0001" / "state" / "metadata").write_text("{")
                with pytest.raises(DataError, match="no usable checkpoint: .*epoch_0002"):
                    restore_checkpoint(root, runners, warn=lambda m: None)


@pytest.mark.slow
def test_resume_from_a_damaged_newest_checkpoint_is_bit_exact(runs, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs["half"], out)
    data_files = [p for p in (out / "checkpoints" / "epoch_0002" / "jax").rglob("*") if p.is_file()]
    victim = max(data_files, key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    TRIED["checkpoint flip then resume (subprocess)"] += 1
    p = _cli([*RUN, "--out-dir", str(out), "--resume"])
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "warning: checkpoint refused" in p.stdout and "falling back to epoch_0001" in p.stdout
    assert _same_bits(_weights(out), runs["ref_weights"])
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [m["epoch"] for m in history] == [1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.parametrize("sig,delay", [(signal.SIGINT, 0.0), (signal.SIGINT, 0.6), (signal.SIGTERM, 0.3)])
def test_signal_at_a_random_point_stops_cleanly_and_resumes_bit_exactly(runs, tmp_path, sig, delay):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "wage_train", *RUN, "--out-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=python_env(PYTHONUNBUFFERED="1"))
    for line in proc.stdout:  # the header: training is about to start
        if line.startswith("epoch"):
            break
    time.sleep(delay)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    TRIED[f"{signal.Signals(sig).name} during training"] += 1
    if proc.returncode == 0:  # finished before the signal arrived: nothing to check beyond the result
        assert _same_bits(_weights(out), runs["ref_weights"])
        return
    assert proc.returncode == 130, stderr
    line = _one_line_no_traceback(stderr)
    assert "interrupted" in line and signal.Signals(sig).name in line
    if "nothing to resume" in line:
        return
    assert "--resume" in line
    p = _cli([*RUN, "--out-dir", str(out), "--resume"])
    assert p.returncode == 0, p.stderr
    assert _same_bits(_weights(out), runs["ref_weights"])


_SIGNAL_WHILE_LOADING = """
import os, signal, sys, time
import wage_train.cli as cli
def load_dataset(*args, **kwargs):  # the signal lands while the data set loads, before training starts
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    time.sleep(30)
    raise AssertionError("the signal did not stop the run")
cli.load_dataset = load_dataset
cli.main(sys.argv[2:])
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_before_training_starts_is_one_line_status_130(tmp_path, sig):
    out = tmp_path / "run"
    p = run_python(["-c", _SIGNAL_WHILE_LOADING, sig, *RUN, "--out-dir", out], timeout=120)
    TRIED[f"{sig} before training"] += 1
    assert p.returncode == 130, p.stderr
    line = _one_line_no_traceback(p.stderr)
    assert "interrupted before training started" in line
    assert not (out / "checkpoints").exists()



def _files(run_dir: Path) -> dict[Path, bytes]:
    """Every file of ``run_dir`` (by path relative to it) with its bytes: a run's whole content."""
    return {q.relative_to(run_dir): q.read_bytes() for q in run_dir.rglob("*") if q.is_file()}


@pytest.mark.slow
def test_rerun_into_an_existing_run_is_refused_and_overwrite_moves_it_aside(runs, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs["half"], out)
    before = _files(out)
    p = _cli([*RUN, "--out-dir", str(out)])
    TRIED["re-run into an existing directory"] += 1
    assert p.returncode == 2
    line = _one_line_no_traceback(p.stderr)
    assert "--resume" in line and "--overwrite" in line and str(out) in line
    assert _files(out) == before
    p = _cli([*RUN, "--out-dir", str(out), "--overwrite", "--seed", "1"])
    assert p.returncode == 0, p.stderr
    aside = [d for d in tmp_path.iterdir() if d.name.startswith("run.old-")]
    assert len(aside) == 1
    assert _files(aside[0]) == before
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert not [d for d in tmp_path.iterdir() if ".new-" in d.name]


@pytest.mark.slow
def test_resume_to_fewer_epochs_than_done_and_damaged_config_are_one_line(runs, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs["ref"], out)
    p = _cli([*RUN[:2], "--epochs", "2", "--out-dir", str(out), "--resume"])
    assert p.returncode == 2 and "already has 4 epoch(s) done" in _one_line_no_traceback(p.stderr)
    (out / "config.json").write_bytes((out / "config.json").read_bytes()[:40])
    p = _cli(["--out-dir", str(out), "--resume"])
    assert p.returncode == 2 and "config.json: not valid JSON" in _one_line_no_traceback(p.stderr)
    TRIED["resume with inconsistent epochs / truncated config.json"] += 1


def test_divergence_stops_in_one_line_and_keeps_the_last_good_state(tmp_path, monkeypatch, capsys):
    from wage_train.jax_runner import JaxRunner

    real_place, calls = JaxRunner.place, []

    def place(self, x, y):
        calls.append(1)
        if len(calls) == 3:  # step 1 of epoch 2: a NaN input makes the loss NaN on the device
            x = np.where(np.arange(x.shape[-1]) == 0, np.float32(np.nan), x)
        return real_place(self, x, y)

    monkeypatch.setattr(JaxRunner, "place", place)
    out = tmp_path / "run"
    line = _run_fails([*RUN, "--out-dir", str(out)], capsys, 1)
    TRIED["divergence"] += 1
    assert "diverged at epoch 2, step 1" in line and "nan" in line and "lower --lr" in line
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics["history"]] == [1]
    assert [p.name for p in (out / "checkpoints").glob("epoch_*")] == ["epoch_0001"]
    assert (out / "plot.png").is_file()
    from wage_train.safe_io import verify_manifest

    verify_manifest(out / "checkpoints" / "epoch_0001")


@pytest.mark.parametrize("argv,name", [
    (["--lr", "nan"], "--lr"), (["--lr", "-1"], "--lr"), (["--lr", "inf"], "--lr"),
    (["--batch-size", "0"], "--batch-size"), (["--devices", "0"], "--devices"), (["--seed", "-1"], "--seed"),
    (["--torch-threads", "-1"], "--torch-threads"), (["--factor", "0"], "--factor"),
    (["--factor", "nan"], "--factor"), (["--factor", "-1"], "--factor"), (["--epochs", "0"], "--epochs"),
    (["--limit-batches", "0"], "--limit-batches"), (["--stop-after", "0"], "--stop-after"),
    (["--out-dir", "/proc/x/y"], "--out-dir"), (["--hidden", "0"], "--hidden"), (["--bits", "2-8"], "--bits"),
    (["--validation", "0"], "--validation"), (["--validation", "1"], "--validation"),
    (["--validation", "nan"], "--validation"), (["--validation", "x"], "--validation"),
])
def test_bad_arguments_are_one_line_naming_them(argv, name, capsys):
    assert name in _run_fails(argv, capsys, 2)
    TRIED["bad argument"] += 1


def test_out_dir_naming_a_file_is_refused(tmp_path, capsys):
    from wage_train.cli import run

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit):
        run(["--out-dir", str(f)])
    assert "is not a directory" in _one_line_no_traceback(capsys.readouterr().err)



def _partial_then_enospc(file, *args, **kwargs):
    """Stands for ``np.savez`` on a full disk: some bytes reach the file, then the write fails."""
    import errno
    import os

    if isinstance(file, str | Path):
        with open(file, "wb") as f:
            f.write(b"PK\x03\x04 truncated")
    else:
        file.write(b"PK\x03\x04 truncated")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_at_the_end_leaves_no_truncated_output_and_resume_completes_it(runs, tmp_path, monkeypatch,
                                                                                  capsys):
    from wage_train import cli, loop

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(loop.np, "savez", _partial_then_enospc)
        line = _run_fails([*RUN, "--out-dir", str(out)], capsys, 2)
    TRIED["disk full while writing the final outputs"] += 1
    assert "weights.npz" in line and "ENOSPC" in line and "--resume" in line
    assert not (out / "weights.npz").exists() and not [p for p in out.iterdir() if ".tmp" in p.name]
    cli.run([*RUN, "--out-dir", str(out), "--resume"])  # the advised command completes the finished run
    assert "writing its missing outputs (weights.npz, plot.png)" in capsys.readouterr().out
    assert _same_bits(_weights(out), runs["ref_weights"]) and (out / "plot.png").is_file()
    with pytest.raises(SystemExit):  # nothing missing now: the finished run is not trained again
        cli.run([*RUN, "--out-dir", str(out), "--resume"])
    assert "already has 4 epoch(s) done" in _one_line_no_traceback(capsys.readouterr().err)


@pytest.mark.parametrize("error", [MemoryError(), OSError(5, "Input/output error")])
def test_a_fault_while_preparing_batches_is_one_line_naming_it_and_leaves_no_run(tmp_path, monkeypatch, capsys,
                                                                                  error):
    from wage_train import cli
    from wage_train.jax_runner import JaxRunner

    def fail(*args, **kwargs):
        raise error

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(JaxRunner, "place", fail)
        line = _run_fails([*RUN, "--out-dir", str(out)], capsys, 2)
    TRIED["fault while preparing batches"] += 1
    assert "reading and preparing training batch 1" in line and "cannot write" not in line
    assert ("out of memory" in line) if isinstance(error, MemoryError) else ("EIO" in line)
    assert not (out / "config.json").exists()  # failed before its first checkpoint: the folder holds no run
    cli.run([*RUN, "--epochs", "1", "--out-dir", str(out)])  # so a new run goes there without --overwrite


def _importing_numpy(pid: int) -> bool:
    """True once the process has loaded numpy's extension: past the interpreter's start, in wage-train's imports."""
    try:
        return "_multiarray_umath" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.3])
def test_sigint_during_the_imports_is_one_line_status_130(tmp_path, delay):
    p = subprocess.Popen([sys.executable, "-m", "wage_train", *RUN, "--out-dir", str(tmp_path / "run")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env())
    deadline = time.monotonic() + 60
    while not _importing_numpy(p.pid) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    TRIED["SIGINT during the imports"] += 1
    assert p.returncode == 130, err
    assert "interrupted before training started" in _one_line_no_traceback(err)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_sigterm_every_2_ms_during_overwrite_is_one_line_and_loses_nothing(runs, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(runs["half"], out)
    before = _files(out)
    p = subprocess.Popen([sys.executable, "-m", "wage_train", *RUN, "--out-dir", str(out), "--overwrite"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=python_env(PYTHONUNBUFFERED="1"))
    for line in p.stdout:  # the header: training is about to start
        if line.startswith("epoch"):
            break
    while p.poll() is None:
        p.send_signal(signal.SIGTERM)
        time.sleep(0.002)
    err = p.stderr.read()
    TRIED["SIGTERM every 2 ms during --overwrite"] += 1
    assert p.returncode == 130, err
    _one_line_no_traceback(err)
    runs_now = [out, *tmp_path.glob("run.old-*")]
    assert any(_files(d) == before for d in runs_now)
