"""A Flax linen model of stock layers made WAGE by hooks, trained with optax and a ``TrainState`` on MNIST files.

The network is LeNet-5's layout from ``nn.Conv`` and ``nn.Dense``: ``conv_general_dilated=`` and
``dot_general=`` hooks quantize the weights (``QW``, WAGE Eq. 5-7), ``wage_kernel_init`` draws them,
``WAGEQuantizer`` quantizes activations forward and errors backward (Eq. 8-9), and ``wage_sgd`` is the WAGE
update as an optax transformation (Eq. 11-12), so flax's ``TrainState.apply_gradients`` runs it as it runs SGD.

The data are the four MNIST idx files (``train-images-idx3-ubyte`` ...; ``wage-data mnist --data-dir DIR``).
``--smoke`` writes tiny idx files of scikit-learn's 8x8 digits to a temporary folder and trains on those.

    python -m examples.flax_mnist --data-dir data/mnist    # 2 epochs of MNIST on CPU
    python -m examples.flax_mnist --smoke                  # seconds
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
from flax.training.train_state import TrainState

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

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: Path) -> np.ndarray:
    """An idx file (or its ``.gz``): 2 zero bytes, the type (0x08: uint8), the rank, big-endian int32 dims."""
    gz = path.with_name(path.name + ".gz")
    with (open(path, "rb") if path.exists() or not gz.exists() else gzip.open(gz, "rb")) as f:
        data = f.read()
    if data[:3] != b"\0\0\x08":
        raise ValueError(f"{path}: not a uint8 idx file")
    dims = np.frombuffer(data, ">i4", count=data[3], offset=4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * data[3]).reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    path.write_bytes(b"\0\0\x08" + bytes([array.ndim]) + np.array(array.shape, ">i4").tobytes()
                     + array.astype(np.uint8).tobytes())


def tiny_mnist(folder: Path) -> Path:
    """scikit-learn's digits (pixels 0..16 scaled to 0..255) as the four idx files: 1437 train, 360 test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    for name, array in zip(FILES, (images[:1437], digits.target[:1437], images[1437:], digits.target[1437:]),
                           strict=True):
        write_idx(folder / name, array)
    return folder


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
    parser.add_argument("--smoke", action="store_true", help="tiny idx files of the 8x8 digits, 1 epoch")
    args = parser.parse_args(argv)
    if args.data_dir is None and not args.smoke:
        parser.error("--data-dir is required (or --smoke)")
    args.epochs = 1 if args.smoke else args.epochs
    try:
        with tempfile.TemporaryDirectory(prefix="wage-idx-") as tmp:
            folder = tiny_mnist(Path(tmp)) if args.smoke else args.data_dir
            x_train, y_train, x_test, y_test = (read_idx(folder / name) for name in FILES)
    except FileNotFoundError as error:
        parser.error(f"--data-dir {args.data_dir} lacks the MNIST idx file {Path(error.filename).name} "
                     "(wage-data mnist --data-dir DIR)")
    # uint8 pixels -> [-1, 1], as the paper does: 8-bit activations use both signs of their grid.
    x_train, x_test = ((x[..., None] / 255.0 * 2 - 1).astype(np.float32) for x in (x_train, x_test))

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
