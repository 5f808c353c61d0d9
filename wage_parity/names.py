"""The functions and modes ``wage-parity`` compares, named without importing torch or JAX (its ``--help``)."""

from __future__ import annotations

__all__ = ["FUNCTIONS", "MODES"]

# The public wage_jax functions with parity cases (``wage_parity.cases`` builds one generator per name).
FUNCTIONS = ("fixed_point_quantize", "fixed_point_quantize_with_mask", "shift", "C", "QW", "QG", "wage_quantize")
MODES = ("eager", "jit")  # each case runs op by op and as one jax.jit program
