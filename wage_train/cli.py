"""Train a WAGE network (Wu et al., ICLR 2018) end to end, in JAX (default) or torch, or both side by side.

Default: WAGE 2-8-8-8 (W-A-G-E bits), an MLP 64-256-10 on scikit-learn's 8x8 digits (embedded, offline),
batch 128, lr 8 on the paper's schedule (8, then 1, then 1/8). Also MNIST (idx files) and CIFAR-10 (python
batches, with the paper's pad-4 crop and flip augmentation, VGG7) from ``--data-dir``.

Each step is WAGE's: forward with ``QW(w_acc)`` weights and ``Q_A`` activations, sum-of-squares loss,
backward with ``Q_E`` errors, then ``w_acc <- C(w_acc, bits_W) - QG(grad, bits_G, lr)`` (docs/contract.md §3).

Examples::

    wage-train                                 # digits, JAX, WAGE 2-8-8-8
    wage-train --framework torch --seed 1
    wage-train --float                         # float baseline (cross-entropy, momentum SGD), same MLP
    wage-train --float --float-recipe wage-sse # float, like for like: WAGE's SSE loss, plain SGD
    wage-train --compare                       # JAX and torch from one init and one batch order
    wage-train --dataset cifar10 --data-dir ~/data   # the paper's VGG7, 300 epochs
    wage-train --dataset cifar10 --data-dir ~/data --download   # fetch CIFAR-10 first (verified)
    wage-train --preset paper-cifar10 --print-config  # the resolved configuration as JSON
    wage-train --preset paper-svhn --data-dir ~/svhn # the paper's SVHN experiment as published
    wage-train --resume                        # continue the run in runs/<name>
    wage-train eval runs/<name>                # a saved run's test accuracy (wage_train.load_run)
    wage-train export runs/<name> --format onnx   # as an integer-only ONNX program (docs/deploying.md)

Outputs in ``--out-dir`` (default ``runs/<name>``): ``config.json``, ``metrics.csv`` and ``metrics.json``
(per epoch: loss, train/test accuracy, lr, time, images/s), ``plot.png`` (curves and a histogram of each
layer's quantized weights), ``weights.npz`` (the final accumulators), ``checkpoints/`` (the latest epoch;
``--resume`` continues bit-exactly).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wage_data import DATASETS, DataError, Dataset, data_fingerprint, ensure_dataset, hold_out_validation, load_dataset
from wage_spec import FULL_PRECISION
from wage_train import distributed
from wage_train.config import WAGE_LR, ConfigError, RunConfig, UsageError, check_data_fingerprint, resume_config
from wage_train.distributed import Job, digests
from wage_train.float_recipe import RECIPES, STANDARD_LR, default_lr
from wage_train.interrupt import CREATED, stop_before_training
from wage_train.presets import PRESETS
from wage_train.runspec import SCHEDULES
from wage_train.safe_io import first_line, read_json_object

__all__ = ["build_parser", "config_from_args", "main", "parse_bits", "run"]


def _ints(text: str) -> list[int]:
    """``"512,256"`` -> ``[512, 256]`` (RunConfig checks the values)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1, for the options that say where and how to run (RunConfig checks its own fields)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def out_dir_arg(text: str) -> str:
    """A directory that exists or can be created: not a file, its nearest existing ancestor a writable folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    try:
        os.path.abspath(text).encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        raise argparse.ArgumentTypeError(f"{shown!r} (or the working directory) is not valid UTF-8, which the "
                                         "checkpoint writer needs; choose a folder whose path is valid UTF-8") from None
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    probe = next(p for p in (path, *path.parents) if p.exists())
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        why = (f"{probe} is not a directory" if not probe.is_dir() else f"{probe}: EROFS: Read-only file system"
               if os.statvfs(probe).f_flag & os.ST_RDONLY else f"{probe}: EACCES: Permission denied")
        verb = "is not writable" if probe == path else "cannot be created"
        raise argparse.ArgumentTypeError(f"{text!r} {verb} ({why}); choose a writable folder")
    return str(path)


def parse_bits(text: str) -> list[int]:
    """``"2-8-8-8"`` -> ``[2, 8, 8, 8]`` (W-A-G-E); ``fp`` for A or E means full precision (-1)."""
    parts = text.replace(",", "-").split("-")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"--bits takes W-A-G-E, e.g. 2-8-8-8, got {text!r}")
    out = []
    for name, p in zip("WAGE", parts, strict=True):
        try:
            out.append(FULL_PRECISION if p.lower() in ("fp", "f", "full") and name in "AE" else int(p))
        except ValueError:
            raise argparse.ArgumentTypeError(f"--bits: {name} bits must be an int (or fp for A/E), got {p!r}") from None
    return out


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in one line (``wage-train: error: argument --lr: ...``), no usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``wage-train`` parser. Every option defaults to None: :class:`RunConfig` fills the preset's and the data
    set's defaults, and ``--resume`` can tell which options were given."""
    p = _Parser(prog="wage-train", description=__doc__.split("\n\n")[0], allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n\n".join(__doc__.split("\n\n")[1:]))

    def flag(group: Any, name: str, text: str) -> None:
        group.add_argument(name, action="store_true", default=None, help=text)

    which = p.add_argument_group("what to run")
    fw = which.add_mutually_exclusive_group()
    fw.add_argument("--framework", choices=("jax", "torch"), help="default: jax")
    flag(fw, "--compare", "train in JAX and torch from the same init and batches and report per epoch whether "
         "the trajectories are identical (all rounding modes nearest unless set explicitly)")
    flag(which, "--float", "float baseline: no quantizers, trained as --float-recipe says")
    flag(which, "--integer", "JAX: run the WAGE layers' matmuls and convolutions on int8/int16 operands with "
         "int32 sums (wage_jax.integer): the same bits as the float32 path, on integer units")
    which.add_argument("--preset", choices=tuple(PRESETS), help="the paper's published setup (model, data set, batch "
                       "128, lr 8 -> 1 at epoch 200 -> 1/8 at 250, 300 epochs, augmentation, 2-8-8-8 and rounding "
                       "modes, init factor 1); explicit options override it")
    data = p.add_argument_group("data and model")
    data.add_argument("--dataset", choices=DATASETS, help="default: digits (embedded)")
    data.add_argument("--data-dir", help="directory with the MNIST idx files, cifar-10-batches-py/ or the SVHN "
                      "*_32x32.mat files")
    flag(data, "--download", "fetch the data set into --data-dir from its canonical source if it is not there, "
         "verified against the published checksums (see also the wage-data command)")
    data.add_argument("--model", choices=("mlp", "vgg7", "lenet5"),
                      help="default: mlp (digits, mnist), vgg7 (cifar10, svhn)")
    data.add_argument("--validation", type=float, metavar="FRACTION", help="hold out this fraction of the training "
                      "set (fixed split) and evaluate on it instead of the test set, e.g. 0.2, for choosing "
                      "hyperparameters; the 'test' columns of the outputs then hold validation accuracy")
    data.add_argument("--hidden", type=_ints, help="MLP hidden widths, e.g. 256 or 512,256 (default 256; mnist 1024)")
    data.add_argument("--widths", type=_ints,
                      help="conv widths: VGG7's 3 stages (default 128,256,512), LeNet-5's 2 (default 32,64)")
    data.add_argument("--vgg-hidden", type=int, help="dense width of VGG7 (default 1024) or LeNet-5 (default 512)")
    for name, help_ in (("--augment", "pad-4 random crop + horizontal flip (default: on for cifar10 and svhn)"),
                        ("--flip", "with --augment, also flip horizontally (default: on, off for svhn as the authors "
                         "did)")):
        data.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=help_)
    q = p.add_argument_group("WAGE quantization")
    q.add_argument("--bits", type=parse_bits, help="W-A-G-E bits (default 2-8-8-8; fp = full precision for A/E)")
    for m, default in zip("WAGE", ("nearest", "nearest", "stochastic", "stochastic"), strict=True):
        q.add_argument(f"--{m}-mode", choices=("nearest", "stochastic"), help=f"rounding of {m} (default {default})")
    q.add_argument("--factor", type=float, help="initializer variance factor (default 1.0, the paper's)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, help="default: 60 (digits), 100 (mnist), 300 (cifar10)")
    t.add_argument("--batch-size", type=int, help="default 128")
    t.add_argument("--float-recipe", choices=RECIPES, help="how --float trains: standard (default): softmax "
                   "cross-entropy, SGD momentum 0.9 on the gradient clipped to norm 1, He init, lr per model "
                   "cosine-annealed to 0 over the run; wage-sse: WAGE's SSE loss, plain SGD, WAGE's init factor, "
                   "lr 0.001 x 64 / input size (docs/training.md)")
    t.add_argument("--lr", type=float, help=f"base learning rate (default {WAGE_LR:g} for WAGE; for --float "
                   + ", ".join(f"{lr:g} ({model})" for model, lr in STANDARD_LR.items())
                   + "; for --float-recipe wage-sse 0.001 x 64 / input size)")
    t.add_argument("--schedule", choices=SCHEDULES, help="paper (default): lr x1 for 2/3 of the epochs, x1/8 for "
                   "1/6, x1/64 for 1/6; paper-epochs: x1 before epoch 200, x1/8 before 250, x1/64 after (the "
                   "authors' absolute epochs); constant: lr. Not for the standard --float recipe, which anneals its lr")
    t.add_argument("--seed", type=int, help="initial weights, batch order and random rounding (0 to 2^63-1, default 0)")
    t.add_argument("--limit-batches", type=int, help="at most this many training batches per epoch (quick checks)")
    t.add_argument("--eval-batch-size", type=int, help="default 500")
    r = p.add_argument_group("output")
    r.add_argument("--out-dir", type=out_dir_arg, help="default runs/<name>")
    r.add_argument("--name", help="run name (default from data set, model, bits, framework and seed)")
    flag(r, "--resume", "continue the run saved in --out-dir")
    flag(r, "--overwrite", "start a new run in an --out-dir that holds one: the old run is moved aside to "
         "<out-dir>.old-<time> once the new run has its first good checkpoint (never deleted)")
    r.add_argument("--stop-after", type=positive_int, help="stop after this many epochs of this invocation (resume "
                   "later)")
    bar = r.add_mutually_exclusive_group()
    flag(bar, "--progress", "show the progress bar also when stderr is not a terminal (default: only on a "
         "terminal; a log file then gets one line per epoch)")
    flag(bar, "--no-progress", "no progress bar")
    flag(r, "--print-config", "print the resolved configuration (preset and defaults applied) as JSON and exit: "
         "no data is read, nothing is written")
    r.add_argument("--devices", type=positive_int, help="JAX: train data-parallel over this many local devices "
                   "(default: all; the batch size must divide by it, else one device is used). The result is "
                   "bit-identical for every device count.")
    r.add_argument("--torch-threads", type=positive_int, help="torch intra-op threads (default: 1 for digits, whose "
                   "steps are too small to split across threads, and torch's default otherwise)")
    d = p.add_argument_group("several processes (docs/parallel.md)")
    flag(d, "--distributed", "one process of a multi-process JAX job (jax.distributed): run the same command in "
         "every process; the coordinator, process count and id come from the options below, their environment "
         "variables, or the cluster (SLURM, Open MPI, Kubernetes, cloud TPU). Bit-identical to one process")
    d.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (JAX_COORDINATOR_ADDRESS)")
    d.add_argument("--num-processes", type=positive_int, help="the processes in the job (JAX_NUM_PROCESSES)")
    d.add_argument("--process-id", type=int, help="this process's index, 0 to N-1 (JAX_PROCESS_ID)")
    d.add_argument("--distributed-timeout", type=positive_int, metavar="S", help="seconds to wait for every process "
                   "to join, and for a silent process before the job stops (default 120)")
    return p


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, train, write the outputs; returns the run's summary (as in ``metrics.json``); ``eval
    RUN_DIR ...`` and ``export RUN_DIR ...`` run :func:`_eval` and :func:`_export` instead. Exits with one line on
    stderr: status 2 for bad options, data, checkpoints or ``--out-dir`` or a file-system fault, 1 when training
    diverges, 130 on SIGINT/SIGTERM."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["eval"], ["export"]):
        return (_eval if argv[0] == "eval" else _export)(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(parser, args, locks := [])
    finally:
        for lock in reversed(locks):
            lock.release()


# Where and how to run, not what to train: not RunConfig fields.
_NOT_CONFIG = {"compare", "resume", "overwrite", "stop_after", "progress", "no_progress", "torch_threads", "devices",
               "download", "print_config", "distributed", "coordinator", "num_processes", "process_id",
               "distributed_timeout"}


def _given(args: argparse.Namespace) -> dict[str, Any]:
    given = {k: v for k, v in vars(args).items() if v is not None and k not in _NOT_CONFIG}
    return given | ({"framework": "compare"} if args.compare else {})


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The :class:`RunConfig` of the options given (None: not given), ``--compare`` as ``framework="compare"``."""
    try:
        return RunConfig(**_given(args))
    except ConfigError as e:
        raise UsageError(e.option_message) from None


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, locks: list) -> dict[str, Any]:
    from wage_train import preflight
    from wage_train.run_dir import RunLock, mark_staging

    staging = cfg = None
    created: Path | None = None
    try:
        if args.resume and args.overwrite:
            raise UsageError("--resume and --overwrite exclude each other")
        given = config_from_args(args)
        out_dir = Path(given.out_dir)
        if args.print_config:  # before anything is created
            preflight.print_config(_resumed(given, args, out_dir))
        if not args.resume and given.framework != "jax":
            preflight.require_torch(given.framework)
        job = _join(args, given)
        # Each block ends when every process has run it: process 0 claims the folder and fetches the data, then
        # every process loads the data and checks the run.
        with job.together() as box:
            if job.main:
                created, staging = _claim_out_dir(out_dir, args, locks)
                CREATED.extend(p for p in (created,) if p is not None)
                cfg = _resumed(given, args, out_dir)
                if cfg.data_dir is not None:  # check --data-dir's files, fetch the missing ones
                    for line in ensure_dataset(cfg.dataset, cfg.data_dir, download=bool(args.download),
                                               extra=cfg.preset == "paper-svhn", progress=sys.stderr.isatty()):
                        print(line, flush=True)
                box.share = {"staging": staging and str(staging)}
        staging = Path(box.share["staging"]) if box.share.get("staging") else None
        with job.together() as box:
            if not out_dir.is_dir():  # process 0 has created it: not on storage this process sees
                raise UsageError(f"--out-dir {out_dir} is not visible from this process: a --distributed job needs "
                                 "an --out-dir on storage every process sees")
            if cfg is None:  # the other processes read the run only once process 0 has claimed it
                cfg = _resumed(given, args, out_dir)
            if cfg.framework != "jax":
                if job.num_processes > 1:
                    raise UsageError(f"--distributed trains with JAX; the run in {out_dir} is a {cfg.framework} run")
                preflight.require_torch(cfg.framework)  # a resumed run's framework is known only now
            cfg, data = _load_data(cfg, args, out_dir)
            preflight.check_devices(cfg, args.devices)
            preflight.check_torch_backend(cfg)
            box.check = digests({**cfg.to_dict(), "resume": args.resume, "out_dir": str(out_dir.resolve())})
            if staging is not None and job.main:
                try:
                    mark_staging(staging)
                    CREATED.append(staging)
                except OSError as e:
                    raise UsageError(f"--overwrite: {staging} cannot be created "
                                     f"({e.strerror or type(e).__name__})") from None
                locks.append(RunLock(staging).acquire())
    except (UsageError, DataError, ValueError) as e:
        for lock in reversed(locks):
            lock.release()
        locks.clear()
        if created is not None:
            with contextlib.suppress(OSError):
                created.rmdir()  # only when nothing went into it
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    if cfg.framework != "jax" and (threads := args.torch_threads or (1 if cfg.dataset == "digits" else None)):
        import torch

        torch.set_num_threads(threads)
    return _train(cfg, data, out_dir, args, staging, locks)


def _join(args: argparse.Namespace, given: RunConfig) -> Job:
    """``--distributed``: join the job (the other processes' stdout discarded); else the one-process job."""
    explicit = [o for o in ("coordinator", "num_processes", "process_id", "distributed_timeout")
                if getattr(args, o) is not None]
    if not args.distributed:
        if explicit:
            raise UsageError(f"--{explicit[0].replace('_', '-')} applies to --distributed runs: give --distributed")
        return distributed.job()
    if given.framework != "jax":
        raise UsageError("--distributed trains with JAX; it does not apply to --framework torch or --compare")
    if args.devices is not None:
        raise UsageError("--devices does not apply to --distributed: the job trains on every device of every process")
    job = distributed.join(args.coordinator, args.num_processes, args.process_id,
                           args.distributed_timeout or distributed.TIMEOUT_S)
    if not job.main:
        sys.stdout.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return job


def _resumed(given: RunConfig, args: argparse.Namespace, out_dir: Path) -> RunConfig:
    """``--resume``: the saved run's configuration, checked against the options given; else ``given``."""
    if not args.resume:
        return given
    path = out_dir / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume: no run to continue in {out_dir} ({path.name} not found)")
    return resume_config(RunConfig.load(path), given, set(_given(args)) - {"name", "out_dir"}, out_dir)


def _claim_out_dir(out_dir: Path, args: argparse.Namespace, locks: list) -> tuple[Path | None, Path | None]:
    """Create and lock ``out_dir``; returns ``(out_dir if this call created it, the --overwrite staging folder)``."""
    from wage_train.run_dir import RunLock, check_out_dir, run_kind, staging_dir, tidy_staging

    check_out_dir(out_dir, overwrite=bool(args.overwrite))
    created = None
    if not out_dir.is_dir():
        try:
            out_dir.mkdir(parents=True)
            created = out_dir
        except FileExistsError:
            pass
        except OSError as e:
            raise UsageError(f"--out-dir {out_dir} cannot be created ({e.strerror or type(e).__name__})") from None
    # Held for the run's life: a second run in this folder is refused, never mixed with this one.
    locks.append(RunLock(out_dir).acquire())
    locks[-1] = tidy_staging(out_dir, locks[-1], resume=bool(args.resume), log=lambda m: print(m, flush=True))
    kind = run_kind(out_dir)
    if args.resume or kind == "none":
        return created, None
    if kind == "foreign":
        raise UsageError(f"--out-dir {out_dir} holds files a run would overwrite (config.json, metrics.*, "
                         "checkpoints) but no wage-train run; choose another --out-dir")
    if not args.overwrite:
        raise UsageError(f"--out-dir {out_dir} already holds a run; continue it with --resume, choose a new "
                         "--out-dir, or give --overwrite (the old run is moved aside, not deleted)")
    return created, staging_dir(out_dir)


def _load_data(cfg: RunConfig, args: argparse.Namespace, out_dir: Path) -> tuple[RunConfig, Dataset]:
    """Load and check the data; returns it and ``cfg`` with its fingerprint and data-dependent lr recorded."""
    from wage_train import preflight
    from wage_train.runner import model_spec

    data = load_dataset(cfg.dataset, cfg.data_dir)
    if cfg.validation:
        data = hold_out_validation(data, cfg.validation)
    preflight.check_data(cfg, data)
    preflight.check_model(cfg, model_spec(cfg, data))
    fingerprint = {**data_fingerprint(data), "data_dir": cfg.data_dir}
    if args.resume:
        check_data_fingerprint(cfg, fingerprint, out_dir)
    lr = cfg.lr if cfg.lr is not None else default_lr(cfg.float_recipe, cfg.model, data.image_shape)
    return cfg.replace(data_fingerprint=fingerprint, lr=lr), data


def _train(cfg: RunConfig, data: Dataset, out_dir: Path, args: argparse.Namespace, staging: Path | None,
           locks: list) -> dict[str, Any]:
    from wage_train.checkpoints import NonFiniteError, file_system_fault
    from wage_train.loop import DivergedError, ResourceError, RunInterruptedError, StopSignals, train

    stop = StopSignals(exiting=_IN_MAIN)
    try:
        CREATED.clear()  # from here on StopSignals answers a signal, after a whole step
        with stop:
            return train(cfg, data, out_dir, resume=bool(args.resume), stop_after=args.stop_after,
                         progress=_show_progress(args), devices=args.devices, staging=staging, stop=stop,
                         locks=(*locks, None, None)[:2])
    except (RunInterruptedError, DivergedError, NonFiniteError, DataError, UsageError, ResourceError) as e:
        diverged = isinstance(e, DivergedError | NonFiniteError)
        _exit_line(130 if isinstance(e, RunInterruptedError) else 1 if diverged else 2, str(e))
    except MemoryError:
        _exit_line(2, "out of memory; the last completed checkpoint is kept: choose a smaller model or batch, then "
                      "continue with --resume")
    except OSError as e:  # an output file (config, metrics, plot, weights) cannot be written
        where = e.filename or out_dir
        _exit_line(2, f"cannot write {where} ({file_system_fault(e)}); the last completed checkpoint is kept: "
                      "free space or fix the folder's permissions, then continue with --resume")
    except KeyboardInterrupt:
        _exit_line(130, "interrupted before training started; nothing to resume from this invocation")
    except Exception as e:  # in a job, a collective fails when another process died: end at once, in one line
        if distributed.job().num_processes == 1:
            raise
        if stop.signal_name:  # the whole job was signalled, and another process stopped first
            _exit_line(130, f"{stop.signal_name}: interrupted; the last completed checkpoint is intact: continue "
                            "the run with the same command and --resume")
        cause = first_line(e).rsplit("Error dispatching computation: ", 1)[-1][:200]
        _exit_line(2, f"process {distributed.job().process_id}: {type(e).__name__} ({cause}): another process of "
                      "this job has probably stopped; the last completed checkpoint is intact: continue the run "
                      "with --resume")


def _eval(argv: Sequence[str]) -> dict[str, Any]:
    """``wage-train eval RUN_DIR``: print a saved run's accuracy (and, on its own data, the one it recorded);
    returns :func:`wage_train.saved_run.evaluate`'s dict."""
    from wage_train.saved_run import evaluate, load_run

    p = _Parser(prog="wage-train eval", description="The test accuracy of a saved run (bit for bit the run's own "
                "on its data).")
    p.add_argument("run_dir", help="the run's --out-dir (config.json and weights.npz)")
    p.add_argument("--dataset", choices=DATASETS, help="evaluate on this data set's test split (default the run's)")
    p.add_argument("--data-dir", help="where the data set's files are (default the run's)")
    p.add_argument("--framework", choices=("jax", "torch"), help="a --compare run's weights to use (default jax)")
    args = p.parse_args(argv)
    try:
        run = load_run(args.run_dir, args.framework)
        result = evaluate(run, args.dataset, args.data_dir)
    except (DataError, UsageError) as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    line = (f"{run.framework}: {result['split']} accuracy {100 * result['test_acc']:.2f}% "
            f"({result['correct']}/{result['examples']} images of {result['dataset']})")
    metrics = Path(args.run_dir) / "metrics.json"
    if args.dataset in (None, run.config.dataset) and args.data_dir is None and metrics.is_file():
        recorded = read_json_object(metrics)["summary"]["frameworks"][run.framework]["final_test_acc"]
        same = "the same bits" if recorded == result["test_acc"] else "DIFFERENT"
        line += f"; the run recorded {100 * recorded:.2f}% ({same})"
    print(line, flush=True)
    return result


def _export(argv: Sequence[str]) -> dict[str, Any]:
    """``wage-train export RUN_DIR --format F``: a saved JAX WAGE run as an integer-only program, checked on its
    evaluation images (``wage_jax.export.export_run``); returns ``{"path", "format"}``."""
    from wage_train.saved_run import evaluation_data, load_run

    p = _Parser(prog="wage-train export", description="A saved WAGE run as an integer-only ONNX or StableHLO "
                "program (docs/deploying.md).")
    p.add_argument("run_dir", help="the run's --out-dir (config.json and weights.npz)")
    p.add_argument("--format", required=True, choices=("onnx", "stablehlo"))
    p.add_argument("--out", help="the file to write (default RUN_DIR/model.onnx or RUN_DIR/model.stablehlo)")
    p.add_argument("--data-dir", help="where the run's data set is (default the run's)")
    args = p.parse_args(argv)
    out = Path(args.out or Path(args.run_dir) / f"model.{args.format}")
    try:
        from wage_jax.export import export_run

        run = load_run(args.run_dir)
        if run.framework != "jax" or run.wage is None:
            raise UsageError(f"{args.run_dir}: export needs a JAX WAGE run, not a "
                             f"{'float' if run.wage is None else run.framework} one")
        images = run.preprocess(evaluation_data(run, data_dir=args.data_dir).x_test)
        export_run(run, args.format, out, images=images)
    except ImportError as e:
        p.exit(2, f"{p.prog}: error: --format {args.format} needs {e.name or 'onnx'}: "
               "pip install 'wage-jax[export]'\n")
    except (DataError, UsageError, ValueError, OSError) as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    print(f"wrote {out} ({args.format}: {run.config.model} of {args.run_dir} on integers)", flush=True)
    return {"path": str(out), "format": args.format}


def _show_progress(args: argparse.Namespace) -> bool:
    """As asked, else only when stderr is a terminal (a file would get every frame)."""
    if not distributed.job().main:
        return False
    return bool(args.progress) if args.progress or args.no_progress else sys.stderr.isatty()


_IN_MAIN = False  # set by main(): run() called in another program's process leaves its signal handlers alone


def _set_signals(handler: Any) -> None:
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handler)


def _exit_line(status: int, message: str) -> None:
    if _IN_MAIN:  # the process is ending with its one line: a further signal changes nothing
        _set_signals(signal.SIG_IGN)
    sys.stdout.flush()
    sys.stderr.write(f"wage-train: {'error: ' if status != 130 else ''}{message}\n")
    sys.stderr.flush()
    if distributed.job().num_processes > 1:  # JAX's orderly shutdown would wait for the others in a collective
        os._exit(status)
    raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``wage-train``, ``python -m wage_train``)."""
    # Before training (which StopSignals covers) a signal ends the process at once in one line: a
    # KeyboardInterrupt could land in a C extension's import (a crash) or a garbage-collector callback (lost).
    _set_signals(stop_before_training)
    global _IN_MAIN
    _IN_MAIN = True
    try:
        run(argv)
    except KeyboardInterrupt:
        _exit_line(130, "interrupted before training started; nothing to resume from this invocation")
    finally:
        _IN_MAIN = False
    _set_signals(signal.SIG_IGN)  # the run is complete: no silent status 143 while the interpreter shuts down
