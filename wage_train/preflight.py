"""What ``wage-train`` checks before it trains (the data against the model, memory, ``--factor``, the devices, the
torch backend, torch itself), and ``--print-config``. Each failure is one line naming the option or the file."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sys
from typing import NoReturn

import numpy as np

from wage_data import DataError, Dataset
from wage_train.config import RunConfig, UsageError
from wage_train.runspec import ModelSpec
from wage_train.safe_io import first_line

__all__ = ["LENET5_MIN_SIDE", "check_data", "check_devices", "check_model", "check_torch_backend", "print_config",
           "require_torch"]

LENET5_MIN_SIDE = 16  # two 5x5 VALID convolutions, each with a 2x2 pooling: ((side - 4) // 2 - 4) // 2 >= 1


def check_data(cfg: RunConfig, data: Dataset) -> None:
    """:class:`DataError` / :class:`UsageError` unless ``data`` has non-empty splits of one image shape with no zero
    dimension and, for LeNet-5, square images of at least 16x16."""
    where = f"--data-dir {cfg.data_dir}" if cfg.data_dir else f"--dataset {cfg.dataset}"
    split = data.eval_split
    for name, x in (("training", data.x_train), (split, data.x_test)):
        if len(x) == 0:
            raise DataError(f"{where}: the {name} split has 0 images")
    shape = tuple(data.x_train.shape[1:])
    if len(shape) != 3 or 0 in shape:
        raise DataError(f"{where}: images of shape {shape} (H, W, C) have a zero dimension")
    if tuple(data.x_test.shape[1:]) != shape:
        raise DataError(f"{where}: {split} images are {tuple(data.x_test.shape[1:])} but training images are "
                        f"{shape}; both splits must have one image shape")
    h, w, _ = shape
    if cfg.model == "lenet5" and (h != w or h < LENET5_MIN_SIDE):
        preset = f" (--preset {cfg.preset})" if cfg.preset else ""
        raise UsageError(f"--model lenet5{preset} needs square images of at least {LENET5_MIN_SIDE}x"
                         f"{LENET5_MIN_SIDE} (the paper's are 28x28), but {cfg.dataset} images are {h}x{w}; "
                         "use --model mlp or vgg7")


F32_MAX, F32_TINY = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)
COPIES_PER_WEIGHT = 8  # float32 arrays per weight (accumulator, QW, gradient, update, optimizer...): a lower bound


def check_model(cfg: RunConfig, spec: ModelSpec) -> None:
    """:class:`UsageError` when the weights' training state exceeds the physical memory, or ``--factor`` gives a
    layer an initializer limit ``sqrt(3 factor / fan_in)`` (Eq. 6) outside float32's range or (WAGE) a scale
    ``2^round(log2(W_m / limit))`` (Eq. 7) beyond ``2^126``, where every ``QW(w) / scale`` is 0."""
    if spec.kind == "mlp":  # each weight layer's output width, in forward order (as spec.fan_ins())
        outs = [*spec.hidden, spec.num_classes]
    else:  # VGG7 has two convolutions per stage
        outs = [*(w for w in spec.widths for _ in range(2 if spec.kind == "vgg7" else 1)), spec.vgg_hidden,
                spec.num_classes]
    fans = spec.fan_ins()
    count = sum(f * o for f, o in zip(fans, outs, strict=True))
    need = 4 * COPIES_PER_WEIGHT * count * (2 if cfg.framework == "compare" else 1)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > memory:
        option = "--hidden" if spec.kind == "mlp" else "--widths / --vgg-hidden"
        raise UsageError(f"{option}: {spec.describe()} has {count:,} weights, about {need / 2**30:,.0f} GiB of "
                         f"training state, more than this machine's {memory / 2**30:,.0f} GiB of memory; "
                         "choose smaller layers")
    wm = 1.5 / 2.0 ** (cfg.bits[0] - 1)  # W_m of Eq. 7
    for i, fan in enumerate(fans):
        limit = math.sqrt(3 * cfg.factor / fan)
        if limit > F32_MAX or limit < (F32_TINY if cfg.float else 0) or limit == 0:
            what = f"an initializer limit of {limit:.3g}, outside float32's range"
        elif not cfg.float and round(math.log2(wm / limit)) > 126:
            what = f"a scale of 2^{round(math.log2(wm / limit))}, so QW(w) / scale would be 0 for every weight"
        else:
            continue
        raise UsageError(f"--factor {cfg.factor:g}: layer {i + 1} (fan-in {fan}) would get {what}; choose a factor "
                         "nearer 1 (the paper's)")


def check_devices(cfg: RunConfig, devices: int | None) -> None:
    """:class:`UsageError` when JAX cannot start its backend, a ``--distributed`` batch does not split over the
    job's devices, or ``--devices`` asks for more JAX devices than this process has."""
    if cfg.framework == "torch":
        return
    import jax

    try:
        have = jax.local_device_count()
    except Exception as e:  # RuntimeError, or a plugin's bare AssertionError (JAX_PLATFORMS=cuda without a GPU)
        reason = first_line(e)[:160]
        raise UsageError(f"JAX cannot start a backend (JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS', '')!r}: "
                         f"{reason}); unset JAX_PLATFORMS to use the devices this machine has") from None
    if jax.process_count() > 1 and jax.device_count() != have * jax.process_count():
        # Each process places an equal share of every batch: on as many devices as every other process.
        raise UsageError(f"--distributed: every process of the job must have the same number of devices; this one "
                         f"has {have} of the job's {jax.device_count()} ({jax.process_count()} processes)")
    if jax.process_count() > 1 and cfg.batch_size % jax.device_count():
        raise UsageError(f"--batch-size {cfg.batch_size}: a --distributed job splits each batch over its "
                         f"{jax.device_count()} devices ({jax.process_count()} processes): give a multiple of "
                         f"{jax.device_count()}")
    if devices is not None and devices > have:
        kind = jax.local_devices()[0].platform
        raise UsageError(f"--devices {devices}: this process has {have} JAX device(s) ({kind}); give at most "
                         f"{have} (on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)")


