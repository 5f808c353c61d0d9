"""A Flax NNX model of WAGE layers trained with ``nnx.Optimizer`` and ``wage_sgd``, on scikit-learn's 8x8 digits.

``wage_jax.nnx.WAGEConv``/``WAGEDense`` are conv and dense layers without bias whose forward multiplies by
``QW(kernel)`` (WAGE Eq. 5-7) and whose kernels the WAGE initializer draws; ``WAGEQuantizer`` rounds the
activations forward and the errors backward (Eq. 8-9). Stochastic rounding draws from the ``"wage"`` stream of
the ``nnx.Rngs`` the modules got at construction, so the jitted step takes no key. ``nnx.Optimizer`` applies
``wage_sgd``, the WAGE update ``w <- C(w - QG(grad))`` (Eq. 11-12) as an optax transformation.

    python -m examples.nnx_digits            # 15 epochs, seconds on CPU (test accuracy about 0.85)
    python -m examples.nnx_digits --smoke    # 1 epoch
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from flax import nnx
from sklearn.datasets import load_digits

from wage_jax import WAGEConfig, clip_params, max_pool_2x2, sse_loss, wage_sgd
from wage_jax.nnx import WAGEConv, WAGEDense, WAGEQuantizer


class CNN(nnx.Module):
    """``(N, 8, 8, 1)`` in ``[-1, 1]`` -> Q -> conv 3x3 -> ReLU -> pool -> Q -> dense -> ReLU -> Q -> dense 10 -> Q."""

    def __init__(self, config: WAGEConfig, width: int, hidden: int, *, rngs: nnx.Rngs) -> None:
        c = self.config = config
        q = dict(A_mode=c.A_mode, E_mode=c.E_mode, rngs=rngs)  # E: stochastic, from the "wage" stream
        self.q_in = WAGEQuantizer(c.bits_A, -1, **q)  # the input: activations only
        self.conv = WAGEConv(1, width, c.bits_W, kernel_size=3, factor=c.factor, rngs=rngs)
        self.q_conv = WAGEQuantizer(c.bits_A, c.bits_E, **q)
        self.dense = WAGEDense(16 * width, hidden, c.bits_W, factor=c.factor, rngs=rngs)
        self.q_dense = WAGEQuantizer(c.bits_A, c.bits_E, **q)
        self.out = WAGEDense(hidden, 10, c.bits_W, factor=c.factor, rngs=rngs)
        self.q_out = WAGEQuantizer(-1, c.bits_E, **q)  # the output: errors only

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.q_conv(max_pool_2x2(nnx.relu(self.conv(self.q_in(x)))))
        x = self.q_dense(nnx.relu(self.dense(x.reshape(len(x), -1))))
        return self.q_out(self.out(x))


@nnx.jit
def train_step(model: CNN, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array) -> jax.Array:
    """One WAGE step in place: SSE loss (a batch sum, Sec. 3.3.3), its gradient, ``wage_sgd``'s update."""
    loss, grads = nnx.value_and_grad(lambda m: sse_loss(m(x), y))(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model: CNN, x: jax.Array) -> jax.Array:
    return model(x).argmax(-1)  # nearest A and W draw nothing in the forward: evaluation needs no key


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="1 epoch of a narrow net")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs = 1

    digits = load_digits()
    x = (digits.images[..., None] / 16.0 * 2 - 1).astype(np.float32)  # (1797, 8, 8, 1) in [-1, 1]
    y = digits.target
    x_train, y_train, x_test, y_test = x[:1408], y[:1408], x[1408:], y[1408:]

    config = WAGEConfig()  # the paper's 2-8-8-8
    model = CNN(config, width=4 if args.smoke else 16, hidden=32 if args.smoke else 128,
                rngs=nnx.Rngs(params=args.seed, wage=args.seed + 1))
    for layer in (model.conv, model.dense, model.out):  # 2-bit kernels are drawn past C's range: clip once
        layer.kernel[...] = clip_params(layer.kernel[...], config.bits_W)
    tx = wage_sgd(config.bits_W, config.bits_G, args.lr, config.G_mode, key=jax.random.key(args.seed + 2))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

    rng = np.random.default_rng(args.seed)
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_train))
        losses = [train_step(model, optimizer, x_train[rows], y_train[rows])
                  for rows in np.split(order, len(order) // args.batch_size)]  # equal batches: one compilation
        accuracy = float((predict(model, x_test) == y_test).mean())
        print(f"epoch {epoch + 1:2d}  loss/image {float(sum(losses)) / len(order):.4f}  test accuracy {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
