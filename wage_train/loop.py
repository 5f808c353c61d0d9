"""The ``wage-train`` run loop: build the runners, train epoch by epoch, evaluate, checkpoint, report."""

from __future__ import annotations

import functools
import math
import operator
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wage_data import Dataset, augment_crop, to_inputs
from wage_data.files import fault
from wage_train.checkpoints import file_system_fault, non_finite_weights, restore_checkpoint, save_checkpoint
from wage_train.compare import Comparison, format_compare
from wage_train.compare import summary as compare_summary
from wage_train.compare import verdict as compare_verdict
from wage_train.config import MODES, RunConfig, UsageError
from wage_train.distributed import Job, job
from wage_train.float_recipe import describe as describe_recipe
from wage_train.prefetch import Prefetcher
from wage_train.reporting import format_header, format_row, plot_run, write_csv, write_json
from wage_train.runner import Runner, make_runners, model_inputs, model_spec, training_lrs
from wage_train.runspec import LrSchedule, ModelSpec
from wage_train.safe_io import atomic_write

__all__ = ["FINAL_OUTPUTS", "DivergedError", "ResourceError", "RunInterruptedError", "StopSignals", "train"]

FINAL_OUTPUTS = ("metrics.json", "metrics.csv", "weights.npz", "plot.png")  # written when a run completes


class DivergedError(RuntimeError):
    """The loss or a weight became non-finite (the message is the CLI's one line)."""


class ResourceError(RuntimeError):
    """Memory or the file system failed while the run was doing what the message names."""


class RunInterruptedError(RuntimeError):
    """SIGINT or SIGTERM arrived; training stopped after the last completed checkpoint."""


class StopSignals:
    """SIGINT/SIGTERM set :attr:`signal_name` (checked after each step) instead of raising, so a step or a
    checkpoint is never cut in half; a second signal exits at once (status 130)."""

    def __init__(self, exiting: bool = False) -> None:
        self.signal_name: str | None = None
        self.exiting = exiting  # the process ends when the block raises: further signals are then ignored
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:
            sys.stderr.write("wage-train: second signal: stopping now (the last completed checkpoint is intact)\n")
            sys.stderr.flush()
            os._exit(130)
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():  # leaving with an error, the command exits: a signal now is ignored
            signal.signal(sig, signal.SIG_IGN if exc[0] is not None and self.exiting else old)


@dataclass
class _Run:
    """One invocation's state, shared by the pieces of :func:`train`."""

    cfg: RunConfig
    data: Dataset
    spec: ModelSpec
    x_train: np.ndarray  # as the model takes them (model_inputs)
    test_inputs: np.ndarray  # float32 model inputs of the evaluation split
    lrs: LrSchedule
    steps: int  # per epoch
    runners: list[Runner]
    out_dir: Path  # where outputs go now (the staging folder until an --overwrite run's first checkpoint)
    final_dir: Path
    staging: Path | None
    locks: tuple[Any, Any]
    rng: np.random.Generator  # the batch order's and augmentation's, saved with every checkpoint
    job: Job = field(default_factory=job)  # this process's part (wage_train.distributed): its rows, who writes
    history: list[dict[str, Any]] = field(default_factory=list)
    comparison: Comparison | None = None
    start: int = 0  # epochs done before this invocation
    step_lr: Callable[[Any], Any] | None = None  # the lr of each step, when it replaces ``lrs`` (annealed_lr)

    @property
    def ckpt_root(self) -> Path:
        return self.out_dir / "checkpoints"

    @property
    def compare_records(self) -> list[dict[str, Any]]:
        return self.comparison.records if self.comparison is not None else []

    def epoch_lr(self, epoch: int) -> float:  # of the epoch's first step
        return self.lrs[epoch] if self.step_lr is None else float(self.step_lr(epoch * self.steps))

    @property
    def method(self) -> str:
        c = self.cfg
        if c.float:
            return f"float ({describe_recipe(c.float_recipe or 'wage-sse')})"
        return "WAGE {}-{}-{}-{} (W {}, A {}, G {}, E {})".format(*c.bits, *(getattr(c, m) for m in MODES))


