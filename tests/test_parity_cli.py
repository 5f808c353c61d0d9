"""``wage-parity``'s command line: it answers ``--help`` without loading torch or JAX, says in one line that it
needs torch, announces a qtorch build before it happens, and loads qtorch through wage_torch's build environment."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import wage_parity.report as report
from wage_parity.testing import run_python

ROOT = Path(__file__).resolve().parents[1]


def test_help_and_usage_errors_load_neither_torch_nor_jax():
    code = (
        "import sys\n"
        "from wage_parity.report import main\n"
        "for argv in (['--help'], ['--function', 'nope']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('loaded:', sorted(m for m in ('torch', 'jax', 'qtorch') if m in sys.modules))\n"
    )
    done = run_python(["-c", code], cwd=ROOT, check=True, timeout=120)
    assert "--max-cases" in done.stdout and "invalid choice: 'nope'" in done.stderr
    assert done.stdout.strip().endswith("loaded: []")


def test_without_torch_one_line_and_exit_status_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    assert report.main(["--max-cases", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("wage-parity: needs torch and qtorch")


def test_a_missing_qtorch_build_is_announced_with_its_folder(monkeypatch, tmp_path, capsys):
    pytest.importorskip("torch", reason="wage_torch needs torch")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    report._announce_qtorch_build()
    assert capsys.readouterr().out == (f"qtorch has no build in {tmp_path}: its C++ kernels compile there at first "
                                       "use (about 25 s, once)\n")
    (tmp_path / "quant_cpu").mkdir()
    (tmp_path / "quant_cpu" / "quant_cpu.so").write_bytes(b"")
    report._announce_qtorch_build()
    assert capsys.readouterr().out == ""


def test_the_cases_load_qtorch_through_wage_torchs_build_environment(monkeypatch):
    pytest.importorskip("torch", reason="wage_torch needs torch")
    import wage_torch.backend
    from wage_parity import cases

    loads = []

    def fake_qtorch_modules():
        loads.append("wage_torch.backend.qtorch_modules")
        return None  # as when qtorch cannot be built

    monkeypatch.setattr(wage_torch.backend, "qtorch_modules", fake_qtorch_modules)
    with pytest.raises(ImportError, match="the reference needs qtorch.quant, which could not be imported or built"):
        cases._qtorch_quant.fixed_point_quantize  # noqa: B018
    assert loads == ["wage_torch.backend.qtorch_modules"]


def test_a_reference_that_cannot_load_ends_in_one_line(monkeypatch, capsys):
    pytest.importorskip("torch", reason="wage_torch needs torch")

    def cases(function):
        raise ImportError("the reference needs qtorch.quant, which could not be imported or built")

    monkeypatch.setattr(report, "cases", cases)
    assert report.main(["--function", "C"]) == 2
    err = capsys.readouterr().err
    assert err == "wage-parity: the reference needs qtorch.quant, which could not be imported or built\n"
