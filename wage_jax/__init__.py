"""WAGE (Wu et al., ICLR 2018) in JAX: integer weights, activations, gradients and errors.

Bit for bit the arithmetic of QPyTorch's WAGE example on qtorch's CPU kernel (``docs/contract.md``),
jit-compiled on CPU, GPU and TPU.

Public API (``wage_jax``):

* quantizers: ``shift``, ``C``, ``QW``, ``QG``, ``wage_quantize`` (the ``WAGEQuantizer`` as a function),
  ``fixed_point_quantize``, ``fixed_point_quantize_with_mask``, ``straight_through``; ``checked`` holds the
  same quantizers reporting NaN/Inf under ``jit``;
* the update as optax transformations: ``wage_sgd``, ``scale_by_qg``, ``keep_params_clipped``,
  ``clip_params``, ``ScaleByQGState``;
* training: ``make_train_step``, ``sse_loss``;
* the run's bits and rounding modes: ``WAGEConfig`` (``wage_spec.WAGEConfig``, re-exported);
* layers' arithmetic for Flax's stock layers: ``wage_dot_general``, ``wage_conv_general_dilated``,
  ``wage_kernel_init``, ``wage_init``, ``kernel_scale``, ``max_pool_2x2``.

Namespaces: ``wage_jax.linen`` and ``wage_jax.nnx`` (``WAGEQuantizer``, the layer hooks, ``WAGEDense``,
``WAGEConv``), ``wage_jax.models`` (``MLP``, ``LeNet5``, ``VGG7``), ``wage_jax.parallel`` (data-parallel
training), ``wage_jax.integer`` (products on integers), ``wage_jax.export`` (integer inference: ONNX,
StableHLO).
"""

from wage_jax import checked
from wage_jax._src.fixed_point import fixed_point_quantize, fixed_point_quantize_with_mask
from wage_jax._src.functional import QG, QW, C, shift, straight_through
from wage_jax._src.initializers import kernel_scale, wage_init, wage_kernel_init
from wage_jax._src.layers import max_pool_2x2, wage_conv_general_dilated, wage_dot_general
from wage_jax._src.train import make_train_step, sse_loss
from wage_jax._src.transforms import ScaleByQGState, clip_params, keep_params_clipped, scale_by_qg, wage_sgd
from wage_jax._src.wage_quantizer import wage_quantize
from wage_spec import WAGEConfig
from wage_spec._version import installed_version

__version__ = installed_version()

__all__ = [
    "C",
    "QG",
    "QW",
    "ScaleByQGState",
    "WAGEConfig",
    "checked",
    "clip_params",
    "fixed_point_quantize",
    "fixed_point_quantize_with_mask",
    "keep_params_clipped",
    "kernel_scale",
    "make_train_step",
    "max_pool_2x2",
    "scale_by_qg",
    "shift",
    "sse_loss",
    "straight_through",
    "wage_conv_general_dilated",
    "wage_dot_general",
    "wage_init",
    "wage_kernel_init",
    "wage_quantize",
    "wage_sgd",
]
