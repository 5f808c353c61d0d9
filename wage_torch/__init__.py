"""WAGE on torch and qtorch, with the documented API of ``xbtorch.quant.wage_qtorch``.

``from wage_torch import shift, C, QW, QG, WAGEQuantizer`` or
``from wage_torch.wage_qtorch import ...`` (the documented module's name).
"""

from wage_torch import _qtorch_env  # noqa: F401  (must precede the first qtorch import)
from wage_torch.initializer import wage_init_
from wage_torch.wage_qtorch import QG, QW, C, WAGEQuantizer, shift

__all__ = ["C", "QG", "QW", "WAGEQuantizer", "shift", "wage_init_"]
