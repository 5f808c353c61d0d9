"""All benchmarks in one run: the machine, quantizer throughput, train-step times, and the targets.

    python -m benchmarks.run [--quick] [--markdown] [--only quantizers|train]      (``make bench``)

Prints the machine (CPU model, usable cores, jax backend), the load average before and after (other
processes on the machine slow every figure down and make it noisier), the tables of
``benchmarks.quantizers`` and ``benchmarks.train_step``, and each target with PASS or MISS:

* quantizers (2^22 elements): wage_jax >= 20x faster than qtorch's CPU kernels, and within 1.5x of the
  bandwidth ceiling (the jitted ``x + 1`` of the same size, for the operation's least bytes);
* train step: JAX WAGE <= 10% slower than the JAX float step (MLP at every batch, VGG7);
* train step: JAX WAGE >= 5x faster than torch+qtorch WAGE on the MLP (batches 64..256) and >= 1.5x on
  VGG7 (the float-vs-float ratio is printed beside it).

A full run takes about 5 minutes on 2 cores, ``--quick`` (fewer sizes and repeats, VGG7 at batch 16,
no all-nearest VGG7 diagnostic) under 2. On a GPU (jax's default backend), the same script runs the
JAX rows there (VGG7 at batch 128); the torch comparisons need qtorch's CPU kernels and are skipped.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks import quantizers, train_step
from benchmarks.common import CpuShare, format_table, load_average, machine_info, steady_malloc

TARGET_QTORCH_SPEEDUP = 20.0
TARGET_CEILING_RATIO = 1.5
TARGET_OVERHEAD = 0.10
TARGET_MLP_SPEEDUP = 5.0
TARGET_VGG_SPEEDUP = 1.5


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def quantizer_summary(q: dict, markdown: bool) -> tuple[str, list[list[str]]]:
    """The 2^22 row of every quantizer table, and the quantizer targets."""
    n = quantizers.TARGET_SIZE
    rows, targets = [], []
    for op in quantizers.OPS:
        tj = q["t"][(op.name, "jax", n)]
        tq = q["t"][(op.name, "qtorch", n)]
        tt = q["t"][(op.name, "torch", n)]
        ceil = quantizers.ceiling(q, n, op)
        ratio = quantizers.ceiling_ratio(op, tj, ceil)
        speedup = tq.median / tj.median
        rows.append([
            op.name, f"{tj.median * 1e3:.2f}", f"{n / tj.median / 1e9:.2f}",
            f"{op.bytes_per_elem * n / tj.median / 1e9:.1f}", f"{tq.median * 1e3:.1f}", f"{tt.median * 1e3:.1f}",
            f"{speedup:.0f}x", f"{tt.median / tj.median:.1f}x", f"{ratio:.2f}",
        ])
        if op.target:
            targets.append([f"{op.name}: jax >= {TARGET_QTORCH_SPEEDUP:.0f}x qtorch", f"{speedup:.0f}x",
                            _mark(speedup >= TARGET_QTORCH_SPEEDUP)])
            targets.append([f"{op.name}: jax <= {TARGET_CEILING_RATIO}x ceiling", f"{ratio:.2f}x",
                            _mark(ratio <= TARGET_CEILING_RATIO)])
    header = ["operation (2^22 float32)", "jax ms", "jax Gel/s", "jax GB/s", "qtorch ms", "torch ms",
              "qtorch/jax", "torch/jax", "jax x ceil"]
    return f"Quantizers at 2^22 elements\n{format_table(header, rows, markdown)}", targets


def train_targets(t: dict) -> list[list[str]]:
    idx = train_step.index(t)
    targets = []
    for (fw, model, variant, batch), row in sorted(idx.items(), key=lambda kv: (kv[0][1] != "mlp", kv[0][3])):
        if fw != "jax" or variant != "wage":
            continue
        jf = idx.get(("jax", model, "float", batch))
        if jf:
            over = row["median"] / jf["median"] - 1
            targets.append([f"{model} b{batch}: JAX WAGE <= +{TARGET_OVERHEAD:.0%} over JAX float", f"{over:+.1%}",
                            _mark(over <= TARGET_OVERHEAD)])
        tw, tf = idx.get(("torch", model, "wage", batch)), idx.get(("torch", model, "float", batch))
        if tw:
            goal = TARGET_MLP_SPEEDUP if model == "mlp" else TARGET_VGG_SPEEDUP
            ratio = tw["median"] / row["median"]
            beside = f" (float: torch/JAX {tf['median'] / jf['median']:.2f}x)" if tf and jf else ""
            targets.append([f"{model} b{batch}: JAX WAGE >= {goal}x torch+qtorch WAGE", f"{ratio:.1f}x{beside}",
                            _mark(ratio >= goal)])
    return targets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (under 2 minutes)")
    parser.add_argument("--markdown", action="store_true", help="markdown tables")
    parser.add_argument("--only", choices=["quantizers", "train"], help="run one part")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's allocator as it is (fresh buffers page-fault on every call)")
    args = parser.parse_args(argv)
    steady = False if args.default_malloc else steady_malloc()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    try:
        share = CpuShare().start()
    except (OSError, ValueError, IndexError):
        share = None
    info = machine_info()
    load_before = load_average()
    print("Machine")
    for k, v in info.items():
        print(f"  {k}: {v}")
    print(f"  allocator: {'glibc keeps freed memory (steady_malloc)' if steady else 'glibc default'}")
    print(f"  load average before (1/5/15 min): {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    print(flush=True)

    out, targets = [], []
    if args.only != "train":
        log("quantizer throughput ...")
        q = quantizers.measure(args.quick, log)
        summary, qt = quantizer_summary(q, args.markdown)
        out += [summary, quantizers.tables(q, args.markdown)]
        targets += qt
    if args.only != "quantizers":
        log("train steps ...")
        t = train_step.measure(args.quick, log, steady=not args.default_malloc)
        out.append(train_step.tables(t, args.markdown))
        targets += train_targets(t)
    print("\n\n".join(out))
    print()
    print("Targets\n" + format_table(["target", "measured", ""], targets, args.markdown))
    load_after = load_average()
    cores = info.get("cores (usable)", "?")
    print(f"\nload average before: {load_before[0]:.2f}, after: {load_after[0]:.2f} (1 min; the 'after' figure"
          f" includes this run) on {cores} usable cores; total time {time.perf_counter() - t0:.0f} s")
    if share is not None:
        others, wall, ncpu = share.stop()
        print(f"other processes used {others:.0f} core-seconds during the {wall:.0f} s run, i.e. {others / wall:.2f}"
              f" of the machine's {ncpu} cores on average" + (
                  ": the figures above are slower and noisier than on an idle machine" if others / wall > 0.1 else ""))


if __name__ == "__main__":
    main()