def train(cfg: RunConfig, data: Dataset, out_dir: Path, *, resume: bool, stop_after: int | None,
          progress: bool, devices: int | None = None, staging: Path | None = None,
          stop: StopSignals | None = None, locks: tuple[Any, Any] = (None, None)) -> dict[str, Any]:
    """Train ``cfg`` on ``data`` into ``out_dir``; returns the summary written to ``metrics.json``. Raises
    :class:`DivergedError` (metrics and the last good checkpoint kept), :class:`RunInterruptedError` (``stop``
    saw a signal) or ``DataError`` (``resume`` and no checkpoint verifies)."""
    run = _build(cfg, data, out_dir, devices, staging, locks)
    _start(run, resume)
    wall0 = time.perf_counter()
    for done_this_run, epoch in enumerate(range(run.start, run.cfg.epochs), start=1):
        totals, wall, own_time = _train_epoch(run, epoch, progress, stop)
        _end_epoch(run, epoch, totals, wall, own_time)
        if stop is not None and stop.signal_name:
            raise RunInterruptedError(f"{stop.signal_name}: interrupted after epoch {epoch + 1} (checkpoint saved); "
                                      f"{start_note(run.history, run.ckpt_root, staging is not None)}")
        if stop_after is not None and done_this_run >= stop_after and epoch + 1 < run.cfg.epochs:
            print(f"stopped after {done_this_run} epoch(s) (--stop-after); continue with "
                  f"wage-train --resume --out-dir {shlex.quote(str(run.final_dir))}", flush=True)
            break
    return _finish(run, wall0)


