"""File-system faults while a run writes: a full disk (a small tmpfs) and a read-only folder end in one
line with status 2, the temporary checkpoint folder removed and the previous good checkpoint intact.

Needs ``mount`` (root, or a container that allows it); skipped where it is not permitted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wage_parity.testing import python_env, run_python
from wage_train.safe_io import verify_manifest

RUN = ["-m", "wage_train", "--hidden", "16", "--epochs", "3", "--limit-batches", "2", "--no-progress"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _cli(args):
    return run_python([*RUN, *map(str, args)], timeout=300, cwd=ROOT, env=python_env(pythonpath=[ROOT]))


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr and lines[0].startswith("wage-train: "), stderr
    return lines[0]


def _fill(mnt: Path, leave: int) -> None:
    free = shutil.disk_usage(mnt).free
    with open(mnt / "filler", "wb") as f:
        f.write(bytes(max(free - leave, 0)))


def _state(out: Path) -> tuple[list[str], bytes]:
    return sorted(p.name for p in (out / "checkpoints").iterdir()), (out / "checkpoints" / "epoch_0001" /
                                                                     "state" / "metadata").read_bytes()


@pytest.mark.slow
def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(tmpfs):
    out = tmpfs / "run"
    p = _cli(["--out-dir", out, "--stop-after", "1"])
    assert p.returncode == 0, p.stderr
    names, state = _state(out)
    _fill(tmpfs, 24 * 1024)  # room for the lock and config.json, not for a checkpoint
    p = _cli(["--out-dir", out, "--resume"])
    assert p.returncode == 2, p.stderr
    line = _one_line(p.stderr)
    assert "cannot write the checkpoint of epoch 2" in line and "ENOSPC" in line and "epoch_0001 is kept" in line
    assert _state(out) == (names, state) and not list((out / "checkpoints").glob("epoch_0002*"))
    verify_manifest(out / "checkpoints" / "epoch_0001")
    os.unlink(tmpfs / "filler")  # space again: the run continues from the kept checkpoint
    p = _cli(["--out-dir", out, "--resume"])
    assert p.returncode == 0 and "resumed from" in p.stdout and "epoch 1 done" in p.stdout, p.stderr


@pytest.mark.slow
def test_read_only_out_dir_is_one_line_and_changes_nothing(tmpfs):
    out = tmpfs / "run"
    p = _cli(["--out-dir", out, "--stop-after", "1"])
    assert p.returncode == 0, p.stderr
    before = {q: q.read_bytes() for q in out.rglob("*") if q.is_file()}
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    for args in (["--resume"], ["--overwrite"]):
        p = _cli(["--out-dir", out, *args])
        assert p.returncode == 2, p.stderr
        assert "Read-only file system" in _one_line(p.stderr) and str(out) in p.stderr
    assert {q: q.read_bytes() for q in out.rglob("*") if q.is_file()} == before


def test_checkpoint_write_error_removes_the_temporary_folder(tmp_path, monkeypatch):
    """In process, without mount: Orbax's save fails as it does on a full disk, after creating its folder."""
    import numpy as np
    import orbax.checkpoint as ocp

    from wage_train.checkpoints import CheckpointWriteError, save_checkpoint

    class Runner:
        framework = "jax"

        def raw_weights(self):
            return {}

        def checkpoint_state(self):
            return {"w": np.zeros(3, np.float32)}

    def save(manager, step, *args, **kwargs):
        partial = manager.directory / f"epoch_{step:04d}.orbax-checkpoint-tmp-1"
        partial.mkdir()
        (partial / "partial").write_bytes(b"x")
        raise ValueError("RESOURCE_EXHAUSTED: Error writing: No space left on device [OS error: 28]")

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    root = tmp_path / "checkpoints"
    (root / "epoch_0001").mkdir(parents=True)
    with pytest.raises(CheckpointWriteError) as e:
        save_checkpoint(root, 2, [Runner()], {"epoch": 2})
    assert "ENOSPC: No space left on device" in str(e.value) and "epoch_0001 is kept" in str(e.value)
    assert sorted(p.name for p in root.iterdir()) == ["epoch_0001"]


@pytest.mark.slow
def test_permission_denied_checkpoint_folder_is_one_line_and_keeps_the_previous_checkpoint():
    """EACCES: the run belongs to an unprivileged user (nobody) whose checkpoints/ folder became root's."""
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    nobody = 65534
    base = Path(tempfile.mkdtemp(prefix="wage-eacces-", dir="/tmp"))
    try:
        base.chmod(0o755)
        out = base / "run"
        out.mkdir()
        os.chown(out, nobody, nobody)
        env = python_env(pythonpath=[ROOT], HOME=str(base), MPLCONFIGDIR=str(out / ".mpl"),
                         JAX_COMPILATION_CACHE_DIR=None,  # the test session's cache is root's
                         XDG_CACHE_HOME=str(out / ".cache"))

        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is not installed")

        def as_nobody(args):
            return subprocess.run([setpriv, f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
                                   sys.executable, *RUN, *map(str, args)], capture_output=True, text=True,
                                  timeout=300, cwd=base, env=env)

        probe = subprocess.run([setpriv, f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", sys.executable,
                                "-c", "import wage_train.cli"], capture_output=True, text=True, env=env, cwd=base)
        if probe.returncode != 0:
            pytest.skip(f"the unprivileged user cannot run this interpreter: {probe.stderr[-200:]}")
        p = as_nobody(["--out-dir", out, "--stop-after", "1"])
        assert p.returncode == 0, p.stderr
        names, state = _state(out)
        os.chown(out / "checkpoints", 0, 0)  # root's now, mode 755: nobody can read but not write
        p = as_nobody(["--out-dir", out, "--resume"])
        assert p.returncode == 2, p.stderr
        line = _one_line(p.stderr)
        assert "cannot write the checkpoint of epoch 2" in line and "EACCES: Permission denied" in line, line
        assert _state(out) == (names, state)
        verify_manifest(out / "checkpoints" / "epoch_0001")
    finally:
        shutil.rmtree(base, ignore_errors=True)