def check_torch_backend(cfg: RunConfig) -> None:
    """:class:`UsageError` when a torch run would read a bad ``WAGE_TORCH_BACKEND``."""
    from_env = os.environ.get("WAGE_TORCH_BACKEND")
    if cfg.framework in ("torch", "compare") and from_env and from_env not in ("qtorch", "torch"):
        raise UsageError(f"the environment variable WAGE_TORCH_BACKEND={from_env!r} must be 'qtorch' or 'torch' "
                         "(or unset: qtorch)")


def require_torch(framework: str) -> None:
    """Import torch now, or raise :class:`UsageError` naming the ``framework``'s option and how to install it."""
    try:
        import torch  # noqa: F401
    except ImportError as e:  # also a torch whose own import fails (a missing shared library)
        option = "--compare" if framework == "compare" else f"--framework {framework}"
        reason = first_line(e)
        raise UsageError(f"{option} needs torch, which cannot be imported ({reason}): install the torch extra, pip "
                         "install \".[torch]\" from a clone (install your torch build first), or train with "
                         "--framework jax") from None


def print_config(cfg: RunConfig) -> NoReturn:
    """Print ``cfg`` as JSON, one key a line (``"bits": [2, 8, 8, 8]`` stays on its line); exit 0. ``lr`` is
    ``null`` for ``--float-recipe wage-sse`` without ``--lr``: its default depends on the data's image size."""
    rows = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in cfg.to_dict().items()]
    try:
        sys.stdout.write("{\n" + ",\n".join(rows) + "\n}\n")
        sys.stdout.flush()
    except (OSError, AttributeError, ValueError) as e:  # a full device, a closed pipe, no stdout at all
        if sys.stdout is not None:  # what could not be written is dropped, not flushed again at exit
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        why = f"{errno.errorcode.get(e.errno, e.errno)}: {e.strerror}" if isinstance(e, OSError) else "it is closed"
        raise UsageError(f"--print-config: cannot write to standard output ({why})") from None
    raise SystemExit(0)
