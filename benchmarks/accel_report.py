"""The targets of issue 12 and the markdown report of ``benchmarks.accelerator`` (``accelerator.md``).

Targets on an H100/H200-class GPU: 0 differing bits CPU vs GPU in the quantizer cases and the
trajectories; VGG7 WAGE at least 17,000 images/s at batch 128; WAGE at most 5 % slower than float.
A speed target reads ``n/a`` in ``--smoke`` (tiny models) and on devices it does not describe; its
figure is shown all the same. A ``MISS`` carries the figures that explain it.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import format_table

__all__ = ["TARGET_IMAGES_PER_S", "TARGET_OVERHEAD", "evaluate_targets", "markdown"]

TARGET_IMAGES_PER_S = 17_000.0
TARGET_OVERHEAD = 0.05
_TARGET_CLASS = ("H100", "H200", "H800", "H20", "GH200", "B100", "B200", "GB200")


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _rows(value: Any) -> list[dict[str, Any]]:
    """A phase's rows; none where the phase failed (its value is then ``{"error": ...}``) or did not run."""
    return value if isinstance(value, list) else []


def _speed_row(result: dict[str, Any], variant: str) -> dict[str, Any] | None:
    for row in _rows((result.get("speed") or {}).get("vgg7")):
        if row["variant"] == variant:
            return row
    return None


def _target_class(result: dict[str, Any]) -> bool:
    env = result.get("environment", {})
    kind = str(env.get("device", ""))
    return env.get("backend") == "gpu" and any(k in kind for k in _TARGET_CLASS)


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, str]]:
    """``[{"target", "measured", "status", "note"}]`` from the figures in ``result`` (missing phases: not run)."""
    smoke = result["meta"]["smoke"]
    targets = []
    parity = result.get("parity")
    if parity and "functions" in parity:
        status = _mark(parity["differ"] == 0 and parity["compared"] > 0)
        note = ""
        if parity["cases skipped"]:
            status, note = status + " (incomplete)", f"{parity['cases skipped']} cases not run (time)"
        targets.append({"target": "(a) quantizer cases: 0 differing bits, device vs CPU",
                        "measured": f"{parity['differ']:,} of {parity['compared']:,} elements differ",
                        "status": status, "note": note})
    else:
        targets.append({"target": "(a) quantizer cases: 0 differing bits", "measured": "not run", "status": "MISS",
                        "note": (parity or {}).get("error", "")})
    for run in _rows((result.get("trajectories") or {}).get("runs")):
        if "error" in run:
            targets.append({"target": f"(b) {run.get('name')}: 0 differing bits", "measured": "error",
                            "status": "MISS", "note": run["error"]})
            continue
        ok = run["accumulators differ total"] == 0 and run["logits differ total"] == 0
        ok = ok and run["initial accumulators differ"] == 0
        note = ""
        if not ok:
            exact = run["exact sums guaranteed"]
            note = f"first difference at step {run['first differing step']}"
            if not exact["worst case exact"]:
                note += (f"; weight-gradient sums of up to {exact['max terms']:,} terms are not bounded by 2^24 in"
                         " the worst case, so the summation order can matter")
        targets.append({
            "target": f"(b) {run['model'].split(' ')[0]} {run['variant']}, {run['steps']} steps: 0 differing bits",
            "measured": (f"{run['accumulators differ total']:,} accumulator elements, "
                         f"{run['logits differ total']:,} logits differ"),
            "status": _mark(ok), "note": note})
    wage, flt = _speed_row(result, "wage"), _speed_row(result, "float")
    applies = "n/a (smoke sizes)" if smoke else (None if _target_class(result) else "n/a (not an H100/H200-class GPU)")
    if wage:
        ips = wage["images/s"]
        note = ""
        if ips < TARGET_IMAGES_PER_S:
            note = _throughput_note(result, wage)
        targets.append({"target": f"(c) VGG7 WAGE >= {TARGET_IMAGES_PER_S:,.0f} images/s at batch {wage['batch']}",
                        "measured": f"{ips:,.0f} images/s ({wage['ms per step']:.2f} ms/step)",
                        "status": applies or _mark(ips >= TARGET_IMAGES_PER_S), "note": note})
    if wage and flt:
        overhead = wage["ms per step"] / flt["ms per step"] - 1
        note = ""
        if overhead > TARGET_OVERHEAD:
            note = _overhead_note(result, wage, flt)
        targets.append({"target": f"(c) VGG7 WAGE overhead <= {TARGET_OVERHEAD:.0%} over float (float32)",
                        "measured": f"{overhead:+.1%} ({wage['ms per step']:.2f} vs {flt['ms per step']:.2f} ms)",
                        "status": "n/a (smoke sizes)" if smoke else _mark(overhead <= TARGET_OVERHEAD),
                        "note": note})
    return targets


