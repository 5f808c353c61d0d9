"""WAGE (Wu et al., ICLR 2018) in JAX: integer weights, activations, gradients and errors.

Bit for bit the arithmetic of QPyTorch's WAGE example on qtorch's CPU kernel (``docs/contract.md``),
jit-compiled on CPU, GPU and TPU.

Public API: the quantizers ``shift``, ``C``, ``QW``, ``QG``, ``wage_quantize``, ``fixed_point_quantize``,
``fixed_point_quantize_with_mask``, ``straight_through``; ``checked`` (the same quantizers reporting NaN/Inf
under ``jit``). Submodules: ``wage_jax.optax`` (``wage_sgd``, ``scale_by_qg``, ``keep_params_clipped``,
``clip_params``, ``carry_forward_weights``, ``forward_weights``), ``wage_jax.train`` (``make_train_step``,
``sse_loss``), ``wage_jax.parallel``,
``wage_jax.linen``, ``wage_jax.nnx``, ``wage_jax.models``.
"""

from wage_jax import checked
from wage_jax.fixed_point import fixed_point_quantize, fixed_point_quantize_with_mask
from wage_jax.functional import QG, QW, C, shift, straight_through
from wage_jax.wage_quantizer import wage_quantize
from wage_spec._version import installed_version

__version__ = installed_version()

__all__ = [
    "C",
    "QG",
    "QW",
    "checked",
    "fixed_point_quantize",
    "fixed_point_quantize_with_mask",
    "shift",
    "straight_through",
    "wage_quantize",
]
