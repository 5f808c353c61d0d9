"""The run directory: the run lock (two real processes), ``--overwrite``'s uninterruptible swap,
what an interrupted ``--overwrite`` leaves behind, and the out-dirs that are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wage_parity.testing import python_env
from wage_train import run_dir
from wage_train.config import UsageError
from wage_train.run_dir import STAGING_MARK, RunLock

RUN = ["--hidden", "16", "--epochs", "3", "--limit-batches", "2", "--no-progress"]
ROOT = Path(__file__).resolve().parents[1]


def _cli(args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wage_train", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=python_env(pythonpath=[ROOT], PYTHONUNBUFFERED="1"))


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr and lines[0].startswith("wage-train: "), stderr
    return lines[0]


def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """A finished 3-epoch run."""
    out = tmp_path_factory.mktemp("rundir") / "done"
    p = _cli([*RUN, "--out-dir", out])
    assert p.returncode == 0, p.stderr
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no lock file, no staging mark
    return out


# ------------------------------------------------------------------------------------------------ the lock


def test_lock_is_exclusive_names_the_holder_and_dies_with_it(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(UsageError, match=rf"in use by another wage-train run \(pid {os.getpid()}\)"):
        RunLock(tmp_path).acquire()
    first.release()
    RunLock(tmp_path).acquire().release()
    assert os.listdir(tmp_path) == []  # nothing is created in the folder
    # A holder killed with SIGKILL: the kernel drops its lock.
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from wage_train.run_dir import RunLock; "
                               f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=python_env(pythonpath=[ROOT]))
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UsageError, match=f"pid {holder.pid}"):
        RunLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    RunLock(tmp_path).acquire().release()


def test_lock_cannot_be_defeated_by_deleting_or_planting_files(tmp_path):
    """The lock is the folder's own: deleting every file in it, or planting a lock-named symlink to a file of
    the user's, neither frees it nor lets anything be written through the link."""
    mine = tmp_path / "mine.txt"
    mine.write_text("my notes\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".wage-train.lock").symlink_to(mine)
    first = RunLock(out).acquire()
    for p in out.iterdir():
        p.unlink()
    with pytest.raises(UsageError, match="in use by another wage-train run"):
        RunLock(out).acquire()
    # Moved with its folder (the --overwrite swap): still held under the new name.
    out.rename(tmp_path / "moved")
    with pytest.raises(UsageError, match="in use by another wage-train run"):
        RunLock(tmp_path / "moved").acquire()
    first.release()
    assert mine.read_text() == "my notes\n"


@pytest.mark.slow
@pytest.mark.parametrize("overwrite", [False, True])
def test_two_real_processes_in_one_out_dir_the_second_is_refused(done, tmp_path, overwrite):
    out = tmp_path / "run"
    if overwrite:
        shutil.copytree(done, out)
    extra = ["--overwrite"] if overwrite else []
    a = subprocess.Popen([sys.executable, "-m", "wage_train", *RUN, "--epochs", "6", "--out-dir", str(out), *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=python_env(pythonpath=[ROOT], PYTHONUNBUFFERED="1"))
    for line in a.stdout:  # the header: A holds the lock and is about to train
        if line.startswith("epoch"):
            break
    b = _cli([*RUN, "--out-dir", out, *extra, "--seed", "5"])
    a_out, a_err = a.communicate(timeout=300)
    assert a.returncode == 0, a_err
    assert b.returncode == 2
    assert f"is in use by another wage-train run (pid {a.pid})" in _one_line(b.stderr)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 0 and cfg["epochs"] == 6  # A's run, whole and alone
    assert sorted(p.name for p in (out / "checkpoints").glob("epoch_*")) == ["epoch_0005", "epoch_0006"]
    assert [m["epoch"] for m in json.loads((out / "metrics.json").read_text())["history"]] == [1, 2, 3, 4, 5, 6]
    asides = sorted(tmp_path.glob("run.old-*"))
    assert len(asides) == (1 if overwrite else 0) and not list(tmp_path.glob("run.new-*"))
    if overwrite:
        assert _files(asides[0]) == _files(done)  # the previous run, moved aside whole


# ----------------------------------------------------------------------------------- --overwrite's swap


def test_swap_holds_signals_back_until_both_renames_are_done(tmp_path, monkeypatch):
    final, staging = tmp_path / "run", tmp_path / "run.new-1"
    final.mkdir()
    (final / "old").write_text("old")
    staging.mkdir()
    (staging / "new").write_text("new")
    seen = []
    monkeypatch.setattr(run_dir, "_exchange", lambda a, b: False)  # the two-rename fallback: the widest window
    real_rename = os.rename

    def rename(a, b):
        real_rename(a, b)
        os.kill(os.getpid(), signal.SIGTERM)  # the first lands between the two renames

    monkeypatch.setattr(run_dir.os, "rename", rename)
    old = signal.signal(signal.SIGTERM, lambda *a: seen.append((final / "new").exists()))
    try:
        aside = run_dir.swap_into_place(staging, final, None, None)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert seen == [True, True]  # both delivered, each after the new run was in place
    assert (final / "new").read_text() == "new" and (aside / "old").read_text() == "old"
    assert not staging.exists()


def test_swap_by_exchange_leaves_no_instant_without_a_run(tmp_path):
    final, staging = tmp_path / "run", tmp_path / "run.new-1"
    final.mkdir()
    staging.mkdir()
    (final / "old").write_text("old")
    (staging / "new").write_text("new")
    assert run_dir._exchange(staging, final)  # this kernel has renameat2(RENAME_EXCHANGE)
    assert (final / "old").exists() is False and (staging / "old").exists()


@pytest.mark.slow
def test_stale_staging_of_a_reused_pid_is_removed_and_overwrite_proceeds(done, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(done, out)
    stale = tmp_path / f"run.new-{os.getpid()}"  # our own pid: certainly not a live run of this name
    run_dir.mark_staging(stale)
    (stale / "config.json").write_text("{}")
    from wage_train.cli import run

    run([*RUN, "--epochs", "1", "--out-dir", str(out), "--overwrite"])
    assert not stale.exists() and len(list(tmp_path.glob("run.old-*"))) == 1


def test_resume_recovers_a_run_displaced_by_an_interrupted_swap(done, tmp_path, capsys):
    """The old code's window: the previous run moved aside, the new one still in ``.new-PID``; no ``run/``."""
    out = tmp_path / "run"
    shutil.copytree(done, tmp_path / "run.old-20260101-000000")
    shutil.copytree(done, tmp_path / "run.new-4242")
    (tmp_path / "run.new-4242" / STAGING_MARK).write_bytes(b"")
    from wage_train.cli import run

    run([*RUN, "--epochs", "4", "--out-dir", str(out), "--resume"])
    stdout = capsys.readouterr().out
    assert "recovered the run" in stdout and "run.new-4242" in stdout
    assert [m["epoch"] for m in json.loads((out / "metrics.json").read_text())["history"]] == [1, 2, 3, 4]
    assert not list(tmp_path.glob("run.new-*")) and not (out / STAGING_MARK).exists()
    assert _files(tmp_path / "run.old-20260101-000000") == _files(done)


def test_a_stale_staging_with_a_checkpoint_beside_a_run_is_moved_aside_never_deleted(done, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(done, out)
    shutil.copytree(done, tmp_path / "run.new-4243")
    (tmp_path / "run.new-4243" / STAGING_MARK).write_bytes(b"")
    from wage_train.cli import run

    run([*RUN, "--epochs", "4", "--out-dir", str(out), "--resume"])
    asides = list(tmp_path.glob("run.old-*"))
    assert len(asides) == 1 and _files(asides[0]) == _files(done)


@pytest.mark.parametrize("name", ["run.new-2024", "run.new-1", "run.old-2024", ".cifar-10-batches-py.partial-7"])
@pytest.mark.parametrize("resume", [False, True])
def test_user_folders_named_like_the_tools_are_never_touched(done, tmp_path, name, resume):
    """Folders of the user's with every name the tool uses beside --out-dir, empty, holding files, or holding a
    copy of a run: left exactly as they were by a fresh run and by --resume."""
    out = tmp_path / "run"
    if resume:
        shutil.copytree(done, out)
    user = tmp_path / name
    (user / "sub").mkdir(parents=True)
    (user / "sub" / "notes.txt").write_text("mine")
    shutil.copytree(done, user / "copy")
    before = _files(user)
    p = _cli([*RUN, "--epochs", "4" if resume else "1", "--out-dir", out, *(["--resume"] if resume else [])])
    assert p.returncode == 0, p.stderr
    assert _files(user) == before and "removed" not in p.stdout and "moved" not in p.stdout


def test_interrupt_note_of_an_overwrite_run_says_resume_instead_of_overwrite(tmp_path):
    from wage_train.loop import start_note

    history = [{"epoch": 1}]
    assert start_note(history, tmp_path, overwrite=True).endswith("the same command and --resume instead of "
                                                                  "--overwrite")
    assert start_note(history, tmp_path).endswith("the same command and --resume")


# ----------------------------------------------------------------------------------------- refused out-dirs


def test_out_dirs_that_would_damage_a_run_or_move_the_working_directory_are_refused(done, monkeypatch, capsys):
    from wage_train.cli import run

    cases = [
        ([*RUN, "--out-dir", done / "checkpoints" / "epoch_0003"], None, f"is inside the run in {done}"),
        ([*RUN, "--out-dir", done / "sub" / "deeper"], None, "is inside the run in"),
        ([*RUN, "--out-dir", ".", "--overwrite"], done, "the working directory or one of its ancestors"),
        ([*RUN, "--out-dir", "..", "--overwrite"], done / "checkpoints", "the working directory or one of its"),
    ]
    before = _files(done)
    link = done.parent / "into-checkpoints"
    link.symlink_to(done / "checkpoints")
    cases.append(([*RUN, "--out-dir", link / "sub"], None, f"is inside the run in {done}"))
    cases.append(([*RUN, "--out-dir", link], None, f"is inside the run in {done}"))
    for args, cwd, expected in cases:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        with pytest.raises(SystemExit) as e:
            run(list(map(str, args)))
        assert e.value.code == 2 and expected in _one_line(capsys.readouterr().err), args
    assert _files(done) == before and not (done / "sub").exists()


def test_foreign_files_are_never_overwritten_nor_moved(tmp_path):
    from wage_train.cli import run

    out = tmp_path / "mine"
    out.mkdir()
    (out / "metrics.csv").write_text("my own data\n")
    for extra in ([], ["--overwrite"]):
        with pytest.raises(SystemExit) as e:
            run([*RUN, "--out-dir", str(out), *extra])
        assert e.value.code == 2
    assert (out / "metrics.csv").read_text() == "my own data\n" and sorted(os.listdir(tmp_path)) == ["mine"]


def test_undecodable_out_dir_is_one_line(tmp_path):
    bad = os.fsencode(str(tmp_path)) + b"/caf\xe9"
    p = subprocess.run([sys.executable, "-m", "wage_train", *RUN, "--out-dir", bad], capture_output=True,
                       timeout=120, env=python_env(pythonpath=[ROOT]))
    stderr = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 2 and "--out-dir" in _one_line(stderr) and "not valid UTF-8" in stderr
    assert not np.any([n.startswith(b"caf") for n in os.listdir(os.fsencode(str(tmp_path)))])