def _throughput_note(result: dict[str, Any], wage: dict[str, Any]) -> str:
    flops = wage["analytic flops"]
    parts = [f"{flops / wage['batch'] / 1e9:.3g} GFLOP (matmuls and convolutions) per image per step, "
             f"{wage['achieved TFLOP/s']:.3g} TFLOP/s"]
    for row in _rows((result.get("speed") or {}).get("matmul")):
        if row["precision"].startswith("HIGHEST"):
            bound = row["TFLOP/s"] * 1e12 / (flops / wage["batch"])
            parts.append(f"the device's float32 matmul rate ({row['TFLOP/s']:.3g} TFLOP/s, Precision.HIGHEST) bounds"
                         f" it near {bound:,.0f} images/s")
    return "; ".join(parts)


def _overhead_note(result: dict[str, Any], wage: dict[str, Any], flt: dict[str, Any]) -> str:
    parts = []
    nearest = _speed_row(result, "wage_nearest")
    if nearest:
        parts.append(f"all-nearest WAGE {nearest['ms per step'] / flt['ms per step'] - 1:+.1%} (the random draws"
                     f" cost {wage['ms per step'] / nearest['ms per step'] - 1:+.1%})")
    default = _speed_row(result, "float_default")
    if default:
        parts.append(f"float at the default precision {default['ms per step']:.2f} ms")
    if result.get("profile", {}).get("trace"):
        parts.append(f"profile: {result['profile']['trace']}")
    return "; ".join(parts)


def _f(value: Any, fmt: str = "{:,.2f}") -> str:
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def _mb(memory: dict | None, key: str) -> str:
    if not memory or memory.get(key) is None:
        return "-"
    return f"{memory[key] / 2**20:,.1f}"


def _integer_section(res: Any) -> list[str]:
    """The integer mode against the float path: both images/s side by side, the speedup, the products."""
    if not isinstance(res, dict) or not res.get("rows"):
        return []
    products = res.get("products", {})
    rows = []
    for r in res["rows"]:
        p = products.get(r["variant"], {})
        speedup = res.get("integer speedup") if r["variant"] == "wage_integer" else 1.0
        rows.append([r["model"], r["variant"], r["batch"], f"{r['ms per step']:.3f}", f"{r['images/s']:,.0f}",
                     _f(speedup, "{:.2f}x"), f"{p.get('integer', '-')} / {p.get('float32', '-')}",
                     _mb(r["xla memory"], "temp"), f"{r['compile s']:.1f}"])
    out = ["## (d) Integer mode against the float path (VGG7, paper modes)", "",
           "`wage_integer`: the WAGE layers on int8 operands with int32 sums (`integer=True`, bit-identical to"
           " `wage`, the float32 path); median of interleaved rounds. Products: matmuls and convolutions of the"
           " step on integers / on float32 (static fallback of `wage_jax.integer`).", "",
           format_table(["model", "variant", "batch", "ms/step", "images/s", "speed vs float path",
                         "products int / f32", "XLA temp MB", "compile s"], rows, markdown=True), ""]
    if "int8 after XLA" in res:
        out += [f"int8 operands left in the compiled step: {'yes' if res['int8 after XLA'] else 'no'}.", ""]
    if res.get("integer unsupported"):
        out += [f"The integer step does not compile on this backend: {res['integer unsupported'][:300]}", ""]
    return out


