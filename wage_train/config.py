"""The ``wage-train`` run configuration: one frozen, typed :class:`RunConfig`, its only validator, its JSON form.

The command line, ``--preset``, ``--print-config``/``config.json`` (:meth:`RunConfig.to_dict`) and ``--resume``
(:meth:`RunConfig.load`, :func:`resume_config`) all go through :class:`RunConfig`. A field left ``None`` takes
the preset's value, else the data set's or model's default.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from wage_data import DATASETS
from wage_spec import FULL_PRECISION, MAX_LR, WAGEConfig
from wage_train.float_recipe import HE_FACTOR, RECIPES, STANDARD_LR, STANDARD_LR_DECAY, float_lr
from wage_train.presets import PRESETS
from wage_train.runspec import SCHEDULES
from wage_train.safe_io import read_json_object

__all__ = ["DATASETS", "MODELS", "MODES", "SEED_MAX", "WAGE_LR", "ConfigError", "RunConfig", "UsageError",
           "check_data_fingerprint", "float_lr", "resume_config"]

WAGE_LR = 8.0  # the paper's
SEED_MAX = 2**63 - 1  # jax.random.key takes a signed 64-bit seed
MODELS = ("mlp", "vgg7", "lenet5")
MODES = ("W_mode", "A_mode", "G_mode", "E_mode")
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"model": "mlp", "hidden": (256,), "epochs": 60, "augment": False},
    "mnist": {"model": "mlp", "hidden": (1024,), "epochs": 100, "augment": False},
    "cifar10": {"model": "vgg7", "hidden": (1024,), "epochs": 300, "augment": True},
    "svhn": {"model": "vgg7", "hidden": (1024,), "epochs": 300, "augment": True, "flip": False},
}
# The paper's conv and dense widths of the conv models; the MLP keeps VGG7's.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {"vgg7": {"widths": (128, 256, 512), "vgg_hidden": 1024},
                                             "lenet5": {"widths": (32, 64), "vgg_hidden": 512}}
RESUME_OVERRIDABLE = frozenset({"epochs", "data_dir", "eval_batch_size", "integer"})


class UsageError(ValueError):
    """An inconsistent combination of options or settings; the message is the one line the CLI prints."""


class ConfigError(UsageError):
    """An invalid :class:`RunConfig` value, named as ``config.json`` has it; :attr:`option_message` names the
    command-line option."""

    def __init__(self, message: str, option_message: str) -> None:
        super().__init__(message)
        self.option_message = option_message


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _bits_text(bits: tuple[int, ...], sep: str) -> str:
    return sep.join("fp" if b == FULL_PRECISION else str(b) for b in bits)


_POSITIVE_INTS = (lambda v: isinstance(v, tuple) and bool(v) and all(_is_int(x) and x >= 1 for x in v),
                  "a list of positive integers")
_RULES: dict[str, tuple[Any, str]] = {  # field: (test of a resolved value, what it must be)
    **dict.fromkeys(("float", "integer", "augment", "flip"), (lambda v: isinstance(v, bool), "true or false")),
    **dict.fromkeys(("vgg_hidden", "epochs", "batch_size", "eval_batch_size"),
                    (lambda v: _is_int(v) and v >= 1, "an integer >= 1")),
    **dict.fromkeys(MODES, (lambda v: v in ("nearest", "stochastic"), "nearest or stochastic")),
    "hidden": _POSITIVE_INTS,
    "widths": _POSITIVE_INTS,
    "framework": (lambda v: v in ("jax", "torch", "compare"), "jax, torch or compare"),
    "dataset": (lambda v: v in DATASETS, ", ".join(DATASETS)),
    "data_dir": (lambda v: v is None or isinstance(v, str), "a path or null"),
    "model": (lambda v: v in MODELS, "mlp, vgg7 or lenet5"),
    "bits": (lambda v: isinstance(v, tuple) and len(v) == 4 and all(_is_int(x) for x in v), "4 integers"),
    "factor": (lambda v: _is_num(v) and v > 0, "finite and > 0"),
    "lr": (lambda v: v is None or (_is_num(v) and v > 0), "finite and > 0"),
    "schedule": (lambda v: v in SCHEDULES, ", ".join(SCHEDULES)),
    "seed": (lambda v: _is_int(v) and 0 <= v <= SEED_MAX, "an integer in [0, 2^63-1]"),
    "preset": (lambda v: v is None or v in PRESETS, "null or " + ", ".join(PRESETS)),
    "limit_batches": (lambda v: v is None or (_is_int(v) and v >= 1), "null or an integer >= 1"),
    "validation": (lambda v: v is None or (_is_num(v) and 0 < v < 1), "null or a fraction in (0, 1)"),
    "float_recipe": (lambda v: v is None or v in RECIPES, "null or " + ", ".join(RECIPES)),
    # An undecodable command-line byte arrives as a lone surrogate, which UTF-8 cannot encode.
    "name": (lambda v: isinstance(v, str) and bool(v) and not any("\ud800" <= ch <= "\udfff" for ch in v),
             "a non-empty string of valid UTF-8"),
    "out_dir": (lambda v: isinstance(v, str) and bool(v), "a non-empty path"),
    "data_fingerprint": (lambda v: v is None or isinstance(v, dict), "null or an object"),
    "scales": (lambda v: v is None or (isinstance(v, tuple) and all(_is_num(x) for x in v)), "null or numbers"),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a ``wage-train`` run (``config.json``, in field order).

    Fields not given are resolved by :meth:`__post_init__` (explicit value, else ``preset``'s, else the data
    set's or model's default), the one place every value is checked (:class:`UsageError` naming the field).
    ``RunConfig()``: WAGE 2-8-8-8, MLP 64-256-10 on the embedded digits, JAX, 60 epochs.
    """

    framework: str | None = None  # "jax" (default), "torch", or "compare" (both, from torch's init)
    float: bool = False  # the float baseline (no quantizers), trained by ``float_recipe``
    integer: bool = False  # JAX: WAGE layers on integer operands (wage_jax.integer), the same bits
    dataset: str | None = None  # one of DATASETS (default digits)
    data_dir: str | None = None  # where the data set's files are (None: digits, embedded)
    model: str | None = None  # "mlp", "vgg7" or "lenet5" (default: per data set)
    hidden: tuple[int, ...] | None = None  # MLP hidden widths (default 256; mnist, cifar10, svhn 1024)
    widths: tuple[int, ...] | None = None  # conv widths: VGG7's 3 stages (128, 256, 512), LeNet-5's 2 (32, 64)
    vgg_hidden: int | None = None  # dense width of VGG7 (1024) or LeNet-5 (512)
    bits: tuple[int, int, int, int] | None = None  # W-A-G-E bits (default 2-8-8-8; -1: full precision A/E)
    W_mode: str | None = None  # rounding of W, A, G, E: "nearest" or "stochastic"
    A_mode: str | None = None  # (default the paper's: W, A nearest, G, E stochastic; all nearest for compare)
    G_mode: str | None = None
    E_mode: str | None = None
    factor: float | None = None  # initializer variance factor (WAGE 1.0; float standard recipe: He's 2.0)
    epochs: int | None = None  # default: 60 digits, 100 mnist, 300 cifar10 and svhn
    batch_size: int | None = None  # default 128
    lr: float | None = None  # base lr (WAGE 8, float: STANDARD_LR); wage-sse: None until the data is loaded
    schedule: str | None = None  # one of runspec.SCHEDULES (default "paper")
    seed: int | None = None  # initial weights, batch order, random rounding (0 to 2^63-1, default 0)
    augment: bool | None = None  # pad-4 random crop (+ flip) (default on for cifar10 and svhn)
    flip: bool | None = None  # with augment, also flip horizontally (default on, off for svhn)
    preset: str | None = None  # one of presets.PRESETS: the paper's setups (explicit fields win)
    limit_batches: int | None = None  # at most this many training batches per epoch
    eval_batch_size: int | None = None  # default 500
    validation: float | None = None  # hold out this fraction of the training set and evaluate on it
    float_recipe: str | None = None  # float runs: "standard" (default) or "wage-sse"; WAGE runs: None
    name: str | None = None  # default "<dataset>-<model>-<method>-<framework>-s<seed>"
    out_dir: str | None = None  # default runs/<name>
    data_fingerprint: dict[str, Any] | None = None  # recorded when the data is loaded (data.data_fingerprint)
    scales: tuple[float, ...] | None = None  # WAGE: the init's per-layer scale (Eq. 7), recorded at the start

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for f in ("hidden", "widths", "bits", "scales"):  # JSON gives lists
            if isinstance(getattr(self, f), list):
                set_(self, f, tuple(getattr(self, f)))
        for key, value in _resolved_defaults(self).items():
            if getattr(self, key) is None:
                set_(self, key, value)
        for key in (f.name for f in fields(self)):  # in field order: the first invalid one is named
            (ok, what), value = _RULES[key], getattr(self, key)
            if not ok(value):
                given = ",".join(map(str, value)) if isinstance(value, tuple) else value
                raise ConfigError(f"{key}={_shown(value)} is not valid (must be {what})",
                                  f"--{key.replace('_', '-')} {given}: must be {what.removeprefix('null or ')}")
        kind = {"vgg7": "3 VGG7 stage", "lenet5": "2 LeNet-5 conv"}.get(self.model)
        if kind and len(self.widths) != int(kind[0]):
            raise ConfigError(f"widths={_shown(self.widths)} must hold the {kind} widths",
                              f"--widths takes the {kind} widths, got {_shown(self.widths)}")
        if self.framework == "compare" and self.float:
            raise ConfigError("framework='compare' does not apply to float=true",
                              "--compare checks WAGE's bit-exact JAX/torch parity; it does not apply to --float")
        if self.float_recipe is not None and not self.float:
            raise ConfigError(f"float_recipe={self.float_recipe!r} is not valid with float=false (a float run names "
                              "its recipe, a WAGE run has null)",
                              f"--float-recipe {self.float_recipe} applies to the float baseline: give --float with it")
        if self.integer and (self.float or self.framework != "jax"):
            raise UsageError("--integer runs WAGE's JAX layers on integers; it does not apply to --float, --compare "
                             "or --framework torch")
        if not self.float and self.lr > MAX_LR:
            why = "WAGE's update takes an lr in (0, 2^24] (wage_jax.QG)"
            raise ConfigError(f"lr={self.lr!r} is not valid ({why})", f"--lr {self.lr:g}: {why}")
        try:
            self.wage_config  # noqa: B018  (validates bits and modes: docs/contract.md §4)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bits={_shown(self.bits)} / rounding modes: {e}",
                              f"--bits {_bits_text(self.bits, '-')} / rounding modes: {e}") from None

    @property
    def wage_config(self) -> WAGEConfig:
        """The run's ``wage_spec.WAGEConfig`` (bits, modes, init factor)."""
        w, a, g, e = self.bits
        return WAGEConfig(bits_W=w, bits_A=a, bits_G=g, bits_E=e, factor=self.factor,
                          **{m: getattr(self, m) for m in MODES})

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes``, validated again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every field in order, lists for tuples, ``data_fingerprint``/``scales`` once recorded."""
        items = ((f.name, getattr(self, f.name)) for f in fields(self))
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in items
               if v is not None or k not in ("data_fingerprint", "scales")}
        if self.float_recipe == "standard":
            out["lr_decay"] = STANDARD_LR_DECAY  # so that a later recipe's decay cannot resume it
        return out

    @classmethod
    def from_dict(cls, saved: dict[str, Any], source: str) -> RunConfig:
        """The configuration a ``config.json`` object holds (from any wage-train version); :class:`UsageError`
        naming ``source`` for anything missing, unknown or invalid."""
        saved = dict(saved)
        saved.setdefault("validation", None)  # fields newer than some saved runs, as those runs had them
        saved.setdefault("integer", False)
        if "float_recipe" not in saved and isinstance(saved.get("float"), bool):  # saved before the recipes
            saved["float_recipe"] = "wage-sse" if saved["float"] else None
        decay = saved.pop("lr_decay", None)
        if saved.get("float") is True and saved.get("float_recipe") == "standard" and decay != STANDARD_LR_DECAY:
            raise UsageError(f"{source}: this standard-recipe float run trained with a constant lr (an earlier "
                             f"version); finish it with that version, or start again with --overwrite")
        names = [f.name for f in fields(cls)]
        optional = {"data_dir", "preset", "limit_batches", "validation", "float_recipe", "data_fingerprint",
                    "scales", "lr"}
        missing = [k for k in names if k not in optional and saved.get(k) is None]
        unknown = sorted(set(saved) - set(names))
        if missing or unknown:
            what = f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}"
            raise UsageError(f"{source}: not a wage-train config ({what})")
        try:
            cfg = cls(**saved)
        except UsageError as e:
            raise UsageError(f"{source}: {e}") from None
        for key in (k for k in ("float_recipe", "lr") if saved[k] is None and getattr(cfg, k) is not None):
            # A saved run records the values it trained with: a null is not "the default" here.
            raise UsageError(f"{source}: {key}=None is not valid with float={str(cfg.float).lower()} (a saved "
                             f"{'float' if cfg.float else 'WAGE'} run records its {key})")
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """The configuration in the ``config.json`` at ``path`` (see :meth:`from_dict`)."""
        return cls.from_dict(read_json_object(path), str(path))


def _shown(v: Any) -> str:
    return repr(list(v) if isinstance(v, tuple) else v)


def _resolved_defaults(c: RunConfig) -> dict[str, Any]:
    """The value of every field ``c`` leaves None: ``c.preset``'s, else the data set's or model's default."""
    preset = PRESETS.get(c.preset, {})
    drop = (set(MODES) if c.framework == "compare" else set()) | ({"lr", "factor"} if c.float else set())
    if c.model not in (None, preset.get("model")):
        drop |= {"widths", "vgg_hidden"}  # another model keeps its own sizes
    given = {f.name: getattr(c, f.name) for f in fields(c)}
    merged = {k: tuple(v) if isinstance(v, list) else v for k, v in preset.items()
              if k not in drop and given[k] is None}
    merged |= {k: v for k, v in given.items() if v is not None}
    dataset = merged.setdefault("dataset", "digits")
    if dataset not in DATASET_DEFAULTS:
        return merged  # the rules name it
    d = DATASET_DEFAULTS[dataset]
    framework = merged.setdefault("framework", "jax")
    model = merged.setdefault("model", d["model"])
    recipe = merged.setdefault("float_recipe", "standard" if c.float else None)
    paper = WAGEConfig()
    if not c.float:
        merged.setdefault("lr", WAGE_LR)
    elif recipe == "standard":
        merged.setdefault("lr", STANDARD_LR.get(model))
    defaults = {
        "hidden": d["hidden"], **MODEL_DEFAULTS.get(model, MODEL_DEFAULTS["vgg7"]),
        "bits": (paper.bits_W, paper.bits_A, paper.bits_G, paper.bits_E),
        **{m: "nearest" if framework == "compare" else getattr(paper, m) for m in MODES},
        "factor": HE_FACTOR if c.float and recipe == "standard" else paper.factor,  # wage-sse: WAGE's
        "epochs": d["epochs"], "batch_size": 128, "schedule": "paper", "seed": 0, "augment": d["augment"],
        "flip": d.get("flip", True), "eval_batch_size": 500,
    }
    merged = defaults | merged
    if isinstance(merged["bits"], tuple) and all(_is_int(b) for b in merged["bits"]):
        method = "float" if c.float else "wage" + _bits_text(merged["bits"], "")
        merged.setdefault("name", f"{dataset}-{model}-{method}-{framework}-s{merged['seed']}")
        merged.setdefault("out_dir", str(Path("runs") / merged["name"]))
    return merged


