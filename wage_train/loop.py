"""The ``wage-train`` run loop: build the runners, train epoch by epoch, evaluate, checkpoint, report."""

from __future__ import annotations

import functools
import math
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wage_train.augment import augment_crop, augment_crop_flip
from wage_train.checkpoints import non_finite_weights, restore_checkpoint, save_checkpoint
from wage_train.config import MODES, UsageError, wage_config
from wage_train.data import Dataset, pad_images, to_inputs
from wage_train.float_recipe import describe as describe_recipe
from wage_train.prefetch import Prefetcher
from wage_train.reporting import format_compare, format_header, format_row, plot_run, write_csv, write_json
from wage_train.runspec import LrSchedule, ModelSpec

__all__ = ["DivergedError", "RunInterruptedError", "StopSignals", "train"]


class DivergedError(RuntimeError):
    """The loss or a weight became non-finite; the message is the one line the CLI prints."""


class RunInterruptedError(RuntimeError):
    """SIGINT or SIGTERM arrived; training stopped after the last completed checkpoint."""


class StopSignals:
    """Context manager: SIGINT/SIGTERM set :attr:`signal_name` instead of raising, so a step, a checkpoint or
    an Orbax writer is never cut in half; the loop checks it after each step. A second signal exits at once
    (status 130) without a traceback."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:
            sys.stderr.write("wage-train: second signal: stopping now (the last completed checkpoint is intact)\n")
            sys.stderr.flush()
            import os

            os._exit(130)
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32).view(np.int32)


def _make_runners(
    cfg: dict[str, Any], spec: ModelSpec, lrs: Sequence[float], spe: int, devices: int | None = None,
    eval_batch_size: int | None = None,
) -> list[Any]:
    quantized = not cfg["float"]
    config = wage_config(cfg)
    runners: list[Any] = []
    common = dict(quantized=quantized, lrs=lrs, steps_per_epoch=spe, seed=cfg["seed"],
                  eval_batch_size=eval_batch_size or cfg["eval_batch_size"],
                  float_recipe=cfg.get("float_recipe") or "wage-sse")  # saved before the recipes: wage-sse
    if cfg["framework"] in ("torch", "compare"):
        from wage_train.torch_runner import TorchRunner

        runners.append(TorchRunner(spec, config, **common))
    if cfg["framework"] in ("jax", "compare"):
        from wage_train.jax_runner import JaxRunner

        # --compare: JAX starts from torch's initial weights (its own draw would differ).
        init = runners[0].accumulators() if cfg["framework"] == "compare" else None
        runners.append(JaxRunner(spec, config, init_weights=init, devices=devices, batch_size=cfg["batch_size"],
                                 integer=bool(cfg.get("integer")), **common))
    return runners


def _compare_epoch(runners: list[Any], steps: int, steps_differ: int, test_logits: dict[str, np.ndarray],
                   bits_W: int, epoch: int) -> dict[str, Any]:
    """How far JAX is from torch after an epoch: accumulators (JAX vs ``C(torch)``, contract §3), test outputs."""
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


def _eval_label(data: Dataset) -> str:
    split = data.eval_split
    return split if split == "test" else f"{split} (held out of training; test set unused)"


def _augment_label(cfg: dict[str, Any]) -> str:
    if not cfg["augment"]:
        return ""
    return " (augmented: crop + flip)" if cfg.get("flip", True) else " (augmented: crop)"


def train(cfg: dict[str, Any], data: Dataset, out_dir: Path, *, resume: bool, stop_after: int | None,
           progress: bool, devices: int | None = None, staging: Path | None = None,
           stop: StopSignals | None = None, locks: tuple[Any, Any] = (None, None)) -> dict[str, Any]:
    """Train the run ``cfg`` on ``data`` into ``out_dir``; returns the summary written to ``metrics.json``.

    Raises:
      DivergedError: the loss or a weight became non-finite (metrics and the last good checkpoint are kept).
      RunInterruptedError: ``stop`` saw SIGINT/SIGTERM (the last completed checkpoint is intact).
      DataError: ``resume`` and no checkpoint verifies.
    """
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
        raise UsageError(f"--batch-size {batch} exceeds the {len(x_train)} training examples")
    lrs = LrSchedule(cfg["lr"], epochs, cfg["schedule"])  # lazy: no per-epoch list (any --epochs)
    test_inputs = to_inputs(x_test, data.max_value)
    # The evaluation batch never exceeds the evaluation set (a larger one would only allocate padding).
    runners = _make_runners(cfg, spec, lrs, spe, devices, eval_batch_size=min(cfg["eval_batch_size"], len(x_test)))
    frameworks = [r.framework for r in runners]

    ckpt_root = out_dir / "checkpoints"
    rng = np.random.default_rng(cfg["seed"])
    history: list[dict[str, Any]] = []
    compare: list[dict[str, Any]] = []
    start = 0
    final_dir = out_dir
    if resume:
        from wage_train.safe_io import fault

        ckpt, state = restore_checkpoint(ckpt_root, runners, warn=lambda m: print(m, flush=True))
        try:
            rng.bit_generator.state = state["data_rng"]
        except (TypeError, ValueError, KeyError) as e:
            raise fault(ckpt / "state", f"bad data_rng state ({type(e).__name__})") from None
        history, compare, start = state["history"], state["compare"], state["epoch"]
        if start >= epochs:
            raise UsageError(f"--epochs {epochs}: the run in {out_dir} already has {start} "
                             f"epoch(s) done; give --epochs > {start} to continue it")
        print(f"resumed from {ckpt} (epoch {start} done)", flush=True)
    elif staging is not None:
        # --overwrite: train in a fresh folder; the old run is moved aside after the first good checkpoint.
        out_dir = staging
        ckpt_root = out_dir / "checkpoints"
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
    if not cfg["float"]:
        cfg["scales"] = spec.weight_scales(cfg["bits"][0], cfg["factor"])  # per layer, forward order
    write_json(out_dir / "config.json", cfg)

    method = (
        f"float ({describe_recipe(cfg.get('float_recipe') or 'wage-sse')})"
        if cfg["float"]
        else "WAGE {}-{}-{}-{} (W {}, A {}, G {}, E {})".format(*cfg["bits"], *(cfg[m] for m in MODES))
    )
    print(
        f"{'preset ' + cfg['preset'] + ' | ' if cfg.get('preset') else ''}"
        f"{method} | {spec.describe()} | {cfg['dataset']}: {len(x_train)} train / {len(x_test)} "
        f"{_eval_label(data)}"
        f"{_augment_label(cfg)} | {' + '.join(frameworks)} | {epochs} epochs x {spe} steps "
        f"of {batch}, lr {cfg['lr']:g} ({cfg['schedule']} schedule) | seed {cfg['seed']} | {out_dir}",
        flush=True,
    )
    if cfg["framework"] == "compare" and not cfg["float"] and "stochastic" in (cfg[m] for m in MODES):
        print("note: stochastic rounding draws different random numbers in JAX and torch: the trajectories "
              "are expected to diverge (use nearest modes for a bit-exact comparison)", flush=True)
    if cfg["schedule"] == "paper" and (len(lrs.segments()) < 3 or lrs[0] != cfg["lr"]):
        print(f"note: with --epochs {epochs} the paper schedule is degenerate: per-epoch lr {list(lrs)} "
              "(use more epochs or --schedule constant)", flush=True)
    print(format_header(), flush=True)

    bits_W = cfg["bits"][0]
    wall0 = time.perf_counter()
    compare_steps = len(runners) == 2

    def make_batch(b: int, order: np.ndarray) -> dict[str, Any]:
        # On the producer thread (the only user of ``rng`` while an epoch trains): gather, augment, scale, place.
        idx = order[b * batch : (b + 1) * batch]
        xb = x_train[idx]
        if cfg["augment"]:
            xb = augment_crop_flip(xb, rng) if cfg.get("flip", True) else augment_crop(xb, rng)
        xb, yb = to_inputs(xb, data.max_value), data.y_train[idx]
        return {r.framework: r.place(xb, yb) for r in runners}

    for done_this_run, epoch in enumerate(range(start, epochs), start=1):
        # The epoch's wall time: from before the first batch is prepared until every step's results are in.
        bar = tqdm(total=spe, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False, disable=not progress)
        t_epoch = time.perf_counter()
        order = rng.permutation(len(x_train))
        steps_differ = 0
        own_time = dict.fromkeys(frameworks, 0.0)  # each framework's steps (--compare splits the wall time)
        for r in runners:
            r.begin_epoch(spe)
        next_read = time.perf_counter() + 1.0
        cut_short = False
        with Prefetcher(functools.partial(make_batch, order=order), spe) as batches:
            for b, placed in enumerate(batches):
                logits_by_fw = {}
                for r in runners:
                    t0 = time.perf_counter()
                    logits = r.step(placed[r.framework])
                    logits_by_fw[r.framework] = np.asarray(logits) if compare_steps else logits
                    own_time[r.framework] += time.perf_counter() - t0
                if compare_steps:
                    steps_differ += int(not np.array_equal(_bits(logits_by_fw["torch"]),
                                                           _bits(logits_by_fw["jax"])))
                if stop is not None and stop.signal_name:
                    bar.close()
                    raise RunInterruptedError(f"{stop.signal_name}: interrupted at epoch {epoch + 1} (step {b + 1}); "
                                              f"{start_note(history, ckpt_root, staging is not None)}")
                bar.update(1)
                if progress and time.perf_counter() >= next_read:
                    # At most once a second and only a finished step's loss: the device is never made to wait.
                    loss = runners[-1].latest_loss()
                    if loss is not None:
                        next_read = time.perf_counter() + 1.0
                        bar.set_postfix(loss=f"{loss / batch:.4f}")
                        if not math.isfinite(loss):
                            cut_short = True  # diverged: the epoch's totals say at which step
                            break
        totals = {}
        for r in runners:
            t0 = time.perf_counter()
            totals[r.framework] = r.end_epoch()  # the one wait for the device per epoch
            own_time[r.framework] += time.perf_counter() - t0
        wall = time.perf_counter() - t_epoch
        bar.close()
        bad_step = _first_bad_loss(totals, cut_short)
        if bad_step is not None:
            _diverged(out_dir, cfg, spec, history, compare, runners, method, f"epoch {epoch + 1}, {bad_step}")
        stats = {}
        for fw, (losses, correct) in totals.items():
            total = 0.0
            for v in losses.tolist():  # in step order, in double: the sum the host kept before issue 24 (not
                total += v  # sum(), which compensates its rounding since Python 3.12)
            # Honest throughput: the epoch's wall time (data preparation included) less the other framework's.
            time_fw = wall - sum(t for other, t in own_time.items() if other != fw)
            stats[fw] = {"loss": total, "correct": correct, "time": time_fw}

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

        bad = non_finite_weights(runners)
        if bad is not None or not all(math.isfinite(r["loss"]) for r in rows):
            _diverged(out_dir, cfg, spec, history, compare, runners, method,
                      f"epoch {epoch + 1}, step {spe}: {bad or 'the loss'} became non-finite")
        state = {"epoch": epoch + 1, "data_rng": rng.bit_generator.state, "history": history, "compare": compare}
        save_checkpoint(ckpt_root, epoch + 1, runners, state)
        _write_metrics(out_dir, cfg, spec, history, compare)
        if staging is not None and out_dir == staging:
            from wage_train.run_dir import swap_into_place

            aside = swap_into_place(staging, final_dir, *locks)  # uninterruptible; the locks follow
            out_dir, ckpt_root = final_dir, final_dir / "checkpoints"
            print(f"note: --overwrite: the previous run was moved to {aside}", flush=True)
        if stop is not None and stop.signal_name:
            raise RunInterruptedError(f"{stop.signal_name}: interrupted after epoch {epoch + 1} (checkpoint saved); "
                              f"{start_note(history, ckpt_root, staging is not None)}")
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
    split = data.eval_split
    for fw, s in summary["frameworks"].items():
        print(
            f"{fw}: final {split} accuracy {100 * s['final_test_acc']:.2f}% (best {100 * s['best_test_acc']:.2f}%), "
            f"train {s['train_time_s']:.1f} s + eval {s['eval_time_s']:.1f} s",
            flush=True,
        )
    if "compare" in summary:
        c = summary["compare"]
        print("jax vs torch: " + ("identical trajectories in every epoch" if c["identical_all_epochs"]
                                  else f"trajectories differ from epoch {c['first_divergent_epoch']}"), flush=True)
    print(f"wall time of this invocation {time.perf_counter() - wall0:.1f} s; outputs in {out_dir}", flush=True)
    return summary


def _first_bad_loss(totals: dict[str, tuple[np.ndarray, int]], cut_short: bool) -> str | None:
    """``"step S: the F training loss became L"`` for the first step (over the frameworks, in order) whose loss
    is not finite; None when every loss is."""
    first = None
    for fw, (losses, _) in totals.items():
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size and (first is None or bad[0] < first[0]):
            first = (int(bad[0]), fw, float(losses[bad[0]]))
    if first is None:
        if cut_short:  # a non-finite loss was read during the epoch: it must be in the totals
            raise RuntimeError("a non-finite loss was read during the epoch but is not in its totals")
        return None
    b, fw, loss = first
    return f"step {b + 1}: the {fw} training loss became {loss}"


def start_note(history: list[dict], ckpt_root: Path, overwrite: bool = False) -> str:
    done = max((m["epoch"] for m in history), default=0)
    if not done:
        return "no epoch was completed: nothing to resume (start again with --overwrite)"
    how = "--resume instead of --overwrite" if overwrite else "--resume"
    return f"epoch {done} is checkpointed in {ckpt_root}; continue with the same command and {how}"


def _diverged(out_dir: Path, cfg: dict[str, Any], spec: ModelSpec, history: list[dict], compare: list[dict],
              runners: list[Any], method: str, what: str) -> None:
    """Keep metrics (the finite epochs) and the last good checkpoint, draw the plot, raise :class:`DivergedError`."""
    if history:
        _write_metrics(out_dir, cfg, spec, history, compare)
        plot_run(out_dir / "plot.png", history, runners[-1].forward_weights(),
                 f"{cfg['name']} (diverged)\n{method}, {spec.describe()}, {cfg['dataset']}")
    done = max((m["epoch"] for m in history), default=0)
    kept = f"the checkpoint of epoch {done} is kept" if done else "no checkpoint was written"
    raise DivergedError(f"diverged at {what}; {kept}. Hint: lower --lr (now {cfg['lr']:g})"
                   + ("" if cfg["float"] else " or check --bits/--factor"))


def _write_metrics(out_dir: Path, cfg: dict[str, Any], spec: ModelSpec, history: list[dict],
                   compare: list[dict]) -> dict[str, Any]:
    summary = _summary(cfg, spec, history, compare)
    write_csv(out_dir / "metrics.csv", history)
    if compare:
        write_csv(out_dir / "compare.csv", compare)
    write_json(out_dir / "metrics.json", {"config": cfg, "summary": summary, "history": history, "compare": compare})
    return summary
