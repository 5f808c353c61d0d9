"""``python -m wage_parity.report``: the table and the exit status."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import wage_jax as wj
import wage_parity.report as report
import wage_torch as wt
from wage_parity.cases import FUNCTIONS, Call, Case

pytestmark = pytest.mark.usefixtures("torch_single_thread")

X = np.array([0.3, -0.99, 0.999, -0.0, 1e-40, 2.0], np.float32)


def _case(jax_fn) -> list[Case]:
    call = Call("bits=4", lambda: wt.C(torch.from_numpy(X.copy()), 4), jax_fn, lambda: (X,))
    return [Case("C", "tiny", (call,))]


def test_exit_status_0_and_the_table_when_everything_matches(monkeypatch, capsys):
    monkeypatch.setattr(report, "cases", lambda function: _case(lambda x: wj.C(x, 4)))
    assert report.main(["--function", "C"]) == 0
    out = capsys.readouterr().out
    assert "C                                eager       1            6        0" in out
    assert "C                                jit         1            6        0" in out
    assert "OK: every element is bit-identical" in out


def test_exit_status_1_and_the_differing_elements_when_something_differs(monkeypatch, capsys):
    # C with 3 bits clips at 0.75 instead of 0.875: the three elements beyond 0.75 differ.
    monkeypatch.setattr(report, "cases", lambda function: _case(lambda x: wj.C(x, 3)))
    assert report.main(["--function", "C"]) == 1
    out = capsys.readouterr().out
    assert "C                                jit         1            6        3" in out
    assert "C[tiny] eager: bits=4 out: 3 of 6 elements differ" in out
    assert "FAIL" in out


def test_every_function_has_cases():
    rows = {f: len(report.cases(f)) for f in FUNCTIONS}
    assert set(FUNCTIONS) == {
        "fixed_point_quantize",
        "fixed_point_quantize_with_mask",
        "shift",
        "C",
        "QW",
        "QG",
        "wage_quantize",
    }
    assert all(n > 0 for n in rows.values()), rows


def test_rows_print_as_they_complete_with_a_count(monkeypatch, capsys):
    """Each function's rows are on stdout, numbered ``[k/N]``, before the next function's cases run."""
    printed_before: dict[str, str] = {}

    def fake_cases(function):
        def reference():
            printed_before.setdefault(function, capsys.readouterr().out)
            return wt.C(torch.from_numpy(X.copy()), 4)

        return [Case(function, "tiny", (Call("bits=4", reference, lambda x: wj.C(x, 4), lambda: (X,)),))]

    monkeypatch.setattr(report, "cases", fake_cases)
    assert report.main(["--function", "C", "--function", "QW"]) == 0
    before_qw = printed_before["QW"]
    assert "[1/4]   C " in before_qw and "[2/4]   C " in before_qw
    # The line naming the function comes before its cases run; its rows after.
    assert before_qw.rstrip().endswith("QW: 1 case, eager and jit ...") and "[3/4]" not in before_qw
    rest = capsys.readouterr().out
    # (C's reference may come from the cache of an earlier test, then nothing was read before C's rows.)
    everything = printed_before.get("C", "") + before_qw + rest
    assert everything.index("C: 1 case, eager and jit ...") < everything.index("[1/4]")
    assert "[3/4]   QW " in rest and "[4/4]   QW " in rest
    assert rest.index("[4/4]") < rest.index("total") < rest.index("OK: every element")