def resume_config(saved: RunConfig, given: RunConfig, explicit: set[str], out_dir: Path) -> RunConfig:
    """What ``--resume`` continues: ``saved``, with the :data:`RESUME_OVERRIDABLE` fields named in ``explicit``
    taken from ``given`` (the command line's configuration); any other explicit field must agree with ``saved``
    (:class:`UsageError` naming ``out_dir``)."""
    changes = {}
    for key in sorted(explicit):
        if key in RESUME_OVERRIDABLE:
            changes[key] = getattr(given, key)
        elif getattr(given, key) != getattr(saved, key):
            compare = given.framework == "compare" and key == "framework"
            option = "--compare" if compare else "--" + key.replace("_", "-")
            raise UsageError(
                f"--resume continues the run in {out_dir}, which has {key}={_shown(getattr(saved, key))}; "
                f"{option} asks for {_shown(getattr(given, key))} (start a new run in another --out-dir)"
            )
    cfg = saved.replace(**changes)
    if cfg.epochs != saved.epochs:
        print(f"note: --epochs {cfg.epochs} (was {saved.epochs}): the lr schedule is recomputed", flush=True)
    return cfg


def check_data_fingerprint(cfg: RunConfig, fingerprint: dict[str, Any], out_dir: Path) -> None:
    """On ``--resume``: :class:`UsageError` unless the data loaded now (``fingerprint``) is the data the run
    recorded; a run that recorded none gets the current one."""
    saved = cfg.data_fingerprint
    if saved is None:
        print("note: this run recorded no data fingerprint; the current data's is recorded now", flush=True)
        return
    if all(saved.get(k) == fingerprint.get(k) for k in ("train", "eval", "eval_split", "image_shape", "sha256")):
        return  # not where the files were
    diffs = [f"{k} {fingerprint.get(k)} (was {saved.get(k)})" for k in ("train", "eval", "image_shape")
             if fingerprint.get(k) != saved.get(k)] or ["the same counts and shape, different contents (sha256)"]
    raise UsageError(f"--resume: the data differs from the data the run in {out_dir} was trained on: "
                     f"{'; '.join(diffs)}; resume with the original data (--data-dir {saved.get('data_dir')}) "
                     "or start a new run in another --out-dir")
