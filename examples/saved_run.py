"""Load a finished ``wage-train`` run and predict with it: ``wage_train.load_run``, then the plain Flax model.

``wage-train`` saves a run's configuration (``config.json``) and final weights (``weights.npz``) in its
``--out-dir``. ``load_run`` rebuilds the model from them: ``run.predict(images)`` takes raw pixels and gives the
class indices that the run's own evaluation gave; ``run.preprocess`` is the input scaling it applies (pixels
to ``[-1, 1]``), and a JAX run's ``run.model`` and ``run.params`` are a plain Flax linen module and its
parameters (WAGE's accumulators: the layers quantize them as they multiply, ``QW``, Eq. 5-7). A JAX WAGE run
then goes to deployment: ``wage_jax.export.export_run`` writes it as an integer-only ONNX program (int8 codes,
int32 sums, docs/deploying.md), which onnxruntime runs with the same predictions.

    wage-train --out-dir runs/digits                              # train first (about 10 s on the digits)
    python -m examples.saved_run --run-dir runs/digits            # then load and predict
    python -m examples.saved_run --smoke                          # trains a 2-epoch run in a temporary folder
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def predict_with(run_dir: Path) -> float:
    import wage_train
    from wage_data import load_dataset

    run = wage_train.load_run(run_dir)
    cfg = run.config
    data = load_dataset(cfg.dataset, cfg.data_dir)  # the run's data set: raw uint8 pixels, NHWC
    if cfg.validation:
        raise SystemExit(f"{run_dir}: a --validation run; this example compares with runs on the test split")
    labels = run.predict(data.x_test)  # (N,) int: raw pixels in, preprocessing included
    accuracy = float((labels == data.y_test).mean())
    recorded = json.loads((run_dir / "metrics.json").read_text())["summary"]["frameworks"][run.framework]
    print(f"{run_dir}: {run.framework} {'float' if run.wage is None else 'WAGE'} {cfg.model}, "
          f"test accuracy {accuracy:.4f} (the run recorded {recorded['final_test_acc']:.4f})")
    if run.framework == "jax":  # the same prediction from the Flax module itself, on the scaled inputs
        inputs = run.preprocess(data.x_test[:8])  # float32 in [-1, 1]
        logits = run.model.apply({"params": run.params}, inputs)  # nearest W and A: no rng key needed
        assert np.array_equal(np.asarray(logits).argmax(-1), labels[:8])
        print(f"first 8 predictions {labels[:8].tolist()}, labels {data.y_test[:8].tolist()}")
        if run.wage is not None:
            export_onnx(run, run.preprocess(data.x_test), labels, run_dir / "model.onnx")
    return accuracy


def export_onnx(run, inputs: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """The run as an integer-only ONNX program; onnxruntime's classes equal the training forward's."""
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed (pip install 'wage-jax[export]'): the ONNX export is skipped")
        return
    from wage_jax.export import export_run

    export_run(run, "onnx", path, images=inputs)  # checks the 2^24 bound on these inputs
    logits = ort.InferenceSession(str(path)).run(None, {"images": inputs})[0]  # int32 (N, classes)
    same = int((logits.argmax(1) == labels).sum())
    print(f"{path.name}: {path.stat().st_size} bytes; onnxruntime's classes equal the run's on {same}/{len(labels)}")


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, help="a finished wage-train run (its --out-dir)")
    parser.add_argument("--smoke", action="store_true", help="train a tiny run first, in a temporary folder")
    args = parser.parse_args(argv)
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="wage-run-") as tmp:
            run_dir = Path(tmp) / "digits"
            subprocess.run([sys.executable, "-m", "wage_train", "--epochs", "2", "--hidden", "32",
                            "--out-dir", str(run_dir)], check=True, stdout=subprocess.DEVNULL)
            return predict_with(run_dir)
    if args.run_dir is None:
        parser.error("--run-dir is required (or --smoke)")
    return predict_with(args.run_dir)


if __name__ == "__main__":
    main()
