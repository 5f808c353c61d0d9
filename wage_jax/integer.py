"""WAGE's products on integers: int8/int16 operands with int32 sums, bit-identical to the float32 path.

``integer_dense`` and ``integer_conv`` compute ``x @ QW(w)`` and the convolution (and, through a custom
VJP, the backward's products with the error) on the fixed-point grids' integers, rescaled by one power of
two; a static plan (``integer_plan``) falls back to the float32 path where a sum could exceed 2^24 in
float32 or int32 could overflow. With ``sums="int32"`` (the WAGE layers' ``integer="int32"``) the bound is
int32's, 2^31: every sum that fits is exact and rounded once, the same bits on every backend. The WAGE layers
take ``integer=True`` or ``"int32"``; ``docs/integer.md`` states the contract. ``on_grid`` and
``exact_in_float32`` are the plan's tests.
"""

from wage_jax._src.integer import exact_in_float32, integer_conv, integer_dense, integer_plan, on_grid

__all__ = ["exact_in_float32", "integer_conv", "integer_dense", "integer_plan", "on_grid"]
