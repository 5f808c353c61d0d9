"""Integer inference under onnxruntime against the float32 ONNX export of the same network, side by side.

``python -m benchmarks.inference [--smoke] [--threads N]``: for LeNet-5 and VGG7 (the paper's sizes),
images/s at batch 1 and 256 and the model's bytes, for the integer ONNX (``QLinearConv``/``QLinearMatMul``,
and the ``exact`` form: ``ConvInteger``/``MatMulInteger`` with a double rescale) and the float32 ONNX
(``wage_jax.export.float32_onnx``), each form timed in turn in one process. LeNet-5 is trained first
(``--lenet-steps`` WAGE steps on the 8x8 digits upscaled to 28x28) and every form's accuracy on the
360 test digits is printed with the training forward's: they are equal by construction, and checked.
VGG7 keeps its initial weights (the timing does not depend on their values); its exact form is timed at
batch 1 only (at ~0.2x float32, batch 256 would take minutes). Needs the ``export`` extra.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from benchmarks.core import median, row, table

BATCHES = (1, 256)


def _digits_28() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data.astype(np.float32) / 16.0) * 2 - 1
    img = np.pad(np.kron(x.reshape(-1, 8, 8), np.ones((3, 3), np.float32)), ((0, 0), (2, 2), (2, 2)),
                 constant_values=-1.0)
    return img[..., None], d.target


def _train_lenet(steps: int, widths: tuple[int, int], hidden: int):
    import jax

    from wage_jax import clip_params, make_train_step, wage_sgd
    from wage_jax.models import LeNet5
    from wage_spec import WAGEConfig

    cfg = WAGEConfig()
    x, y = _digits_28()
    model = LeNet5(config=cfg, widths=widths, hidden=hidden)
    params = clip_params(model.init(jax.random.key(0), x[:1]), cfg.bits_W)
    tx = wage_sgd(cfg.bits_W, cfg.bits_G, 8.0, cfg.G_mode, key=jax.random.key(1))
    state = tx.init(params)
    step = make_train_step(lambda p, xb, key: model.apply(p, xb, rngs={"wage": key}), tx)
    key = jax.random.key(2)
    for i in range(steps):
        start = i * 64 % (1437 - 64)
        params, state, _, _ = step(params, state, x[start:start + 64], y[start:start + 64],
                                   jax.random.fold_in(key, i))
    return model, params, cfg, x[1437:], y[1437:]


def _vgg(widths: tuple[int, int, int], hidden: int):
    import jax

    from wage_jax import clip_params
    from wage_jax.models import VGG7
    from wage_spec import WAGEConfig

    cfg = WAGEConfig()
    model = VGG7(config=cfg, widths=widths, hidden=hidden)
    params = clip_params(model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32)), cfg.bits_W)
    return model, params, cfg


def _session(model_proto: Any, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _images_per_s(sess: Any, images: np.ndarray, target_s: float, reps: int) -> float:
    """Images/s, the median of ``reps`` repeats of about ``target_s`` each, after one warm-up call (timed: it
    sets the calls per repeat and counts as the first repeat when one call is longer than ``target_s``)."""
    feed = {"images": images}
    t0 = time.perf_counter()
    sess.run(None, feed)
    first = time.perf_counter() - t0
    calls = max(1, int(target_s / max(first, 1e-9)))
    times = [first] if calls == 1 else []
    for _ in range(reps - len(times)):
        t0 = time.perf_counter()
        for _ in range(calls):
            sess.run(None, feed)
        times.append((time.perf_counter() - t0) / calls)
    return len(images) / median(times)


def _forms(program: Any) -> dict[str, Any]:
    from wage_jax.export import float32_onnx, integer_onnx

    return {"integer qlinear": integer_onnx(program), "integer exact": integer_onnx(program, "exact"),
            "float32": float32_onnx(program)}


def measure(smoke: bool = False, threads: int = 1, lenet_steps: int = 300, budget: Any = None) -> dict[str, Any]:
    """Rows (``benchmarks.core.row``) of images/s and bytes per network, form and batch; LeNet-5 accuracies.
    ``budget`` (the suite's ``benchmarks.core.Budget``): each network's timings start only if 10 s are left."""
    import jax

    from wage_jax.export import integer_program

    if smoke:
        lenet = _train_lenet(2, (4, 8), 16)
        vgg = _vgg((4, 8, 8), 16)
        batches, target_s, reps = (1, 8), 0.01, 1
    else:
        lenet = _train_lenet(lenet_steps, (32, 64), 512)
        vgg = _vgg((128, 256, 512), 1024)
        batches, target_s, reps = BATCHES, 0.5, 3
    rows, accuracy = [], {}
    model, params, cfg, test_x, test_y = lenet
    program = integer_program(model, params, cfg)
    logits = np.asarray(jax.jit(model.apply)(params, test_x))
    accuracy["training forward (JAX float32)"] = float((logits.argmax(1) == test_y).mean())
    for name, proto in _forms(program).items():
        out = _session(proto, threads).run(None, {"images": test_x})[0]
        scaled = out if name == "float32" else out * 2.0**program.logit_exponent
        if not np.array_equal(scaled, logits):
            raise AssertionError(f"LeNet-5 {name}: logits differ from the training forward's")
        accuracy[f"ONNX {name}"] = float((out.argmax(1) == test_y).mean())
    rng = np.random.default_rng(0)
    for net, (m, p, c), shape in (("lenet5", lenet[:3], (28, 28, 1)), ("vgg7", vgg, (32, 32, 3))):
        if budget is not None and not budget.allows(1.0 if smoke else 10.0, f"inference {net}"):
            continue
        forms = _forms(integer_program(m, p, c))
        for batch in batches:
            images = rng.uniform(-1, 1, (batch, *shape)).astype(np.float32)
            # the exact form runs VGG7 at ~0.2x float32: at batch 256 that alone would take minutes
            timed = [n for n in forms if not (n == "integer exact" and net == "vgg7" and batch > 1)]
            speed = {name: _images_per_s(_session(forms[name], threads), images, target_s, reps) for name in timed}
            for name in (n for n in timed if n != "float32"):
                target = None
                if name == "integer qlinear" and batch == 256:
                    target = "ratio >= 2" if net == "vgg7" else "ratio >= 1"
                rows.append(row(f"{net} b{batch} {name}", speed[name], "images/s", ratio=speed[name] / speed["float32"],
                                target=target, note=f"float32 {speed['float32']:.4g} images/s"))
        for name, proto in forms.items():
            rows.append(row(f"{net} {name} model", len(proto.SerializeToString()), "bytes"))
    rows += [row(f"lenet5 test accuracy, {name}", acc, "fraction", note="360 digits at 28x28")
             for name, acc in accuracy.items()]
    return {"rows": rows, "threads": threads}


def report(result: dict[str, Any]) -> str:
    """The rows as a markdown table (ratio: integer / float32 images/s)."""
    return "\n".join([
        f"onnxruntime on the CPU, {result['threads']} intra-op thread(s); ratio: integer / float32", "",
        table(["measurement", "figure", "unit", "ratio", "target", "note"],
              [[r["name"], f"{r['figure']:.4g}", r["unit"], "" if r["ratio"] is None else f"{r['ratio']:.2f}",
                "" if r["target"] is None else f"{r['target']} ({'met' if r['passed'] else 'missed'})", r["note"]]
               for r in result["rows"]])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny networks and batches (a test of the script)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--lenet-steps", type=int, default=300, help="LeNet-5 training steps (default 300)")
    args = parser.parse_args(argv)
    print(report(measure(args.smoke, args.threads, args.lenet_steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
