"""The ``wage-train`` run configuration: defaults per data set, resolution from the parsed options, resume rules."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wage_spec import FULL_PRECISION, WAGEConfig
from wage_train.presets import apply_preset
from wage_train.safe_io import read_json_object

__all__ = [
    "DATASET_DEFAULTS",
    "MODEL_DEFAULTS",
    "MODES",
    "UsageError",
    "float_lr",
    "resolve_config",
    "resume_config",
    "wage_config",
]

FLOAT_LR = 0.001  # x 64 / fan-in; chosen on a validation split: benchmarks/float_lr_sweep.py, docs/training.md
WAGE_LR = 8.0  # the paper's
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"model": "mlp", "hidden": [256], "epochs": 60, "augment": False},
    "mnist": {"model": "mlp", "hidden": [1024], "epochs": 100, "augment": False},
    "cifar10": {"model": "vgg7", "hidden": [1024], "epochs": 300, "augment": True},
    "svhn": {"model": "vgg7", "hidden": [1024], "epochs": 300, "augment": True, "flip": False},
}
# Conv widths and dense width of the conv models when not given (the paper's).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "vgg7": {"widths": [128, 256, 512], "vgg_hidden": 1024},
    "lenet5": {"widths": [32, 64], "vgg_hidden": 512},
}
# Options that only say where/how to run, not what to train (never compared on --resume).
RUNTIME_ARGS = {"resume", "overwrite", "stop_after", "no_progress", "out_dir", "name", "torch_threads", "devices",
                "download", "print_config"}
# Options that --resume may change: more epochs (the lr schedule is recomputed), where the data is.
# Config keys newer than some saved runs, with the value those runs had in effect.
OPTIONAL_SAVED: dict[str, Any] = {"validation": None, "integer": False}
RESUME_OVERRIDABLE = {"epochs", "data_dir", "eval_batch_size", "integer"}
MODES = ("W_mode", "A_mode", "G_mode", "E_mode")



class UsageError(ValueError):
    """An inconsistent combination of options."""


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run's full configuration (JSON-able) from the parsed options, the ``--preset`` (explicit options win)
    and the data set's defaults."""
    preset = getattr(args, "preset", None)
    args = apply_preset(args)
    dataset = args.dataset or "digits"
    d = DATASET_DEFAULTS[dataset]
    compare, is_float = bool(args.compare), bool(args.float)
    if compare and is_float:
        raise UsageError("--compare checks WAGE's bit-exact JAX/torch parity; it does not apply to --float")
    integer = bool(getattr(args, "integer", None))
    if integer and (is_float or compare or (args.framework or "jax") != "jax"):
        raise UsageError("--integer runs WAGE's JAX layers on integers; it does not apply to --float, --compare "
                         "or --framework torch")
    paper = WAGEConfig()
    modes = {m: getattr(args, m) or ("nearest" if compare else getattr(paper, m)) for m in MODES}
    bits = args.bits or [paper.bits_W, paper.bits_A, paper.bits_G, paper.bits_E]
    cfg: dict[str, Any] = {
        "framework": "compare" if compare else (args.framework or "jax"),
        "float": is_float,
        "integer": integer,
        "dataset": dataset,
        "data_dir": args.data_dir,
        "model": (model := args.model or d["model"]),
        "hidden": list(args.hidden or d["hidden"]),
        "widths": list(args.widths or MODEL_DEFAULTS.get(model, MODEL_DEFAULTS["vgg7"])["widths"]),
        "vgg_hidden": args.vgg_hidden or MODEL_DEFAULTS.get(model, MODEL_DEFAULTS["vgg7"])["vgg_hidden"],
        "bits": list(bits),
        **modes,
        "factor": args.factor if args.factor is not None else paper.factor,
        "epochs": args.epochs if args.epochs is not None else d["epochs"],
        "batch_size": args.batch_size or 128,
        # --float without --lr: float_lr(image shape), filled in once the data is loaded.
        "lr": args.lr if args.lr is not None else (None if is_float else WAGE_LR),
        "schedule": args.schedule or "paper",
        "seed": args.seed if args.seed is not None else 0,
        "augment": args.augment if args.augment is not None else d["augment"],
        "flip": args.flip if getattr(args, "flip", None) is not None else d.get("flip", True),
        "preset": preset,
        "limit_batches": args.limit_batches,
        "eval_batch_size": args.eval_batch_size or 500,
        "validation": getattr(args, "validation", None),
    }
    if cfg["model"] == "vgg7" and len(cfg["widths"]) != 3:
        raise UsageError(f"--widths takes the 3 VGG7 stage widths, got {cfg['widths']}")
    if cfg["model"] == "lenet5" and len(cfg["widths"]) != 2:
        raise UsageError(f"--widths takes the 2 LeNet-5 conv widths, got {cfg['widths']}")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if cfg[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {cfg[key]}")
    if cfg["limit_batches"] is not None and cfg["limit_batches"] < 1:
        raise UsageError(f"--limit-batches must be >= 1, got {cfg['limit_batches']}")
    wage_config(cfg)  # validates bits and modes (docs/contract.md §4)
    method = "float" if is_float else "wage" + "".join("fp" if b == FULL_PRECISION else str(b) for b in bits)
    cfg["name"] = args.name or f"{dataset}-{cfg['model']}-{method}-{cfg['framework']}-s{cfg['seed']}"
    cfg["out_dir"] = args.out_dir or str(Path("runs") / cfg["name"])
    return cfg


def float_lr(image_shape: tuple[int, ...]) -> float:
    """The float baseline's default lr: ``FLOAT_LR * 64 / fan-in`` of the first layer (the flattened image).

    Plain SGD on the batch-summed squared error: the first layer's gradient grows with the input size, so the
    lr for 8x8 digits (0.001) is scaled by 64 / (H*W*C): 8.16e-5 for 28x28 MNIST, 2.08e-5 for 32x32x3. The
    constant was chosen on validation splits of the training sets, never the test set
    (``benchmarks/float_lr_sweep.py``; docs/training.md gives the figures).
    """
    fan_in = 1
    for n in image_shape:
        fan_in *= int(n)
    return FLOAT_LR * 64.0 / fan_in


def wage_config(cfg: dict[str, Any]) -> WAGEConfig:
    """The ``WAGEConfig`` of a resolved configuration."""
    w, a, g, e = cfg["bits"]
    modes = {m: cfg[m] for m in MODES}
    return WAGEConfig(bits_W=w, bits_A=a, bits_G=g, bits_E=e, factor=cfg["factor"], **modes)


def resume_config(cli: dict[str, Any], args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """The saved configuration of the run in ``out_dir``, with the options ``--resume`` may change applied.

    Any other option given explicitly must agree with the saved run (else :class:`UsageError`).
    """
    path = out_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume: no run to continue in {out_dir} ({path.name} not found)")
    saved = read_json_object(path)
    for key, default in OPTIONAL_SAVED.items():  # options added after a run was saved
        saved.setdefault(key, default)
    missing = sorted(set(cli) - set(saved) - {"name", "out_dir"})
    if missing:
        raise UsageError(f"{path}: not a wage-train config (missing {', '.join(missing)})")
    given = {k for k, v in vars(args).items() if v is not None} - RUNTIME_ARGS
    cfg = dict(saved)
    for arg in sorted(given):
        key = "framework" if arg == "compare" else arg
        if key in RESUME_OVERRIDABLE:
            cfg[key] = cli[key]
        elif cli[key] != saved.get(key):
            raise UsageError(
                f"--resume continues the run in {out_dir}, which has {key}={saved.get(key)!r}; "
                f"--{arg.replace('_', '-')} asks for {cli[key]!r} (start a new run in another --out-dir)"
            )
    if cfg["epochs"] != saved["epochs"]:
        print(f"note: --epochs {cfg['epochs']} (was {saved['epochs']}): the lr schedule is recomputed", flush=True)
    return cfg