def _build(cfg: RunConfig, data: Dataset, out_dir: Path, devices: int | None, staging: Path | None,
           locks: tuple[Any, Any]) -> _Run:
    x_train = model_inputs(cfg, data.x_train)
    spec = model_spec(cfg, data)
    steps = min(len(x_train) // cfg.batch_size, cfg.limit_batches or len(x_train))
    if steps == 0:
        raise UsageError(f"--batch-size {cfg.batch_size} exceeds the {len(x_train)} training examples")
    lrs = LrSchedule(cfg.lr, cfg.epochs, cfg.schedule)  # lazy: no per-epoch list (any --epochs)
    trained = training_lrs(cfg, lrs, steps)
    runners = make_runners(cfg, spec, trained, steps, devices,  # no evaluation batch larger than the set
                           eval_batch_size=min(cfg.eval_batch_size, len(data.x_test)))
    if not cfg.float:
        cfg = cfg.replace(scales=tuple(spec.weight_scales(cfg.bits[0], cfg.factor)))  # per layer, forward order
    return _Run(cfg=cfg, data=data, spec=spec, x_train=x_train,
                test_inputs=to_inputs(model_inputs(cfg, data.x_test), data.max_value), lrs=lrs, steps=steps,
                runners=runners, out_dir=out_dir, final_dir=out_dir, staging=staging, locks=locks,
                rng=np.random.default_rng(cfg.seed), step_lr=None if trained is lrs else trained,
                comparison=Comparison(cfg.bits[0], []) if len(runners) == 2 else None)


def _start(run: _Run, resume: bool) -> None:
    """Restore the checkpoint (``resume``) or prepare the output folder; print the banner."""
    cfg = run.cfg
    if resume:
        ckpt, state = restore_checkpoint(run.ckpt_root, run.runners, warn=lambda m: print(m, flush=True))
        try:
            run.rng.bit_generator.state = state["data_rng"]
        except (TypeError, ValueError, KeyError) as e:
            raise fault(ckpt / "state", f"bad data_rng state ({type(e).__name__})") from None
        run.history, run.start = state["history"], state["epoch"]
        if run.comparison is not None:
            run.comparison.records = state["compare"]
        missing = [n for n in FINAL_OUTPUTS if not (run.out_dir / n).is_file()]
        if run.start == cfg.epochs and missing:  # finished, but a fault (a full disk) kept outputs from being written
            print(f"note: the run in {run.out_dir} is complete; writing its missing outputs ({', '.join(missing)})",
                  flush=True)
        elif run.start >= cfg.epochs:
            raise UsageError(f"--epochs {cfg.epochs}: the run in {run.out_dir} already has {run.start} "
                             f"epoch(s) done; give --epochs > {run.start} to continue it")
        print(f"resumed from {ckpt} (epoch {run.start} done)", flush=True)
    elif run.staging is not None:  # --overwrite: the old run is moved aside after the first good checkpoint
        run.out_dir = run.staging
    if run.job.main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
    split = run.data.eval_split
    split = split if split == "test" else f"{split} (held out of training; test set unused)"
    augment = "" if not cfg.augment else " (augmented: crop + flip)" if cfg.flip else " (augmented: crop)"
    lr = (f"{cfg.lr:g} cosine-annealed to 0 over the run (per step)" if run.step_lr is not None
          else f"{run.lrs.describe()} ({cfg.schedule} schedule)")
    print(f"{'preset ' + cfg.preset + ' | ' if cfg.preset else ''}{run.method} | {run.spec.describe()} | "
          f"{cfg.dataset}: {len(run.x_train)} train / {len(run.test_inputs)} {split}{augment} | "
          f"{' + '.join(r.framework for r in run.runners)} | {cfg.epochs} epochs x {run.steps} steps of "
          f"{cfg.batch_size}, lr {lr} | seed {cfg.seed} | {run.final_dir}", flush=True)
    if cfg.framework == "compare" and not cfg.float and "stochastic" in (getattr(cfg, m) for m in MODES):
        print("note: stochastic rounding draws different random numbers in JAX and torch: the trajectories "
              "are expected to diverge (use nearest modes for a bit-exact comparison)", flush=True)
    print(format_header(), flush=True)


def _make_batch(run: _Run, b: int, order: np.ndarray) -> dict[str, Any]:
    """Batch ``b`` of ``order``, placed for each runner, on the producer thread (``run.rng``'s only user while an
    epoch trains). In a multi-process job this process's rows, augmented with the global batch's draws."""
    batch, what = run.cfg.batch_size, f"reading and preparing training batch {b + 1}"
    try:  # the training images may be read from disk
        rows = run.job.rows(batch)
        idx = order[b * batch : (b + 1) * batch][rows]
        xb = run.x_train[idx]
        if run.cfg.augment:
            xb = augment_crop(xb, run.rng, flip=run.cfg.flip, rows=(rows.start, batch))
        xb, yb = to_inputs(xb, run.data.max_value), run.data.y_train[idx]
        return {r.framework: r.place(xb, yb) for r in run.runners}
    except MemoryError:
        raise ResourceError(f"out of memory while {what}") from None
    except OSError as e:
        raise ResourceError(f"{what} failed ({file_system_fault(e)})") from None


def _train_epoch(run: _Run, epoch: int, progress: bool, stop: StopSignals | None
                 ) -> tuple[dict[str, tuple[np.ndarray, int]], float, dict[str, float]]:
    """Train one epoch; returns each framework's ``(step losses, correct count)``, the epoch's wall time (batch
    preparation included) and each framework's own step time."""
    from tqdm.auto import tqdm

    steps, cfg = run.steps, run.cfg
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False, disable=not progress)
    t_epoch = time.perf_counter()
    order = run.rng.permutation(len(run.x_train))
    own_time = {r.framework: 0.0 for r in run.runners}  # each framework's steps (--compare splits the wall time)
    for r in run.runners:
        r.begin_epoch(steps)
    next_read, cut_short = time.perf_counter() + 1.0, False
    with Prefetcher(functools.partial(_make_batch, run, order=order), steps) as batches:
        for b, placed in enumerate(batches):
            logits = {}
            for r in run.runners:
                t0 = time.perf_counter()
                out = r.step(placed[r.framework])
                logits[r.framework] = np.asarray(out) if run.comparison is not None else out
                own_time[r.framework] += time.perf_counter() - t0
            if run.comparison is not None:
                run.comparison.step(logits)
            if stop is not None and stop.signal_name:
                bar.close()
                raise RunInterruptedError(f"{stop.signal_name}: interrupted at epoch {epoch + 1} (step {b + 1}); "
                                          f"{start_note(run.history, run.ckpt_root, run.staging is not None)}")
            bar.update(1)
            if progress and time.perf_counter() >= next_read:
                # At most once a second and only a finished step's loss: the device is never made to wait.
                loss = run.runners[-1].latest_loss()
                if loss is not None:
                    next_read = time.perf_counter() + 1.0
                    bar.set_postfix(loss=f"{loss / cfg.batch_size:.4f}")
                    if not math.isfinite(loss):
                        cut_short = True  # diverged: the epoch's totals say at which step
                        break
    totals = {}
    for r in run.runners:
        t0 = time.perf_counter()
        totals[r.framework] = r.end_epoch()  # the one wait for the device per epoch
        own_time[r.framework] += time.perf_counter() - t0
    wall = time.perf_counter() - t_epoch
    bar.close()
    bad_step = _first_bad_loss(totals, cut_short)
    if bad_step is not None:
        _diverged(run, f"epoch {epoch + 1}, {bad_step}")
    return totals, wall, own_time


