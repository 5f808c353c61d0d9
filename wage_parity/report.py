"""Print how many elements wage_jax and the torch reference were compared on, and how many differ.

Usage: ``wage-parity [--function NAME ...] [--max-cases N] [--verbose]`` (or ``python -m wage_parity``)

Runs every comparison of ``wage_parity.cases`` (the corpus of the parity tests, eagerly and under
``jax.jit``) and prints one row per function and mode: cases, elements compared, elements whose
float32 bit patterns differ; a line names each function as its cases start. Exit status 1 if any element
differs, 2 on a usage error or without torch, 0 otherwise.

The arguments are parsed before torch and JAX load (``--help`` and a usage error answer at once). The torch
reference runs on qtorch's kernels from the build that set-up made (``<venv>/torch_extensions``, or
``TORCH_EXTENSIONS_DIR``); when there is none, a line says where the kernels will be compiled and why first.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from wage_parity.names import FUNCTIONS, MODES

__all__ = ["main", "run"]


def cases(function: str) -> list:
    """``wage_parity.cases.cases``, imported on first use: it loads torch and JAX."""
    from wage_parity import cases as registry

    return registry.cases(function)


def run(
    functions: Sequence[str] = FUNCTIONS,
    verbose: bool = False,
    max_cases: int | None = None,
    on_row: Callable[[dict[str, object]], None] | None = None,
    on_start: Callable[[str, int], None] | None = None,
) -> list[dict[str, object]]:
    """Compare every case of ``functions`` in both modes (the first ``max_cases`` of each when given).

    Each row holds ``function``, ``mode``, ``cases``, ``compared``, ``differ``, ``seconds`` and
    ``failures`` (descriptions of the outputs that differ); ``on_row(row)`` is called as each row is complete
    (the rows of a function complete together, once its cases have run in both modes), and
    ``on_start(function, number of cases)`` before its first case runs.
    """
    rows = []
    for function in functions:
        function_cases = cases(function)[:max_cases]
        if on_start is not None:
            on_start(function, len(function_cases))
        per_mode = {m: {"compared": 0, "differ": 0, "seconds": 0.0, "failures": []} for m in MODES}
        for case in function_cases:
            for mode in MODES:
                start = time.perf_counter()
                diffs = case.compare(mode)
                row = per_mode[mode]
                row["seconds"] += time.perf_counter() - start
                for name, diff in diffs:
                    row["compared"] += diff.compared
                    row["differ"] += diff.differ
                    if diff:
                        row["failures"].append(diff.describe(f"{case.id} {mode}: {name}"))
                if verbose:
                    bad = sum(d.differ for _, d in diffs)
                    print(f"  {case.id:<60} {mode:<5} {sum(d.compared for _, d in diffs):>10} {bad:>6}", flush=True)
        for mode in MODES:
            rows.append({"function": function, "mode": mode, "cases": len(function_cases), **per_mode[mode]})
            if on_row is not None:
                on_row(rows[-1])
    return rows


_HEADER = f"{'':<8}{'function':<32} {'mode':<6} {'cases':>6} {'compared':>12} {'differ':>8} {'seconds':>8}"


def _row(r: dict[str, object], done: int, total: int) -> str:
    """One row of the table, led by the progress count ``[done/total]``."""
    count = f"[{done}/{total}]"
    name, mode = f"{r['function']:<32}", f"{r['mode']:<6}"
    return f"{count:<8}{name} {mode} {r['cases']:>6} {r['compared']:>12} {r['differ']:>8} {r['seconds']:>8.1f}"


def _totals(rows: list[dict[str, object]]) -> str:
    total_compared = sum(r["compared"] for r in rows)
    total_differ = sum(r["differ"] for r in rows)
    return f"{'-' * len(_HEADER)}\n{'':<8}{'total':<32} {'':<6} {'':>6} {total_compared:>12} {total_differ:>8}"


def _announce_qtorch_build() -> None:
    """One line before a qtorch build that set-up did not make: where it goes and why (it takes ~25 s)."""
    from wage_torch._qtorch_env import extensions_dir, has_build

    folder = extensions_dir()
    if not has_build(folder):
        print(f"qtorch has no build in {folder}: its C++ kernels compile there at first use (about 25 s, once)",
              flush=True)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wage-parity", description=__doc__.splitlines()[0])
    parser.add_argument("--function", action="append", choices=FUNCTIONS, help="only these functions (repeatable)")
    parser.add_argument(
        "--max-cases", type=_positive, help="only the first N cases of each function (a quick check of an install)"
    )
    parser.add_argument("--verbose", action="store_true", help="print every case as it runs")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("wage-parity: needs torch and qtorch, the reference it compares with: install your torch build, then "
              'the torch extra (pip install ".[torch]")', file=sys.stderr)
        return 2
    _announce_qtorch_build()
    # torch's parallel kernels next to XLA's thread pool are slow on small machines; results do not change.
    torch.set_num_threads(1)
    functions = args.function or FUNCTIONS
    total = len(functions) * len(MODES)
    print(f"comparing {len(functions)} functions in {len(MODES)} modes ({', '.join(MODES)}); each row prints as it "
          "completes", flush=True)
    print(f"{_HEADER}\n{'-' * len(_HEADER)}", flush=True)
    printed: list[dict[str, object]] = []

    def on_start(function: str, n_cases: int) -> None:
        print(f"{'':<8}{function}: {n_cases} case{'s' * (n_cases != 1)}, {' and '.join(MODES)} ...", flush=True)

    def on_row(row: dict[str, object]) -> None:
        printed.append(row)
        print(_row(row, len(printed), total), flush=True)

    start = time.perf_counter()
    try:
        rows = run(functions, verbose=args.verbose, max_cases=args.max_cases, on_row=on_row, on_start=on_start)
    except ImportError as error:  # qtorch (the reference's kernels) could not be imported or built
        print(f"wage-parity: {error}", file=sys.stderr)
        return 2
    print(_totals(rows))
    print(f"{time.perf_counter() - start:.0f} s in all")
    failures = [f for r in rows for f in r["failures"]]
    for failure in failures[:20]:
        print(failure)
    if len(failures) > 20:
        print(f"... and {len(failures) - 20} more outputs differ")
    if failures:
        print("FAIL: wage_jax and the torch reference differ")
        return 1
    print("OK: every element is bit-identical (float32 bit patterns, sign of zero included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