def markdown(result: dict[str, Any]) -> str:
    """The report: device and versions, the targets with PASS/MISS, then one table per phase."""
    meta, env = result["meta"], result.get("environment", {})
    out = [f"# Accelerator readiness ({'smoke, tiny sizes' if meta['smoke'] else 'full'})", ""]
    compared = "the device against the host CPU"
    if meta.get("same device"):
        compared = "the CPU against itself (no accelerator)"
    out += [f"`{meta['command']}` on {meta['date']}, {meta['elapsed s']:.0f} s, {compared}.", ""]
    versions = [[k, str(v)] for k, v in env.items() if v not in (None, {}, "")]
    out += ["## Device and versions", "", format_table(["", ""], versions, markdown=True), ""]
    out += ["## Targets", "", format_table(
        ["target", "measured", "status", "why / note"],
        [[t["target"], t["measured"], t["status"], t["note"]] for t in result.get("targets", [])], markdown=True), ""]
    parity = result.get("parity") or {}
    if "functions" in parity:
        rows = [[f, v["cases"], v["calls"], f"{v['compared']:,}", f"{v['differ']:,}"]
                for f, v in parity["functions"].items()]
        out += ["## (a) Quantizer cases, jitted, device vs CPU", "",
                f"{parity['cases run']} of {parity['cases selected']} cases in {parity['seconds']:.1f} s"
                f" ({parity['workers']} threads).", "",
                format_table(["function", "cases", "calls", "elements", "differing"], rows, markdown=True), ""]
        if parity["failures"]:
            out += ["Differences:", ""] + [f"- {f}" for f in parity["failures"][:20]] + [""]
    traj = result.get("trajectories") or {}
    if _rows(traj.get("runs")):
        rows = []
        for r in traj["runs"]:
            if "error" in r:
                rows.append([r.get("name"), "-", "-", "-", "-", "-", "-", r["error"][:80]])
                continue
            rows.append([r["model"], r["variant"], r["batch"], r["steps"], f"{r['accumulators differ total']:,}",
                         f"{r['logits differ total']:,}", _f(r["first differing step"], "{}"),
                         f"{r['compile s']['accel']:.1f} / {r['compile s']['host']:.1f} / {r['run s']:.1f}"])
        out += ["## (b) Trajectories, device vs CPU, from one init and one key", "",
                "Accumulators: all layers' elements, summed over the steps; logits likewise. Per-step counts are in"
                " the JSON.", "",
                format_table(["model", "modes", "batch", "steps", "accumulator elements differing",
                              "logits differing", "first differing step", "compile device / CPU / run s"], rows,
                             markdown=True), ""]
    speed = result.get("speed") or {}
    step_rows = [r for key in ("vgg7", "mlp") for r in _rows(speed.get(key))]
    if step_rows:
        base = {r["model"]: r["ms per step"] for r in step_rows if r["variant"] == "float"}
        rows = [[r["model"], r["variant"], r["batch"], f"{r['ms per step']:.3f}", f"{r['images/s']:,.0f}",
                 _f(r["ms per step"] / base[r["model"]] - 1, "{:+.1%}") if r["model"] in base else "-",
                 f"{r['achieved TFLOP/s']:.3g}", _mb(r["xla memory"], "temp"), _mb(r["xla memory"], "total"),
                 _mb(r["device memory after"], "peak_bytes_in_use"), f"{r['compile s']:.1f}"] for r in step_rows]
        out += ["## (c) Train steps on the device", "",
                "Median of interleaved rounds; overhead against `float` (float32, Precision.HIGHEST) of the same"
                " model; peak device MB is the allocator's process-wide peak so far.", "",
                format_table(["model", "variant", "batch", "ms/step", "images/s", "vs float", "TFLOP/s",
                              "XLA temp MB", "XLA total MB", "peak device MB", "compile s"], rows, markdown=True), ""]
    out += _integer_section(speed.get("integer"))
    big = speed.get("largest batch") or {}
    if big.get("rows"):
        rows = [[r["batch"], f"{r['ms per step']:.2f}", f"{r['images/s']:,.0f}", _mb(r["xla memory"], "total"),
                 _mb(r["device memory after"], "peak_bytes_in_use")] for r in big["rows"]]
        out += [f"Largest VGG7 WAGE batch: {big['largest']} (search stopped: {big['stopped']})", "",
                format_table(["batch", "ms/step", "images/s", "XLA total MB", "peak device MB"], rows, markdown=True),
                ""]
    if _rows(speed.get("quantizers")):
        rows = [[r["op"], f"2^{r['elements'].bit_length() - 1}", f"{r['ms']:.3f}", f"{r['Gelem/s']:.2f}",
                 r["bytes/elem"], f"{r['GB/s']:.1f}", f"{r['of copy']:.2f}"] for r in speed["quantizers"]]
        out += ["## (c) Quantizer throughput against the copy bandwidth", "",
                format_table(["operation", "elements", "ms", "Gelem/s", "least bytes/elem", "GB/s", "of copy"], rows,
                             markdown=True), ""]
    if _rows(speed.get("matmul")):
        rows = [[r["precision"], r["n"], f"{r['ms']:.3f}", f"{r['TFLOP/s']:.3g}"] for r in speed["matmul"]]
        out += ["Float32 matmul rate (the bound on convolution-heavy steps):", "",
                format_table(["precision", "n", "ms", "TFLOP/s"], rows, markdown=True), ""]
    hooks = result.get("hooks") or {}
    if hooks:
        out += ["## (d) Optional hooks", ""]
        for name, value in hooks.items():
            if isinstance(value, dict) and "functions" in value:
                out += [f"- {name}: {value['differ']:,} of {value['compared']:,} elements differ"]
            elif isinstance(value, dict) and ("skipped" in value or "error" in value):
                out += [f"- {name}: " + "; ".join(f"{k}: {v}" for k, v in value.items() if k != "traceback")]
            else:
                out += [f"- {name}: {value}"]
        out += [""]
    notes = result.get("notes") or []
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)
