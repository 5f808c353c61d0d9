"""A Flax linen model of stock layers made WAGE by hooks, trained with optax and a ``TrainState`` on MNIST files.

The network is LeNet-5's layout from ``nn.Conv`` and ``nn.Dense``: ``conv_general_dilated=`` and
``dot_general=`` hooks quantize the weights (``QW``, WAGE Eq. 5-7), ``wage_kernel_init`` draws them,
``WAGEQuantizer`` quantizes activations forward and errors backward (Eq. 8-9), and ``wage_sgd`` is the WAGE
update as an optax transformation (Eq. 11-12), so flax's ``TrainState.apply_gradients`` runs it as it runs SGD.

The data are the four MNIST idx files (``train-images-idx3-ubyte`` ...; ``wage-data mnist --data-dir DIR``
fetches them), read by ``wage_data``; ``--smoke`` trains on scikit-learn's embedded 8x8 digits instead.

    python -m examples.flax_mnist --data-dir data/mnist    # 2 epochs of MNIST on CPU
    python -m examples.flax_mnist --smoke                  # seconds
"""

from __future__ import annotations

import argparse
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
from flax.training.train_state import TrainState

from wage_data import DataError, load_dataset, to_inputs
from wage_jax import (
    WAGEConfig,
    clip_params,
    max_pool_2x2,
    sse_loss,
    wage_conv_general_dilated,
    wage_dot_general,
    wage_kernel_init,
    wage_sgd,
)
from wage_jax.linen import WAGEQuantizer


class LeNet5(nn.Module):
    """``(N, H, W, 1)`` in ``[-1, 1]`` -> 2x[conv 5x5, ReLU, pool, Q] -> dense, ReLU, Q -> dense 10, NHWC."""

    config: WAGEConfig
    widths: tuple[int, int] = (32, 64)
    hidden: int = 512

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        init = dict(use_bias=False, kernel_init=wage_kernel_init(c.bits_W, c.factor))  # WAGE has no biases

        def q(bits_A: int, bits_E: int) -> WAGEQuantizer:
            return WAGEQuantizer(bits_A, bits_E, c.A_mode, c.E_mode)

        x = q(c.bits_A, -1)(x)  # the input: activations only
        for width in self.widths:
            conv = wage_conv_general_dilated(c.bits_W, c.factor)
            x = nn.Conv(width, (5, 5), padding="SAME", conv_general_dilated=conv, **init)(x)
            x = q(c.bits_A, c.bits_E)(max_pool_2x2(nn.relu(x)))
        x = nn.Dense(self.hidden, dot_general=wage_dot_general(c.bits_W, c.factor), **init)(x.reshape(len(x), -1))
        x = q(c.bits_A, c.bits_E)(nn.relu(x))
        x = nn.Dense(10, dot_general=wage_dot_general(c.bits_W, c.factor), **init)(x)
        return q(-1, c.bits_E)(x)  # the output: errors only


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, help="folder of the four MNIST idx files")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=8.0, help="the paper's lr (the SSE loss is a batch sum)")
    parser.add_argument("--smoke", action="store_true", help="the embedded 8x8 digits, 1 epoch")
    args = parser.parse_args(argv)
    if args.data_dir is None and not args.smoke:
        parser.error("--data-dir is required (or --smoke)")
    args.epochs = 1 if args.smoke else args.epochs
    try:
        data = load_dataset("digits" if args.smoke else "mnist", args.data_dir)
    except DataError as error:
        parser.error(str(error))
    # uint8 pixels -> [-1, 1], as the paper does: 8-bit activations use both signs of their grid.
    x_train, x_test = (to_inputs(x, data.max_value) for x in (data.x_train, data.x_test))
    y_train, y_test = data.y_train, data.y_test

    config = WAGEConfig()  # 2-8-8-8; G and E round stochastically and draw from explicit keys
    model = LeNet5(config, widths=(8, 16) if args.smoke else (32, 64), hidden=64 if args.smoke else 512)
    key_init, key_G, key_data = jax.random.split(jax.random.key(0), 3)
    params = clip_params(model.init(key_init, x_train[:1])["params"], config.bits_W)  # start inside C's range
    tx = wage_sgd(config.bits_W, config.bits_G, args.lr, config.G_mode, key=key_G)
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    @jax.jit
    def train_step(state: TrainState, x: jax.Array, y: jax.Array, key: jax.Array) -> tuple[TrainState, jax.Array]:
        def loss_fn(params):  # the "wage" rng stream feeds the stochastic error rounding
            return sse_loss(state.apply_fn({"params": params}, x, rngs={"wage": key}), y)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    predict = jax.jit(lambda params, x: model.apply({"params": params}, x).argmax(-1))  # nearest A, W: no key
    for epoch in range(args.epochs):
        key_epoch = jax.random.fold_in(key_data, epoch)
        order = np.asarray(jax.random.permutation(key_epoch, len(x_train)))
        total = 0.0
        for i in range(0, len(order) - args.batch_size + 1, args.batch_size):  # full batches: one compilation
            rows = order[i:i + args.batch_size]
            state, loss = train_step(state, x_train[rows], y_train[rows], jax.random.fold_in(key_epoch, i))
            total += float(loss)
        hits = sum(int((predict(state.params, x_test[i:i + 500]) == y_test[i:i + 500]).sum())
                   for i in range(0, len(x_test), 500))
        print(f"epoch {epoch + 1}  loss/image {total / len(order):.4f}  test accuracy {hits / len(x_test):.4f}")
    return hits / len(x_test)


if __name__ == "__main__":
    main()
