"""WAGE models in Flax linen: a small MLP, the paper's VGG7 and its MNIST LeNet-5 (docs/contract.md §3).

``quantized=False`` gives the float baseline with the same architecture and parameter names: plain
dense/conv layers (fan-in uniform init), no quantizers; train it with plain SGD on the same loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import linen as nn

from wage_jax._src.layers import max_pool_2x2
from wage_jax.linen import WAGEConv, WAGEDense, WAGEQuantizer
from wage_spec import FULL_PRECISION, WAGEConfig

__all__ = ["MLP", "VGG7", "LeNet5"]


class _WAGEBlocks(nn.Module):
    """Layer factories shared by the models: WAGE layers, or their float counterparts."""

    config: WAGEConfig = WAGEConfig()
    quantized: bool = True
    # WAGE layers compute on int8 with int32 sums (wage_jax.integer), bit-identically where float32 is exact;
    # "int32": wherever int32 holds the sums (the kernel gradients included), the same bits on every backend
    integer: bool | str = False
    # how the WAGE convolutions are computed, the same bits in every case: "conv" (the backend's convolution),
    # "patches" (patches and a dot_general: no convolution algorithm can round) or, with integer, "int8_f32"
    lowering: str = "conv"

    def dense(self, features: int, name: str) -> nn.Module:
        c = self.config
        if self.quantized:
            return WAGEDense(features, c.bits_W, c.factor, c.W_mode, name=name, **self._integer())
        init = nn.initializers.variance_scaling(c.factor, "fan_in", "uniform")
        return nn.Dense(features, use_bias=False, kernel_init=init, name=name)

    def conv(self, features: int, name: str, kernel_size: tuple[int, int] = (3, 3), padding: str = "SAME") -> nn.Module:
        c = self.config
        if self.quantized:
            return WAGEConv(features, c.bits_W, kernel_size, padding=padding, factor=c.factor, W_mode=c.W_mode,
                            name=name, lowering=self.lowering, **self._integer())
        init = nn.initializers.variance_scaling(c.factor, "fan_in", "uniform")
        return nn.Conv(features, kernel_size, padding=padding, use_bias=False, kernel_init=init, name=name)

    def _integer(self) -> dict:
        """Every WAGE layer's input comes from a Q_A and its error from a Q_E of this config's bits."""
        return {"integer": self.integer, "bits_A": self.config.bits_A, "bits_E": self.config.bits_E}

    def quant(self, x: jax.Array, bits_A: int, bits_E: int) -> jax.Array:
        if not self.quantized:
            return x
        c = self.config
        return WAGEQuantizer(bits_A, bits_E, c.A_mode, c.E_mode)(x)


class MLP(_WAGEBlocks):
    """``Q_A(x) -> [dense, ReLU, Q]*len(hidden) -> dense -> Q_E``; input ``(N, ...)`` flattened, output ``(N, K)``."""

    hidden: Sequence[int] = (1024,)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        x = x.reshape(x.shape[0], -1)
        x = self.quant(x, c.bits_A, FULL_PRECISION)
        for i, h in enumerate(self.hidden):
            x = nn.relu(self.dense(h, f"dense{i}")(x))
            x = self.quant(x, c.bits_A, c.bits_E)
        x = self.dense(self.num_classes, f"dense{len(self.hidden)}")(x)
        return self.quant(x, FULL_PRECISION, c.bits_E)


class VGG7(_WAGEBlocks):
    """The paper's VGG7 for 32x32 NHWC images (docs/contract.md §3); ``widths``/``hidden`` shrink it for tests.

    conv w0, ReLU, Q; conv w0, pool, ReLU, Q; conv w1, ReLU, Q; conv w1, pool, ReLU, Q; conv w2, ReLU, Q;
    conv w2, pool, ReLU, Q; dense ``hidden``, ReLU, Q; dense ``num_classes``. The features are flattened
    in NCHW order, as torch flattens them, so weights transfer between the frameworks by transposition.
    """

    widths: Sequence[int] = (128, 256, 512)
    hidden: int = 1024
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        x = self.quant(x, c.bits_A, FULL_PRECISION)
        i = 0
        for width in self.widths:
            for pool in (False, True):
                x = self.conv(width, f"conv{i}")(x)
                if pool:
                    x = max_pool_2x2(x)
                x = self.quant(nn.relu(x), c.bits_A, c.bits_E)
                i += 1
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        x = self.quant(nn.relu(self.dense(self.hidden, "dense0")(x)), c.bits_A, c.bits_E)
        x = self.dense(self.num_classes, "dense1")(x)
        return self.quant(x, FULL_PRECISION, c.bits_E)


class LeNet5(_WAGEBlocks):
    """The paper's MNIST network, 32C5-MP2-64C5-MP2-512FC-10, for 28x28 NHWC images; output ``(N, K)``.

    5x5 convolutions without padding (VALID) and without bias: 28 -> 24 -> pool 12 -> 8 -> pool 4, so the
    flattened features are 4*4*64 = 1024. Quantizers as in :class:`VGG7`: ``Q_A`` on the input, ``Q``
    after each ReLU, ``Q_E`` on the output. Features are flattened in NCHW order (as torch). ``widths`` /
    ``hidden`` shrink it for tests.

    References:
        Wu et al., ICLR 2018, Sec. 4.1; the authors' log ``log/2017-10-23(lenet5 2888).txt``
        (boluoweifenda/WAGE) prints the layer shapes ``[5,5,1,32] [5,5,32,64] [1024,512] [512,10]``.
    """

    widths: Sequence[int] = (32, 64)
    hidden: int = 512
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        x = self.quant(x, c.bits_A, FULL_PRECISION)
        for i, width in enumerate(self.widths):
            x = max_pool_2x2(self.conv(width, f"conv{i}", (5, 5), "VALID")(x))
            x = self.quant(nn.relu(x), c.bits_A, c.bits_E)
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        x = self.quant(nn.relu(self.dense(self.hidden, "dense0")(x)), c.bits_A, c.bits_E)
        x = self.dense(self.num_classes, "dense1")(x)
        return self.quant(x, FULL_PRECISION, c.bits_E)
