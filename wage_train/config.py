"""The ``wage-train`` run configuration: defaults per data set, resolution from the parsed options, resume rules."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from wage_spec import FULL_PRECISION, MAX_LR, WAGEConfig
from wage_train.float_recipe import RECIPES, STANDARD_LR, default_factor
from wage_train.presets import apply_preset
from wage_train.safe_io import read_json_object

__all__ = [
    "DATASET_DEFAULTS",
    "MODEL_DEFAULTS",
    "MODES",
    "UsageError",
    "check_data_fingerprint",
    "float_lr",
    "resolve_config",
    "resume_config",
    "validate_config",
    "wage_config",
]

FLOAT_LR = 0.001  # x 64 / fan-in, the wage-sse float recipe's (docs/training.md); standard: float_recipe.STANDARD_LR
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
RUNTIME_ARGS = {"resume", "overwrite", "stop_after", "progress", "no_progress", "out_dir", "name", "torch_threads",
                "devices", "download", "print_config"}
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
    recipe = getattr(args, "float_recipe", None)
    if recipe is not None and not is_float:
        raise UsageError(f"--float-recipe {recipe} applies to the float baseline: give --float with it")
    recipe = (recipe or "standard") if is_float else None
    _check_integer(integer, is_float, "compare" if compare else (args.framework or "jax"))
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
        # The float layers' init: He's factor 2 in the standard recipe, WAGE's (the paper's 1.0) in wage-sse.
        "factor": args.factor if args.factor is not None else (
            default_factor(recipe, paper.factor) if is_float else paper.factor),
        "epochs": args.epochs if args.epochs is not None else d["epochs"],
        "batch_size": args.batch_size or 128,
        # --float without --lr: the standard recipe's lr of the model; wage-sse's depends on the image shape,
        # filled in once the data is loaded (float_recipe.default_lr).
        "lr": args.lr if args.lr is not None else (
            WAGE_LR if not is_float else (STANDARD_LR.get(model) if recipe == "standard" else None)),
        "schedule": args.schedule or "paper",
        "seed": args.seed if args.seed is not None else 0,
        "augment": args.augment if args.augment is not None else d["augment"],
        "flip": args.flip if getattr(args, "flip", None) is not None else d.get("flip", True),
        "preset": preset,
        "limit_batches": args.limit_batches,
        "eval_batch_size": args.eval_batch_size or 500,
        "validation": getattr(args, "validation", None),
        "float_recipe": recipe,  # None for WAGE
    }
    if cfg["model"] == "vgg7" and len(cfg["widths"]) != 3:
        raise UsageError(f"--widths takes the 3 VGG7 stage widths, got {cfg['widths']}")
    if cfg["model"] == "lenet5" and len(cfg["widths"]) != 2:
        raise UsageError(f"--widths takes the 2 LeNet-5 conv widths, got {cfg['widths']}")
    if not is_float and cfg["lr"] > MAX_LR:
        raise UsageError(f"--lr {cfg['lr']:g}: WAGE's update takes an lr in (0, 2^24] (wage_jax.QG)")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if cfg[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {cfg[key]}")
    if cfg["limit_batches"] is not None and cfg["limit_batches"] < 1:
        raise UsageError(f"--limit-batches must be >= 1, got {cfg['limit_batches']}")
    try:
        wage_config(cfg)  # validates bits and modes (docs/contract.md §4)
    except (TypeError, ValueError) as e:  # name the option, e.g. "--bits 1-8-8-8: bits_W must be ..."
        given = "-".join("fp" if b == FULL_PRECISION else str(b) for b in cfg["bits"])
        raise UsageError(f"--bits {given} / rounding modes: {e}") from None
    method = "float" if is_float else "wage" + "".join("fp" if b == FULL_PRECISION else str(b) for b in bits)
    cfg["name"] = args.name or f"{dataset}-{cfg['model']}-{method}-{cfg['framework']}-s{cfg['seed']}"
    cfg["out_dir"] = args.out_dir or str(Path("runs") / cfg["name"])
    return cfg


def _check_integer(integer: bool, is_float: bool, framework: str) -> None:
    if integer and (is_float or framework != "jax"):
        raise UsageError("--integer runs WAGE's JAX layers on integers; it does not apply to --float, --compare "
                         "or --framework torch")


SEED_MAX = 2**63 - 1  # jax.random.key takes a signed 64-bit seed


def validate_config(cfg: dict[str, Any], source: str) -> None:
    """Check every value of a saved configuration as the parser checks the options (:class:`UsageError`, one
    line naming ``source`` and the key): a hand-edited ``config.json`` is never trusted on ``--resume``."""
    import math

    from wage_train.data import DATASETS
    from wage_train.presets import PRESETS
    from wage_train.runspec import SCHEDULES

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    def ints(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(is_int(x) and x >= 1 for x in v)

    rules: dict[str, tuple[Any, str]] = {
        "framework": (lambda v: v in ("jax", "torch", "compare"), "jax, torch or compare"),
        "float": (lambda v: isinstance(v, bool), "true or false"),
        "integer": (lambda v: isinstance(v, bool), "true or false"),
        "dataset": (lambda v: v in DATASETS, ", ".join(DATASETS)),
        "data_dir": (lambda v: v is None or isinstance(v, str), "a path or null"),
        "model": (lambda v: v in ("mlp", "vgg7", "lenet5"), "mlp, vgg7 or lenet5"),
        "hidden": (ints, "a list of positive integers"),
        "widths": (ints, "a list of positive integers"),
        "vgg_hidden": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "bits": (lambda v: isinstance(v, list) and len(v) == 4 and all(is_int(x) for x in v), "4 integers"),
        "factor": (lambda v: is_num(v) and v > 0, "finite and > 0"),
        "epochs": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "batch_size": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "lr": (lambda v: is_num(v) and v > 0, "finite and > 0"),
        "schedule": (lambda v: v in SCHEDULES, ", ".join(SCHEDULES)),
        "seed": (lambda v: is_int(v) and 0 <= v <= SEED_MAX, "an integer in [0, 2^63-1]"),
        "augment": (lambda v: isinstance(v, bool), "true or false"),
        "flip": (lambda v: isinstance(v, bool), "true or false"),
        "preset": (lambda v: v is None or v in PRESETS, "null or " + ", ".join(PRESETS)),
        "limit_batches": (lambda v: v is None or (is_int(v) and v >= 1), "null or an integer >= 1"),
        "eval_batch_size": (lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "validation": (lambda v: v is None or (is_num(v) and 0 < v < 1), "null or a fraction in (0, 1)"),
        "float_recipe": (lambda v: v is None or v in RECIPES, "null or " + ", ".join(RECIPES)),
        **{m: (lambda v: v in ("nearest", "stochastic"), "nearest or stochastic") for m in MODES},
    }
    for key, (ok, what) in rules.items():
        if key in cfg and not ok(cfg[key]):
            raise UsageError(f"{source}: {key}={cfg[key]!r} is not valid (must be {what})")
    if cfg["model"] == "vgg7" and len(cfg["widths"]) != 3:
        raise UsageError(f"{source}: widths={cfg['widths']} must hold the 3 VGG7 stage widths")
    if cfg["model"] == "lenet5" and len(cfg["widths"]) != 2:
        raise UsageError(f"{source}: widths={cfg['widths']} must hold the 2 LeNet-5 conv widths")
    if cfg["framework"] == "compare" and cfg["float"]:
        raise UsageError(f"{source}: framework='compare' does not apply to float=true")
    if "float_recipe" in cfg and (cfg["float_recipe"] is None) == cfg["float"]:
        raise UsageError(f"{source}: float_recipe={cfg['float_recipe']!r} is not valid with float="
                         f"{str(cfg['float']).lower()} (a float run names its recipe, a WAGE run has null)")
    if not cfg["float"] and cfg["lr"] > MAX_LR:
        raise UsageError(f"{source}: lr={cfg['lr']!r} is not valid (WAGE's update takes an lr in (0, 2^24])")
    try:
        _check_integer(cfg["integer"], cfg["float"], cfg["framework"])
        wage_config(cfg)
    except (UsageError, ValueError, TypeError) as e:
        raise UsageError(f"{source}: {e}") from None


def float_lr(image_shape: tuple[int, ...]) -> float:
    """The ``wage-sse`` float recipe's default lr: ``FLOAT_LR * 64 / fan-in`` of the first layer (the flattened
    image). The ``standard`` recipe's is per model family (``wage_train.float_recipe.STANDARD_LR``).

    Plain SGD on the batch-summed squared error: the first layer's gradient grows with the input size, so the
    lr for 8x8 digits (0.001) is scaled by 64 / (H*W*C): 8.16e-5 for 28x28 MNIST, 2.08e-5 for 32x32x3. The
    constant was chosen on validation splits of the training sets, never the test set
    (docs/training.md gives the figures).
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
    if "float_recipe" not in saved and isinstance(saved.get("float"), bool):  # saved before the recipes: wage-sse
        saved["float_recipe"] = "wage-sse" if saved["float"] else None
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
    validate_config(saved, str(path))
    if cfg["integer"] != saved["integer"]:  # --integer on resume: the same refusals as for a new run
        _check_integer(cfg["integer"], cfg["float"], cfg["framework"])
    if cfg["epochs"] != saved["epochs"]:
        print(f"note: --epochs {cfg['epochs']} (was {saved['epochs']}): the lr schedule is recomputed", flush=True)
    return cfg


def check_data_fingerprint(cfg: dict[str, Any], fingerprint: dict[str, Any], out_dir: Path) -> None:
    """On ``--resume``: :class:`UsageError` unless the data loaded now is the data the run was trained on
    (``cfg["data_fingerprint"]``, recorded by the first invocation: counts, image shape, sha256 of the arrays).
    A run saved before fingerprints existed gets the current one recorded."""
    saved = cfg.get("data_fingerprint")
    if saved is None:
        print("note: this run recorded no data fingerprint; the current data's is recorded now", flush=True)
        return
    same = ("train", "eval", "eval_split", "image_shape", "sha256")  # not where the files were
    if all(saved.get(k) == fingerprint.get(k) for k in same):
        return
    diffs = [f"{k} {fingerprint.get(k)} (was {saved.get(k)})" for k in ("train", "eval", "image_shape")
             if fingerprint.get(k) != saved.get(k)] or ["the same counts and shape, different contents (sha256)"]
    raise UsageError(f"--resume: the data differs from the data the run in {out_dir} was trained on: "
                     f"{'; '.join(diffs)}; resume with the original data (--data-dir {saved.get('data_dir')}) "
                     "or start a new run in another --out-dir")