def _end_epoch(run: _Run, epoch: int, totals: dict[str, tuple[np.ndarray, int]], wall: float,
               own_time: dict[str, float]) -> None:
    """Evaluate, report, checkpoint and write the metrics of (0-based) ``epoch``."""
    from tqdm.auto import tqdm

    examples = run.steps * run.cfg.batch_size
    test_logits, rows = {}, []
    for r in run.runners:
        losses, correct = totals[r.framework]
        # in step order, in double: not sum(), which compensates its rounding since Python 3.12
        total = functools.reduce(operator.add, losses.tolist(), 0.0)
        # Honest throughput: the epoch's wall time (data preparation included) less the other framework's.
        train_time = wall - sum(t for other, t in own_time.items() if other != r.framework)
        t0 = time.perf_counter()
        test_logits[r.framework] = r.predict(run.test_inputs)
        eval_time = time.perf_counter() - t0
        rows.append({
            "epoch": epoch + 1, "framework": r.framework, "loss": total / examples, "train_acc": correct / examples,
            "test_acc": float((test_logits[r.framework].argmax(-1) == run.data.y_test).mean()),
            "lr": run.epoch_lr(epoch), "time_s": train_time + eval_time, "images_per_s": examples / train_time,
            "train_time_s": train_time, "eval_time_s": eval_time,
        })
    run.history.extend(rows)
    for row in rows:
        tqdm.write(format_row(row))
    if run.comparison is not None:
        tqdm.write(format_compare(run.comparison.end_epoch(run.runners, run.steps, test_logits, epoch + 1)))
    sys.stdout.flush()
    bad = non_finite_weights(run.runners)
    if bad is not None or not all(math.isfinite(r["loss"]) for r in rows):
        _diverged(run, f"epoch {epoch + 1}, step {run.steps}: {bad or 'the loss'} became non-finite")
    state = {"epoch": epoch + 1, "data_rng": run.rng.bit_generator.state, "history": run.history,
             "compare": run.compare_records}
    if epoch == run.start and run.job.main:  # with the first checkpoint: a run that failed before leaves no config
        write_json(run.out_dir / "config.json", run.cfg.to_dict())
    save_checkpoint(run.ckpt_root, epoch + 1, run.runners, state, main=run.job.main)
    if run.job.main:
        _write_metrics(run)
    if run.staging is not None and run.out_dir == run.staging:
        from wage_train.run_dir import swap_into_place

        if run.job.main:
            aside = swap_into_place(run.staging, run.final_dir, *run.locks)  # uninterruptible; the locks follow
            print(f"note: --overwrite: the previous run was moved to {aside}", flush=True)
        run.out_dir = run.final_dir
        with run.job.together():  # no process writes its next checkpoint before the folder has moved
            pass


