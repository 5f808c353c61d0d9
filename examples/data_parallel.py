"""Data-parallel WAGE training on N devices with ``wage_jax.parallel``, bit for bit the run on one device.

The global batch is split by rows over a 1-D device mesh; the weight accumulators and the optimizer state are
replicated. The step is ``make_train_step``'s, compiled with explicit shardings, so every maximum WAGE takes
over the batch (the error ``shift`` of Eq. 9, ``QG``'s of Eq. 11) becomes an all-reduce over the devices and
the run equals the one-device run bit for bit (docs/parallel.md says why the sums are exact). This script
trains both ways and checks it. On a CPU, ``--devices N`` asks XLA for N host devices (set before JAX loads).

    python -m examples.data_parallel --devices 4     # 5 epochs of the digits on 4 CPU devices, then 1
    python -m examples.data_parallel --smoke         # 2 devices, a few steps
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=4, help="mesh size (the global batch must divide by it)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch; <= 1024 keeps sums exact")
    parser.add_argument("--smoke", action="store_true", help="2 devices, 1 epoch of 4 batches")
    args = parser.parse_args(argv)
    if args.smoke:
        args.devices, args.epochs = 2, 1
    if "jax" not in sys.modules:  # CPU: N host devices; a GPU or TPU host already has its devices
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={args.devices}")
    run(args)


def run(args: argparse.Namespace) -> None:
    import jax
    import numpy as np
    from sklearn.datasets import load_digits

    from wage_jax import WAGEConfig, clip_params, make_train_step, parallel, wage_sgd
    from wage_jax.models import MLP

    if len(jax.devices()) < args.devices:
        raise SystemExit(f"--devices {args.devices}: only {len(jax.devices())} {jax.default_backend()} devices")
    digits = load_digits()
    x = (digits.images / 16.0 * 2 - 1).astype(np.float32)  # (1797, 8, 8) in [-1, 1]
    y = digits.target
    n_train = 4 * args.batch_size if args.smoke else 1408
    batches = [(x[i:i + args.batch_size], y[i:i + args.batch_size])
               for i in range(0, n_train - args.batch_size + 1, args.batch_size)]

    config = WAGEConfig()  # G and E stochastic: the draws are the same whatever the sharding
    model = MLP(hidden=(64,) if args.smoke else (256,), config=config)
    params = clip_params(model.init(jax.random.key(0), x[:1])["params"], config.bits_W)
    tx = wage_sgd(config.bits_W, config.bits_G, 8.0, config.G_mode, key=jax.random.key(1))

    def apply_fn(p, xb, key):  # the "wage" stream feeds the errors' stochastic rounding
        return model.apply({"params": p}, xb, rngs=None if key is None else {"wage": key})

    def train(step, state):
        for epoch in range(args.epochs):
            for i, (xb, yb) in enumerate(batches):
                key = jax.random.fold_in(jax.random.key(2), epoch * len(batches) + i)
                *state, _, _ = step(*state, xb, yb, key)
        return state

    single, _ = train(make_train_step(apply_fn, tx, donate=False), (params, tx.init(params)))
    mesh = parallel.data_mesh(args.devices)
    parallel_step = parallel.make_data_parallel_train_step(apply_fn, tx, mesh)  # numpy batches are sharded
    shared, _ = train(parallel_step, parallel.replicate((params, tx.init(params)), mesh))

    accuracy = float((apply_fn(shared, x[1408:], None).argmax(-1) == y[1408:]).mean())
    same = all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(shared), jax.tree.leaves(single), strict=True))
    epochs = f"{args.epochs} epoch{'s' * (args.epochs != 1)}"
    print(f"{args.devices} {jax.default_backend()} devices, {epochs}: test accuracy {accuracy:.4f}; "
          f"weights {'equal' if same else 'DIFFER from'} the one-device run's, bit for bit")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
