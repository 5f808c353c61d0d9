"""A bounded randomized pass over ``wage-train``: tiny runs drawn with a fixed seed from a grid of odd
options, into a small pool of out-dirs. For each: exit status in {0, 1, 2, 130}, stderr empty or ending in one
``wage-train:`` line, no traceback; and no earlier run or checkpoint is ever lost (every verified checkpoint
seen so far still verifies, in its out-dir or in an ``.old-*`` folder beside it).

Beside the options, each run may meet: user folders named as the tool's staging folders and a planted lock-named
symlink to a user's file (never touched), a hand-edited ``config.json`` (refused in one line), a full disk while
the final outputs are written (no truncated ``weights.npz``), and a download from a closed port (no folder left).
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from wage_data import DataError
from wage_train import loop
from wage_train.cli import main
from wage_train.safe_io import verify_manifest

RUNS = 30
GRID: dict[str, list[list[str]]] = {
    "epochs": [["--epochs", "1"], ["--epochs", "2"], ["--epochs", "3"],
               ["--epochs", "99999999999", "--stop-after", "1"]],
    "batches": [["--limit-batches", "1"], ["--limit-batches", "2"]],
    "batch": [[], ["--batch-size", "16"], ["--batch-size", "5000"]],
    "mode": [[], ["--resume"], ["--overwrite"], ["--resume", "--overwrite"]],
    "lr": [[], ["--lr", "0.5"], ["--lr", "1e30"], ["--lr", "-1"]],
    "seed": [[], ["--seed", "3"], ["--seed", str(2**63)]],
    "eval": [[], ["--eval-batch-size", "1"], ["--eval-batch-size", str(10**9)]],
    "stop": [[], ["--stop-after", "1"]],
    "framework": [[], ["--framework", "torch"], ["--float"]],
    "validation": [[], ["--validation", "0.2"], ["--validation", "0.9999"]],
    "bits": [[], ["--bits", "8-8-8-8"], ["--bits", "1-8-8-8"]],
    "model": [[], ["--model", "lenet5"]],
    "devices": [[], ["--devices", "3"]],
    "data": [[], ["--dataset", "mnist", "--download", "--data-dir"]],  # the folder is appended: never created
}
CLOSED = "http://127.0.0.1:9/"  # the discard port: a download fails at once


def _full_disk_savez(file, *args, **kwargs):
    import errno
    import os

    file.write(b"PK\x03\x04 truncated")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _user_files(tmp_path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tmp_path)): p.read_bytes() for p in sorted(tmp_path.glob("*.new-*/**/*"))
            if p.is_file()} | {"user.txt": (tmp_path / "user.txt").read_bytes()}


def _verified_checkpoints(root: Path) -> set[tuple[str, str]]:
    """``(run folder name, checkpoint name)`` of every checkpoint under ``root`` that verifies."""
    found = set()
    for ckpt in root.glob("*/checkpoints/epoch_*"):
        try:
            verify_manifest(ckpt)
        except DataError:
            continue
        found.add((ckpt.parent.parent.name, ckpt.name))
    return found


@pytest.mark.slow
def test_random_option_combinations_never_trace_back_nor_lose_a_run(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(2026)
    pool = ["a", "b", "c"]
    monkeypatch.setenv("WAGE_MNIST_URL", CLOSED)
    (tmp_path / "user.txt").write_text("the user's own file\n")
    for name in pool:  # the user's folders, named as the tool's staging folders
        for suffix in (".new-2024", ".new-1"):
            (tmp_path / f"{name}{suffix}" / "notes").mkdir(parents=True)
            (tmp_path / f"{name}{suffix}" / "notes" / "mine.txt").write_text(name + suffix)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / ".wage-train.lock").symlink_to(tmp_path / "user.txt")
    users = _user_files(tmp_path)
    drawn: Counter[str] = Counter()
    seen: dict[tuple[str, str], bytes] = {}  # verified checkpoint -> its manifest
    statuses = []
    old_handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for _ in range(RUNS):
            argv = ["--no-progress", "--hidden", "8"]
            for name, choices in GRID.items():  # mostly the first choice, so that many runs train
                if name == "mode":  # mostly --resume or --overwrite: the pool's folders soon hold runs
                    argv += choices[int(rng.choice(4, p=[0.15, 0.45, 0.3, 0.1]))]
                else:
                    argv += choices[0] if rng.random() < 0.9 else choices[int(rng.integers(1, len(choices)))]
            if argv[-1] == "--data-dir":
                argv.append(str(tmp_path / "data" / "mnist"))
            out = tmp_path / pool[int(rng.integers(len(pool)))]
            argv += ["--out-dir", str(out)]
            edited = None
            if (out / "config.json").is_file() and rng.random() < 0.1:  # a hand-edited config.json
                edited = (out / "config.json").read_bytes()
                (out / "config.json").write_bytes(edited.replace(b'"seed": ', b'"seed": -'))
            full_disk = rng.random() < 0.2
            drawn.update({"edited config.json": edited is not None, "full disk": full_disk,
                          "download": "--download" in argv})
            try:
                with monkeypatch.context() as m:
                    if full_disk:
                        m.setattr(loop.np, "savez", _full_disk_savez)
                    main(argv)
                status = 0
            except SystemExit as e:
                status = e.code
            finally:
                for s, h in old_handlers.items():
                    signal.signal(s, h)
                if edited is not None:
                    (out / "config.json").write_bytes(edited)
            captured = capsys.readouterr()
            assert not (tmp_path / "data").exists() and _user_files(tmp_path) == users, argv
            for weights in tmp_path.glob("*/weights.npz"):  # whole or absent, never truncated
                np.load(weights).close()
            statuses.append(status)
            assert status in (0, 1, 2, 130), (argv, status, captured.err)
            lines = [ln for ln in captured.err.splitlines() if ln.strip()]
            assert "Traceback" not in captured.err, (argv, captured.err)
            assert not lines or (len(lines) == 1 and lines[0].startswith("wage-train: ")), (argv, captured.err)
            assert (status == 0) == (not lines), (argv, status, captured.err)
            # Nothing lost: every checkpoint verified before verifies now, where it was or moved aside whole.
            now = _verified_checkpoints(tmp_path)
            for (run, name), manifest in seen.items():
                base = run.split(".old-")[0]
                homes = [(r, n) for r, n in now if n == name and (r == run or r.startswith(base + ".old-"))]
                assert any((tmp_path / r / "checkpoints" / n / "MANIFEST.sha256").read_bytes() == manifest
                           or r == run for r, n in homes), (argv, run, name)
            # A checkpoint may be superseded by the next epoch's (KEEP = 2) within its run: track the newest.
            seen = {(r, n): (tmp_path / r / "checkpoints" / n / "MANIFEST.sha256").read_bytes()
                    for r, n in now if n == max(m for q, m in now if q == r)}
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    print("statuses:", {s: statuses.count(s) for s in sorted(set(statuses))}, "families:", dict(drawn))
    assert min(drawn[k] for k in ("edited config.json", "full disk", "download")) >= 1
    assert statuses.count(0) >= 3 and statuses.count(2) >= 3  # the grid reaches both outcomes
