"""WAGE on torch and qtorch, with the documented API of ``xbtorch.quant.wage_qtorch``.

``from wage_torch import shift, C, QW, QG, WAGEQuantizer, WAGEConfig`` or
``from wage_torch.wage_qtorch import ...`` (the documented module's name). Models and the reference
training loop: ``wage_torch.models``, ``wage_torch.training``. The rounding kernel is qtorch's
(default) or a pure-torch one with the same bits: ``wage_torch.set_backend("torch" | "qtorch")`` or
``WAGE_TORCH_BACKEND`` (see ``wage_torch.backend``). ``import wage_torch`` neither imports qtorch nor
changes the environment.
"""

# isort: off
try:
    import torch  # noqa: F401
except ImportError:  # one line, not a traceback into qtorch: the JAX install has no torch on purpose
    raise ImportError(
        "wage_torch needs torch and qtorch: install your torch build, then the torch extra "
        "(pip install \".[torch]\" in a clone of wage-jax)"
    ) from None
# isort: on
from wage_spec import WAGEConfig
from wage_spec._version import installed_version
from wage_torch.backend import QtorchUnavailableWarning, get_backend, set_backend
from wage_torch.initializer import wage_init_
from wage_torch.wage_qtorch import QG, QW, C, WAGEQuantizer, shift

__version__ = installed_version()

__all__ = [
    "C",
    "QG",
    "QW",
    "QtorchUnavailableWarning",
    "WAGEConfig",
    "WAGEQuantizer",
    "get_backend",
    "set_backend",
    "shift",
    "wage_init_",
]
