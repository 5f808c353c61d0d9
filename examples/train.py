"""Train a WAGE network (Wu et al., ICLR 2018) end to end, in JAX (default) or torch, or both side by side.

Default: WAGE 2-8-8-8 (W-A-G-E bits), an MLP 64-256-10 on scikit-learn's 8x8 digits (embedded, offline),
batch 128, lr 8 on the paper's schedule (8, then 1, then 1/8). Also MNIST (idx files) and CIFAR-10 (python
batches, with the paper's pad-4 crop and flip augmentation, VGG7) from ``--data-dir``.

Each step is WAGE's: forward with ``QW(w_acc)`` weights and ``Q_A`` activations, sum-of-squares loss,
backward with ``Q_E`` errors, then ``w_acc <- C(w_acc, bits_W) - QG(grad, bits_G, lr)`` (SPEC §3).

Examples::

    python -m examples.train                                 # digits, JAX, WAGE 2-8-8-8
    python -m examples.train --framework torch --seed 1
    python -m examples.train --float                         # float baseline (plain SGD), same MLP
    python -m examples.train --compare                       # JAX and torch from one init and one batch order
    python -m examples.train --dataset cifar10 --data-dir ~/data   # the paper's VGG7, 300 epochs
    python -m examples.train --resume                        # continue the run in runs/<name>

Outputs in ``--out-dir`` (default ``runs/<name>``): ``config.json``, ``metrics.csv`` and ``metrics.json``
(per epoch: loss, train/test accuracy, lr, time, images/s), ``plot.png`` (curves and a histogram of each
layer's quantized weights), ``weights.npz`` (the final accumulators), ``checkpoints/`` (the latest epoch;
``--resume`` continues bit-exactly).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from examples.data import DATASETS, DataError, augment_crop_flip, load_dataset, pad_images, to_inputs
from examples.reporting import format_compare, format_header, format_row, plot_run, write_csv, write_json
from examples.runspec import ModelSpec, lr_table
from wage_spec import FULL_PRECISION, WAGEConfig

__all__ = ["build_parser", "main", "resolve_config", "run"]

FLOAT_LR = 0.002  # plain SGD on the summed loss of a batch of 128 (0.001-0.003 all reach ~97.5% on digits)
WAGE_LR = 8.0  # the paper's
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"model": "mlp", "hidden": [256], "epochs": 60, "augment": False},
    "mnist": {"model": "mlp", "hidden": [1024], "epochs": 100, "augment": False},
    "cifar10": {"model": "vgg7", "hidden": [1024], "epochs": 300, "augment": True},
}
# Options that only say where/how to run, not what to train (never compared on --resume).
RUNTIME_ARGS = {"resume", "stop_after", "no_progress", "out_dir", "name", "torch_threads", "devices"}
# Options that --resume may change: more epochs (the lr schedule is recomputed), where the data is.
RESUME_OVERRIDABLE = {"epochs", "data_dir", "eval_batch_size"}
_MODES = ("W_mode", "A_mode", "G_mode", "E_mode")


class UsageError(ValueError):
    """An inconsistent combination of options."""


# ------------------------------------------------------------------------------------------ CLI


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_bits(text: str) -> list[int]:
    """``"2-8-8-8"`` -> ``[2, 8, 8, 8]`` (W-A-G-E); ``fp`` for A or E means full precision (-1)."""
    parts = text.replace(",", "-").split("-")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"--bits takes W-A-G-E, e.g. 2-8-8-8, got {text!r}")
    out = []
    for name, p in zip("WAGE", parts, strict=True):
        if p.lower() in ("fp", "f", "full") and name in "AE":
            out.append(FULL_PRECISION)
            continue
        try:
            out.append(int(p))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--bits: {name} bits must be an int (or fp for A/E), got {p!r}") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    """The ``wage-train`` argument parser. Every option defaults to None: :func:`resolve_config` fills
    dataset-dependent defaults, and ``--resume`` can tell which options were given."""
    p = argparse.ArgumentParser(
        prog="wage-train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        allow_abbrev=False,
    )
    which = p.add_argument_group("what to run")
    fw = which.add_mutually_exclusive_group()
    fw.add_argument("--framework", choices=("jax", "torch"), help="default: jax")
    fw.add_argument(
        "--compare",
        action="store_true",
        default=None,
        help="train in JAX and torch from the same init and batches and report per epoch whether the "
        "trajectories are identical (all rounding modes nearest unless set explicitly)",
    )
    which.add_argument("--float", action="store_true", default=None, help="float baseline: no quantizers, plain SGD")
    data = p.add_argument_group("data and model")
    data.add_argument("--dataset", choices=DATASETS, help="default: digits (embedded)")
    data.add_argument("--data-dir", help="directory with the MNIST idx files or cifar-10-batches-py/")
    data.add_argument("--model", choices=("mlp", "vgg7"), help="default: mlp (digits, mnist), vgg7 (cifar10)")
    data.add_argument("--hidden", type=_ints, help="MLP hidden widths, e.g. 256 or 512,256 (default 256; mnist 1024)")
    data.add_argument("--widths", type=_ints, help="VGG7 conv widths of the 3 stages (default 128,256,512)")
    data.add_argument("--vgg-hidden", type=int, help="VGG7 dense width (default 1024)")
    data.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pad-4 random crop + horizontal flip (default: on for cifar10 only)",
    )
    q = p.add_argument_group("WAGE quantization")
    q.add_argument("--bits", type=parse_bits, help="W-A-G-E bits (default 2-8-8-8; fp = full precision for A/E)")
    for m, default in zip("WAGE", ("nearest", "nearest", "stochastic", "stochastic"), strict=True):
        q.add_argument(f"--{m}-mode", choices=("nearest", "stochastic"), help=f"rounding of {m} (default {default})")
    q.add_argument("--factor", type=float, help="initializer variance factor (default 1.0, the paper's)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, help="default: 60 (digits), 100 (mnist), 300 (cifar10)")
    t.add_argument("--batch-size", type=int, help="default 128")
    t.add_argument(
        "--lr", type=float, help=f"base learning rate (default {WAGE_LR:g} for WAGE, {FLOAT_LR:g} for --float)"
    )
    t.add_argument(
        "--schedule",
        choices=("paper", "constant"),
        help="paper (default): lr x1 for 2/3 of the epochs, x1/8 for 1/6, x1/64 for 1/6; constant: lr",
    )
    t.add_argument("--seed", type=int, help="initial weights, batch order and random rounding (default 0)")
    t.add_argument("--limit-batches", type=int, help="at most this many training batches per epoch (quick checks)")
    t.add_argument("--eval-batch-size", type=int, help="default 500")
    r = p.add_argument_group("output")
    r.add_argument("--out-dir", help="default runs/<name>")
    r.add_argument("--name", help="run name (default from data set, model, bits, framework and seed)")
    r.add_argument("--resume", action="store_true", default=None, help="continue the run saved in --out-dir")
    r.add_argument("--stop-after", type=int, help="stop after this many epochs of this invocation (resume later)")
    r.add_argument("--no-progress", action="store_true", default=None, help="no progress bar")
    r.add_argument(
        "--devices",
        type=int,
        help="JAX: train data-parallel over this many local devices (default: all; the batch size must divide "
        "by it, else one device is used). The result is bit-identical for every device count.",
    )
    r.add_argument(
        "--torch-threads",
        type=int,
        help="torch intra-op threads (default: 1 for digits, whose steps are too small to split across "
        "threads, and torch's default otherwise)",
    )
    return p


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run's full configuration (JSON-able) from the parsed options and the data set's defaults."""
    dataset = args.dataset or "digits"
    d = DATASET_DEFAULTS[dataset]
    compare, is_float = bool(args.compare), bool(args.float)
    if compare and is_float:
        raise UsageError("--compare checks WAGE's bit-exact JAX/torch parity; it does not apply to --float")
    paper = WAGEConfig()
    modes = {m: getattr(args, m) or ("nearest" if compare else getattr(paper, m)) for m in _MODES}
    bits = args.bits or [paper.bits_W, paper.bits_A, paper.bits_G, paper.bits_E]
    cfg: dict[str, Any] = {
        "framework": "compare" if compare else (args.framework or "jax"),
        "float": is_float,
        "dataset": dataset,
        "data_dir": args.data_dir,
        "model": args.model or d["model"],
        "hidden": list(args.hidden or d["hidden"]),
        "widths": list(args.widths or [128, 256, 512]),
        "vgg_hidden": args.vgg_hidden or 1024,
        "bits": list(bits),
        **modes,
        "factor": args.factor if args.factor is not None else paper.factor,
        "epochs": args.epochs if args.epochs is not None else d["epochs"],
        "batch_size": args.batch_size or 128,
        "lr": args.lr if args.lr is not None else (FLOAT_LR if is_float else WAGE_LR),
        "schedule": args.schedule or "paper",
        "seed": args.seed if args.seed is not None else 0,
        "augment": args.augment if args.augment is not None else d["augment"],
        "limit_batches": args.limit_batches,
        "eval_batch_size": args.eval_batch_size or 500,
    }
    if cfg["model"] == "vgg7" and len(cfg["widths"]) != 3:
        raise UsageError(f"--widths takes the 3 VGG7 stage widths, got {cfg['widths']}")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if cfg[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {cfg[key]}")
    if cfg["limit_batches"] is not None and cfg["limit_batches"] < 1:
        raise UsageError(f"--limit-batches must be >= 1, got {cfg['limit_batches']}")
    wage_config(cfg)  # validates bits and modes (SPEC §4)
    method = "float" if is_float else "wage" + "".join("fp" if b == FULL_PRECISION else str(b) for b in bits)
    cfg["name"] = args.name or f"{dataset}-{cfg['model']}-{method}-{cfg['framework']}-s{cfg['seed']}"
    cfg["out_dir"] = args.out_dir or str(Path("runs") / cfg["name"])
    return cfg


def wage_config(cfg: dict[str, Any]) -> WAGEConfig:
    """The ``WAGEConfig`` of a resolved configuration."""
    w, a, g, e = cfg["bits"]
    modes = {m: cfg[m] for m in _MODES}
    return WAGEConfig(bits_W=w, bits_A=a, bits_G=g, bits_E=e, factor=cfg["factor"], **modes)


def _resume_config(cli: dict[str, Any], args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """The saved configuration of the run in ``out_dir``, with the options ``--resume`` may change applied.

    Any other option given explicitly must agree with the saved run (else :class:`UsageError`).
    """
    path = out_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume: no run to continue in {out_dir} ({path.name} not found)")
    saved = json.loads(path.read_text())
    given = {k for k, v in vars(args).items() if v is not None} - RUNTIME_ARGS
    cfg = dict(saved)
    for arg in sorted(given):
        key = "framework" if arg == "compare" else arg
        if key in RESUME_OVERRIDABLE:
            cfg[key] = cli[key]
        elif cli[key] != saved[key]:
            raise UsageError(
                f"--resume continues the run in {out_dir}, which has {key}={saved[key]!r}; "
                f"--{arg.replace('_', '-')} asks for {cli[key]!r} (start a new run in another --out-dir)"
            )
    if cfg["epochs"] != saved["epochs"]:
        print(f"note: --epochs {cfg['epochs']} (was {saved['epochs']}): the lr schedule is recomputed", flush=True)
    return cfg


# ------------------------------------------------------------------------------------ training


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.int32)


def _make_runners(
    cfg: dict[str, Any], spec: ModelSpec, lrs: list[float], spe: int, devices: int | None = None
) -> list[Any]:
    quantized = not cfg["float"]
    config = wage_config(cfg)
    runners: list[Any] = []
    common = dict(quantized=quantized, lrs=lrs, steps_per_epoch=spe, seed=cfg["seed"],
                  eval_batch_size=cfg["eval_batch_size"])
    if cfg["framework"] in ("torch", "compare"):
        from examples.torch_runner import TorchRunner

        runners.append(TorchRunner(spec, config, **common))
    if cfg["framework"] in ("jax", "compare"):
        from examples.jax_runner import JaxRunner

        # --compare: JAX starts from torch's initial weights (its own draw would differ).
        init = runners[0].accumulators() if cfg["framework"] == "compare" else None
        runners.append(JaxRunner(spec, config, init_weights=init, devices=devices, batch_size=cfg["batch_size"],
                                 **common))
    return runners


def _compare_epoch(runners: list[Any], steps: int, steps_differ: int, test_logits: dict[str, np.ndarray],
                   bits_W: int, epoch: int) -> dict[str, Any]:
    """How far JAX is from torch after an epoch: accumulators (JAX vs ``C(torch)``, SPEC §3) and test outputs."""
    import torch

    from wage_torch.wage_qtorch import C

    torch_runner, jax_runner = runners
    torch_acc = [C(torch.from_numpy(a), bits_W).numpy() for a in torch_runner.accumulators()]
    jax_acc = jax_runner.accumulators()
    differ = sum(int((_bits(a) != _bits(b)).sum()) for a, b in zip(torch_acc, jax_acc, strict=True))
    total = sum(a.size for a in torch_acc)
    lt, lj = test_logits["torch"], test_logits["jax"]
    pred_differ = int((lt.argmax(-1) != lj.argmax(-1)).sum())
    logits_differ = int((_bits(lt) != _bits(lj)).sum())
    identical = steps_differ == 0 and differ == 0 and logits_differ == 0
    return {
        "epoch": epoch,
        "steps": steps,
        "steps_logits_differ": steps_differ,
        "accumulator_elements": total,
        "accumulator_elements_differ": differ,
        "test_examples": len(lt),
        "test_predictions_differ": pred_differ,
        "test_logits_differ": logits_differ,
        "identical": identical,
    }


def _summary(cfg: dict[str, Any], spec: ModelSpec, history: list[dict], compare: list[dict]) -> dict[str, Any]:
    frameworks = {}
    for fw in dict.fromkeys(m["framework"] for m in history):
        rows = [m for m in history if m["framework"] == fw]
        frameworks[fw] = {
            "final_test_acc": rows[-1]["test_acc"],
            "best_test_acc": max(m["test_acc"] for m in rows),
            "final_train_acc": rows[-1]["train_acc"],
            "final_loss": rows[-1]["loss"],
            "train_time_s": sum(m["train_time_s"] for m in rows),
            "eval_time_s": sum(m["eval_time_s"] for m in rows),
        }
    out: dict[str, Any] = {
        "model": spec.describe(),
        "epochs_done": max((m["epoch"] for m in history), default=0),
        "frameworks": frameworks,
    }
    if compare:
        diverged = [c["epoch"] for c in compare if not c["identical"]]
        out["compare"] = {
            "identical_all_epochs": not diverged,
            "first_divergent_epoch": diverged[0] if diverged else None,
        }
    return out


def _save_checkpoint(root: Path, epoch: int, runners: list[Any], state: dict[str, Any]) -> None:
    """Write ``root/epoch_NNNN`` (runners + state.json), point ``root/latest`` at it, drop older epochs."""
    target = root / f"epoch_{epoch:04d}"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for r in runners:
        r.save(target)
    write_json(target / "state.json", state)
    tmp = root / "latest.tmp"
    tmp.write_text(target.name + "\n")
    tmp.replace(root / "latest")
    for old in root.glob("epoch_*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)


def _latest_checkpoint(root: Path) -> Path | None:
    latest = root / "latest"
    if not latest.is_file():
        return None
    path = root / latest.read_text().strip()
    return path if (path / "state.json").is_file() else None


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, train, write the outputs; returns the run's summary (as in ``metrics.json``).

    Exits (``SystemExit`` 2) with one clear message on bad options or missing data.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = resolve_config(args)
        out_dir = Path(cfg["out_dir"])
        if args.resume:
            cfg = _resume_config(cfg, args, out_dir)
        data = load_dataset(cfg["dataset"], cfg["data_dir"])
    except (UsageError, DataError, ValueError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    if cfg["framework"] != "jax":
        import torch

        threads = args.torch_threads or (1 if cfg["dataset"] == "digits" else None)
        if threads:
            torch.set_num_threads(threads)
    return _train(cfg, data, out_dir, resume=bool(args.resume), stop_after=args.stop_after,
                  progress=not args.no_progress, devices=args.devices)


def _train(cfg: dict[str, Any], data: Any, out_dir: Path, *, resume: bool, stop_after: int | None,
           progress: bool, devices: int | None = None) -> dict[str, Any]:
    from tqdm.auto import tqdm

    x_train, x_test = data.x_train, data.x_test
    if cfg["model"] == "vgg7":
        h, w, _ = data.image_shape
        size = -(-max(h, w) // 8) * 8  # three 2x2 poolings: a multiple of 8 (MNIST 28 -> 32)
        if (h, w) != (size, size):
            x_train, x_test = pad_images(x_train, size), pad_images(x_test, size)
    spec = ModelSpec(
        kind=cfg["model"],
        image_shape=tuple(x_train.shape[1:]),
        num_classes=data.num_classes,
        hidden=tuple(cfg["hidden"]),
        widths=tuple(cfg["widths"]),
        vgg_hidden=cfg["vgg_hidden"],
    )
    batch, epochs = cfg["batch_size"], cfg["epochs"]
    spe = len(x_train) // batch
    if cfg["limit_batches"]:
        spe = min(spe, cfg["limit_batches"])
    if spe == 0:
        raise SystemExit(f"wage-train: error: --batch-size {batch} exceeds the {len(x_train)} training examples")
    lrs = lr_table(cfg["lr"], epochs, cfg["schedule"])
    test_inputs = to_inputs(x_test, data.max_value)
    runners = _make_runners(cfg, spec, lrs, spe, devices)
    frameworks = [r.framework for r in runners]

    ckpt_root = out_dir / "checkpoints"
    rng = np.random.default_rng(cfg["seed"])
    history: list[dict[str, Any]] = []
    compare: list[dict[str, Any]] = []
    start = 0
    if resume:
        ckpt = _latest_checkpoint(ckpt_root)
        if ckpt is None:
            raise SystemExit(f"wage-train: error: --resume: no checkpoint in {ckpt_root}")
        state = json.loads((ckpt / "state.json").read_text())
        for r in runners:
            r.restore(ckpt)
        rng.bit_generator.state = state["data_rng"]
        history, compare, start = state["history"], state["compare"], state["epoch"]
        print(f"resumed from {ckpt} (epoch {start} done)", flush=True)
    else:
        if ckpt_root.exists():
            print(f"note: starting a new run; removing the old checkpoints in {ckpt_root}", flush=True)
            shutil.rmtree(ckpt_root)
        out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", cfg)

    method = (
        "float (plain SGD)"
        if cfg["float"]
        else "WAGE {}-{}-{}-{} (W {}, A {}, G {}, E {})".format(*cfg["bits"], *(cfg[m] for m in _MODES))
    )
    print(
        f"{method} | {spec.describe()} | {cfg['dataset']}: {len(x_train)} train / {len(x_test)} test"
        f"{' (augmented)' if cfg['augment'] else ''} | {' + '.join(frameworks)} | {epochs} epochs x {spe} steps "
        f"of {batch}, lr {cfg['lr']:g} ({cfg['schedule']} schedule) | seed {cfg['seed']} | {out_dir}",
        flush=True,
    )
    if cfg["framework"] == "compare" and not cfg["float"] and "stochastic" in (cfg[m] for m in _MODES):
        print("note: stochastic rounding draws different random numbers in JAX and torch: the trajectories "
              "are expected to diverge (use nearest modes for a bit-exact comparison)", flush=True)
    print(format_header(), flush=True)

    bits_W = cfg["bits"][0]
    wall0 = time.perf_counter()
    for done_this_run, epoch in enumerate(range(start, epochs), start=1):
        order = rng.permutation(len(x_train))
        stats = {fw: {"loss": 0.0, "correct": 0, "time": 0.0} for fw in frameworks}
        steps_differ = 0
        bar = tqdm(total=spe, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False, disable=not progress)
        for b in range(spe):
            idx = order[b * batch : (b + 1) * batch]
            xb = x_train[idx]
            if cfg["augment"]:
                xb = augment_crop_flip(xb, rng)
            xb, yb = to_inputs(xb, data.max_value), data.y_train[idx]
            logits_by_fw = {}
            for r in runners:
                t0 = time.perf_counter()
                loss, logits = r.train_step(xb, yb)
                s = stats[r.framework]
                s["time"] += time.perf_counter() - t0
                s["loss"] += loss
                s["correct"] += int((logits.argmax(-1) == yb).sum())
                logits_by_fw[r.framework] = logits
            if len(runners) == 2:
                steps_differ += int(not np.array_equal(_bits(logits_by_fw["torch"]), _bits(logits_by_fw["jax"])))
            bar.update(1)
            bar.set_postfix(loss=f"{loss / batch:.4f}")
        bar.close()

        test_logits = {}
        rows = []
        for r in runners:
            t0 = time.perf_counter()
            test_logits[r.framework] = r.predict(test_inputs)
            eval_time = time.perf_counter() - t0
            s = stats[r.framework]
            rows.append({
                "epoch": epoch + 1,
                "framework": r.framework,
                "loss": s["loss"] / (spe * batch),
                "train_acc": s["correct"] / (spe * batch),
                "test_acc": float((test_logits[r.framework].argmax(-1) == data.y_test).mean()),
                "lr": lrs[epoch],
                "time_s": s["time"] + eval_time,
                "images_per_s": spe * batch / s["time"],
                "train_time_s": s["time"],
                "eval_time_s": eval_time,
            })
        history.extend(rows)
        for row in rows:
            tqdm.write(format_row(row))
        if len(runners) == 2:
            compare.append(_compare_epoch(runners, spe, steps_differ, test_logits, bits_W, epoch + 1))
            tqdm.write(format_compare(compare[-1]))
        sys.stdout.flush()

        state = {"epoch": epoch + 1, "data_rng": rng.bit_generator.state, "history": history, "compare": compare}
        _save_checkpoint(ckpt_root, epoch + 1, runners, state)
        _write_metrics(out_dir, cfg, spec, history, compare)
        if stop_after is not None and done_this_run >= stop_after and epoch + 1 < epochs:
            print(f"stopped after {done_this_run} epoch(s) (--stop-after); continue with --resume", flush=True)
            break

    summary = _write_metrics(out_dir, cfg, spec, history, compare)
    np.savez(out_dir / "weights.npz", **{f"{r.framework}.{k}": v for r in runners for k, v in r.raw_weights().items()})
    if history:
        plot_run(
            out_dir / "plot.png",
            history,
            runners[-1].forward_weights(),
            f"{cfg['name']}\n{method}, {spec.describe()}, {cfg['dataset']}",
            weights_label="float weights" if cfg["float"] else f"QW(accumulator), {runners[-1].framework}",
        )
    for fw, s in summary["frameworks"].items():
        print(
            f"{fw}: final test accuracy {100 * s['final_test_acc']:.2f}% (best {100 * s['best_test_acc']:.2f}%), "
            f"train {s['train_time_s']:.1f} s + eval {s['eval_time_s']:.1f} s",
            flush=True,
        )
    if "compare" in summary:
        c = summary["compare"]
        print("jax vs torch: " + ("identical trajectories in every epoch" if c["identical_all_epochs"]
                                  else f"trajectories differ from epoch {c['first_divergent_epoch']}"), flush=True)
    print(f"wall time of this invocation {time.perf_counter() - wall0:.1f} s; outputs in {out_dir}", flush=True)
    return summary


def _write_metrics(out_dir: Path, cfg: dict[str, Any], spec: ModelSpec, history: list[dict],
                   compare: list[dict]) -> dict[str, Any]:
    summary = _summary(cfg, spec, history, compare)
    write_csv(out_dir / "metrics.csv", history)
    if compare:
        write_csv(out_dir / "compare.csv", compare)
    write_json(out_dir / "metrics.json", {"config": cfg, "summary": summary, "history": history, "compare": compare})
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``wage-train``, ``python -m examples.train``)."""
    run(argv)


if __name__ == "__main__":
    main()
