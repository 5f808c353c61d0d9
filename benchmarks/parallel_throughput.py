"""Throughput of data-parallel WAGE training (``wage_jax.parallel``) over 1..8 virtual CPU devices.

    python benchmarks/parallel_throughput.py [--devices 1,2,4,8] [--batch 256] [--hidden 1024] [--steps 20]
        [--repeats 3] [--mode paper|nearest] [--json rows.json]

Each device count runs in its own subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
(the flag must be set before jax starts), trains the MLP (28x28 inputs -> hidden -> 10, 2-8-8-8 bits) on
synthetic data with ``make_data_parallel_train_step`` over an ``N``-device mesh, and reports images/s
after a compile and warm-up step (the fastest of ``--repeats`` timed passes). The first row, ``1*``, is
the plain single-device ``wage_jax.make_train_step`` for reference. The last column compares each
run's final accumulators with that row's (they must be bit-identical: every device count sees the same
global batches).

Virtual CPU devices share the machine's cores: this measures the overhead of partitioning (collectives,
per-device dispatch) rather than a speed-up; real multi-accelerator hosts are where the devices add compute.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _worker(n: int, batch: int, hidden: int, steps: int, repeats: int, mode: str, plain: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from wage_jax import clip_params, make_train_step, parallel, wage_sgd
    from wage_jax.models import MLP
    from wage_spec import WAGEConfig

    cfg = WAGEConfig() if mode == "paper" else WAGEConfig.nearest()
    model = MLP(hidden=(hidden,), config=cfg)
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28)))["params"]
    opt = wage_sgd(cfg.bits_W, cfg.bits_G, 1.0, mode=cfg.G_mode, key=jax.random.key(1) if cfg.stochastic else None)

    def apply_fn(p, x, key):
        return model.apply({"params": p}, x, rngs=None if key is None else {"wage": key})

    rng = np.random.default_rng(0)
    xs = (rng.integers(0, 256, (steps + 1, batch, 28, 28)) / 255.0 * 2.0 - 1.0).astype(np.float32)
    ys = rng.integers(0, 10, (steps + 1, batch)).astype(np.int32)
    keys = [jax.random.fold_in(jax.random.key(2), i) if cfg.stochastic else None for i in range(steps + 1)]
    params = clip_params(params, cfg.bits_W)
    opt_state = opt.init(params)
    if plain:
        step = make_train_step(apply_fn, opt)
        batches = [(jnp.asarray(x), jnp.asarray(y)) for x, y in zip(xs, ys, strict=True)]
    else:
        mesh = parallel.data_mesh(n)
        step = parallel.make_data_parallel_train_step(apply_fn, opt, mesh)
        params, opt_state = parallel.replicate((params, opt_state), mesh)
        batches = [parallel.shard_batch((x, y), mesh) for x, y in zip(xs, ys, strict=True)]
        keys = [k if k is None else parallel.replicate(k, mesh) for k in keys]
    t0 = time.perf_counter()
    params, opt_state, loss, _ = step(params, opt_state, *batches[0], keys[0])  # compile + warm-up
    jax.block_until_ready(params)
    compile_s = time.perf_counter() - t0
    elapsed = float("inf")
    for _ in range(repeats):  # best of `repeats` timed passes over the same batches (training goes on)
        t0 = time.perf_counter()
        for i in range(1, steps + 1):
            params, opt_state, loss, _ = step(params, opt_state, *batches[i], keys[i])
        jax.block_until_ready((params, loss))
        elapsed = min(elapsed, time.perf_counter() - t0)
    digest = hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in jax.tree_util.tree_leaves(params)))
    return {
        "devices": n,
        "plain": plain,
        "images_per_s": steps * batch / elapsed,
        "ms_per_step": 1e3 * elapsed / steps,
        "compile_s": compile_s,
        "digest": digest.hexdigest()[:16],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="1,2,4,8", help="comma-separated device counts (default 1,2,4,8)")
    ap.add_argument("--batch", type=int, default=256, help="global batch, divisible by every device count")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per pass, after one warm-up step")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes; the fastest is reported")
    ap.add_argument("--mode", choices=("paper", "nearest"), default="paper",
                    help="paper: 2-8-8-8 with stochastic G and E; nearest: every mode nearest")
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        n, plain = args._worker.split(":")
        print(json.dumps(_worker(int(n), args.batch, args.hidden, args.steps, args.repeats, args.mode, plain == "1")))
        return []

    counts = [int(c) for c in args.devices.split(",")]
    for n in counts:
        if args.batch % n:
            ap.error(f"--batch {args.batch} is not divisible by {n} devices")
    rows = []
    for n, plain in [(1, True)] + [(n, False) for n in counts]:
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, __file__, "--_worker", f"{n}:{int(plain)}", "--batch", str(args.batch),
               "--hidden", str(args.hidden), "--steps", str(args.steps), "--repeats", str(args.repeats),
               "--mode", args.mode]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    base = rows[0]["images_per_s"]
    print(f"MLP 784-{args.hidden}-10, mode {args.mode}, global batch {args.batch}, "
          f"best of {args.repeats} x {args.steps} steps, {os.cpu_count()} CPU cores")
    print("| devices | images/s | ms/step | vs. 1 device | compile s | accumulators |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        same = "identical" if r["digest"] == rows[0]["digest"] else "DIFFER"
        name = "1*" if r["plain"] else str(r["devices"])
        print(f"| {name} | {r['images_per_s']:.0f} | {r['ms_per_step']:.1f} | {r['images_per_s'] / base:.2f}x "
              f"| {r['compile_s']:.1f} | {same} |")
    print("1*: wage_jax.make_train_step without a mesh.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
