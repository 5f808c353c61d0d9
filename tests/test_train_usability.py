"""``wage-train`` without torch (one line, exit 2, nothing created) and ``--print-config``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from wage_parity.testing import python_env, run_python
from wage_train.cli import run

ROOT = Path(__file__).resolve().parents[1]

BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "qtorch"):
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None
    sys.meta_path.insert(0, Block())
    from wage_train.cli import main
    main(sys.argv[1:])
    """
)


@pytest.mark.parametrize("option", [["--framework", "torch"], ["--compare"], ["--framework", "torch", "--float"]])
def test_torch_options_without_torch_one_line_exit_2(tmp_path: Path, option: list[str]) -> None:
    out_dir = tmp_path / "runs" / "x"
    done = run_python(["-c", BLOCK_TORCH, *option, "--epochs", "1", "--out-dir", str(out_dir)], cwd=tmp_path,
                      env=python_env(pythonpath=[ROOT]), timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    flag = "--compare" if option == ["--compare"] else "--framework torch"
    assert lines[0].startswith(f"wage-train: error: {flag} needs torch, which cannot be imported (No module named")
    assert 'install the torch extra, pip install ".[torch]"' in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no runs/, no output directory


def test_jax_run_needs_no_torch(tmp_path: Path) -> None:
    """The check is only for the torch options: a JAX run's --print-config works with torch blocked."""
    done = run_python(["-c", BLOCK_TORCH, "--print-config"], cwd=tmp_path, env=python_env(pythonpath=[ROOT]),
                      timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["framework"] == "jax"


def _print_config(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    with pytest.raises(SystemExit) as caught:
        run(["--print-config", *argv])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("{\n") and out.endswith("}\n")
    return json.loads(out)


def test_print_config_shows_the_preset_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The paper's CIFAR-10 setup (Wu et al. 2018, Sec. 4.1; the authors' Option.py): VGG7, 2-8-8-8, batch 128,
    300 epochs, lr 8 dropping at epochs 200 and 250; no --data-dir is needed: nothing is read."""
    monkeypatch.chdir(tmp_path)
    cfg = _print_config(["--preset", "paper-cifar10"], capsys)
    assert {k: cfg[k] for k in ("dataset", "model", "bits", "batch_size", "epochs", "lr", "schedule", "preset",
                                "factor", "augment", "G_mode", "E_mode")} == {
        "dataset": "cifar10", "model": "vgg7", "bits": [2, 8, 8, 8], "batch_size": 128, "epochs": 300, "lr": 8.0,
        "schedule": "paper-epochs", "preset": "paper-cifar10", "factor": 1.0, "augment": True,
        "G_mode": "stochastic", "E_mode": "stochastic"}  # fmt: skip
    assert cfg["widths"] == [128, 256, 512] and cfg["vgg_hidden"] == 1024
    assert list(tmp_path.iterdir()) == []  # no runs/ folder


def test_print_config_explicit_options_override_the_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = _print_config(["--preset", "paper-cifar10", "--epochs", "3", "--bits", "2-8-8-fp", "--out-dir", "o"],
                        capsys)
    assert (cfg["epochs"], cfg["bits"], cfg["out_dir"]) == (3, [2, 8, 8, -1], "o")
    assert list(tmp_path.iterdir()) == []
    from wage_train.float_recipe import STANDARD_LR

    assert _print_config(["--float"], capsys)["lr"] == STANDARD_LR["mlp"]  # the standard recipe's lr of the MLP
    # wage-sse's lr is known once the data's image size is.
    assert _print_config(["--float", "--float-recipe", "wage-sse"], capsys)["lr"] is None


@pytest.mark.parametrize(("argv", "extra"), [(["--preset", "paper-svhn"], True), (["--dataset", "svhn"], False)])
def test_download_fetches_svhn_extra_for_the_paper_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str], argv: list[str],
                                                         extra: bool) -> None:
    """The paper trains SVHN on train + extra: ``--download`` with ``paper-svhn`` fetches extra_32x32.mat too."""
    import wage_train.cli as cli
    from wage_data import DataError

    calls = []

    def fake_ensure(dataset, data_dir, *, download, extra, progress):
        calls.append((dataset, data_dir, download, extra))
        raise DataError("stop here (test)")

    monkeypatch.setattr(cli, "ensure_dataset", fake_ensure)
    with pytest.raises(SystemExit) as caught:
        run([*argv, "--data-dir", str(tmp_path / "d"), "--download", "--out-dir", str(tmp_path / "run")])
    assert caught.value.code == 2
    assert calls == [("svhn", str(tmp_path / "d"), True, extra)]
    assert capsys.readouterr().err.strip() == "wage-train: error: stop here (test)"
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------- the first minutes

QUICK = ["--epochs", "2", "--limit-batches", "2", "--no-progress"]


def _make_run_options() -> list[str]:
    """The options the Makefile's ``run`` target gives ``python -m wage_train``."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    recipe = lines[lines.index("run: setup") + 1].split()
    assert recipe[:3] == ["$(PY)", "-m", "wage_train"], recipe
    return recipe[3:]


def test_make_run_can_run_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second ``make run`` trains a fresh default run; the first is moved aside, not deleted."""
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        run([*_make_run_options(), *QUICK])
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and runs[1].startswith(f"{runs[0]}.old-"), runs
    assert (tmp_path / "runs" / runs[0] / "metrics.json").is_file()


def test_overwrite_header_names_the_final_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    run([*QUICK, "--out-dir", str(out)])
    capsys.readouterr()
    run([*QUICK, "--out-dir", str(out), "--overwrite"])
    header = capsys.readouterr().out.splitlines()[0]
    assert header.endswith(f"| {out}"), header
    assert ".new-" not in header


def test_stop_after_hint_names_a_custom_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "my runs" / "a"
    run([*QUICK, "--out-dir", str(out), "--stop-after", "1"])
    hint = [line for line in capsys.readouterr().out.splitlines() if line.startswith("stopped after")]
    assert hint == [f"stopped after 1 epoch(s) (--stop-after); continue with wage-train --resume --out-dir '{out}'"]
    summary = run(["--resume", "--out-dir", str(out), "--no-progress"])  # what the hint says works
    assert summary["epochs_done"] == 2