def _finish(run: _Run, wall0: float) -> dict[str, Any]:
    """Write the final metrics, weights and plot (process 0); print the summary lines; return the summary."""
    if not run.job.main:
        return _summary(run)
    summary = _write_metrics(run)
    with atomic_write(run.out_dir / "weights.npz") as f:
        np.savez(f, **{f"{r.framework}.{k}": v for r in run.runners for k, v in r.raw_weights().items()})
    if run.history:
        _plot(run)
    split = run.data.eval_split
    for fw, s in summary["frameworks"].items():
        print(f"{fw}: final {split} accuracy {100 * s['final_test_acc']:.2f}% (best {100 * s['best_test_acc']:.2f}%), "
              f"train {s['train_time_s']:.1f} s + eval {s['eval_time_s']:.1f} s", flush=True)
    if run.comparison is not None:
        print(compare_verdict(run.compare_records), flush=True)
    print(f"wall time of this invocation {time.perf_counter() - wall0:.1f} s; outputs in {run.out_dir}", flush=True)
    return summary


def _first_bad_loss(totals: dict[str, tuple[np.ndarray, int]], cut_short: bool) -> str | None:
    """``"step S: the F training loss became L"`` for the first non-finite step loss, else None."""
    bad = [(int(b), fw, float(losses[b])) for fw, (losses, _) in totals.items()
           for b in np.flatnonzero(~np.isfinite(losses))[:1]]
    if not bad:
        if cut_short:  # a non-finite loss was read during the epoch: it must be in the totals
            raise RuntimeError("a non-finite loss was read during the epoch but is not in its totals")
        return None
    b, fw, loss = min(bad, key=lambda t: t[0])  # the first step, the first framework on a tie
    return f"step {b + 1}: the {fw} training loss became {loss}"


def _epochs_done(history: list[dict[str, Any]]) -> int:
    return max((m["epoch"] for m in history), default=0)


def _plot(run: _Run, note: str = "") -> None:
    kind = "float weights" if run.cfg.float else f"QW(accumulator), {run.runners[-1].framework}"
    plot_run(run.out_dir / "plot.png", run.history, run.runners[-1].forward_weights(),
             f"{run.cfg.name}{note}\n{run.method}, {run.spec.describe()}, {run.cfg.dataset}", weights_label=kind)


def start_note(history: list[dict], ckpt_root: Path, overwrite: bool = False) -> str:
    done = _epochs_done(history)
    if not done:
        return "no epoch was completed: nothing to resume (start again with --overwrite)"
    how = "--resume instead of --overwrite" if overwrite else "--resume"
    return f"epoch {done} is checkpointed in {ckpt_root}; continue with the same command and {how}"


def _diverged(run: _Run, what: str) -> None:
    """Write the finite epochs' metrics and plot, keep the last good checkpoint, raise :class:`DivergedError`."""
    if run.history and run.job.main:
        write_json(run.out_dir / "config.json", run.cfg.to_dict())  # the diverged run's record, with its metrics
        _write_metrics(run)
        _plot(run, " (diverged)")
    done = _epochs_done(run.history)
    kept = f"the checkpoint of epoch {done} is kept" if done else "no checkpoint was written"
    raise DivergedError(f"diverged at {what}; {kept}. Hint: lower --lr (now {run.cfg.lr:g})"
                        + ("" if run.cfg.float else " or check --bits/--factor"))


def _summary(run: _Run) -> dict[str, Any]:
    frameworks = {}
    for fw in dict.fromkeys(m["framework"] for m in run.history):
        rows = [m for m in run.history if m["framework"] == fw]
        frameworks[fw] = {"final_test_acc": rows[-1]["test_acc"], "best_test_acc": max(m["test_acc"] for m in rows),
                          "final_train_acc": rows[-1]["train_acc"], "final_loss": rows[-1]["loss"],
                          "train_time_s": sum(m["train_time_s"] for m in rows),
                          "eval_time_s": sum(m["eval_time_s"] for m in rows)}
    return {"model": run.spec.describe(), "epochs_done": _epochs_done(run.history), "frameworks": frameworks,
            **({"compare": compare_summary(run.compare_records)} if run.compare_records else {})}


def _write_metrics(run: _Run) -> dict[str, Any]:
    summary = _summary(run)
    write_csv(run.out_dir / "metrics.csv", run.history)
    if run.compare_records:
        write_csv(run.out_dir / "compare.csv", run.compare_records)
    write_json(run.out_dir / "metrics.json", {"config": run.cfg.to_dict(), "summary": summary,
                                              "history": run.history, "compare": run.compare_records})
    return summary
