"""Which kernel computes wage_torch's fixed-point quantization: qtorch (default) or plain torch.

* ``"qtorch"``: QPyTorch's C++ kernels (the documented module "uses QPyTorch's quantizer"). On CPU
  this is the contract (docs/contract.md §1); on CUDA qtorch's kernel rounds ties away from zero,
  other bits. Needs a C++ compiler and ninja at first import (a ~25 s build, cached).
* ``"torch"``: ``wage_torch.torch_kernels``, the CPU kernel's bits written with torch operations, on
  any device (CPU, CUDA, MPS), no build; stochastic rounding consumes the same ``torch.rand_like``
  draws as qtorch, so a seeded run gives the same bits on either backend.

Chosen by ``set_backend`` or, before the first quantization, the environment variable
``WAGE_TORCH_BACKEND=torch|qtorch``. qtorch is imported only when the qtorch backend is first used;
when it cannot be imported or built, wage_torch falls back to the torch backend with one
``QtorchUnavailableWarning``.
"""

from __future__ import annotations

import os
import warnings
from types import ModuleType

__all__ = ["BACKENDS", "ENV_VAR", "QtorchUnavailableWarning", "get_backend", "qtorch_modules", "set_backend"]

BACKENDS = ("qtorch", "torch")  # the names set_backend accepts
ENV_VAR = "WAGE_TORCH_BACKEND"  # the environment variable read by the first get_backend()

_state: dict[str, object] = {"backend": None, "qtorch": None, "warned": False}


class QtorchUnavailableWarning(UserWarning):
    """qtorch could not be imported or built; wage_torch uses its torch backend instead."""


def _check_name(name: object, source: str) -> str:
    """``name`` if it is one of ``BACKENDS``; otherwise a ValueError naming ``source``."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    return name


def qtorch_modules() -> tuple[ModuleType, ModuleType] | None:
    """qtorch's modules for the qtorch backend, imported (and if needed built) on the first call.

    Returns:
        ``(qtorch, qtorch.quant)``, or None when qtorch cannot be imported or built (then one
        ``QtorchUnavailableWarning`` says why, and later calls return None at once).

    References:
        docs/torch-backends.md (the build's environment and the fallback).

    Examples:
        >>> modules = qtorch_modules()
        >>> modules is None or modules[1].__name__ == "qtorch.quant"
        True
    """
    if _state["qtorch"] is None:
        from wage_torch._qtorch_env import qtorch_build_environment

        try:
            with qtorch_build_environment():
                import qtorch
                import qtorch.quant
        except Exception as error:  # ImportError, or the build's RuntimeError/OSError/subprocess errors
            _state["qtorch"] = False
            if not _state["warned"]:
                _state["warned"] = True
                first_line = (str(error).strip().splitlines() or [""])[0]
                warnings.warn(
                    f"qtorch could not be imported or built ({type(error).__name__}: {first_line}); wage_torch "
                    f"uses its torch backend (the same bits as qtorch's CPU kernel). Set {ENV_VAR}=torch to "
                    "choose it and silence this warning.",
                    QtorchUnavailableWarning,
                    stacklevel=3,
                )
        else:
            _state["qtorch"] = (qtorch, qtorch.quant)
    return _state["qtorch"] or None


def set_backend(name: str) -> str:
    """Choose the kernel of every later quantization: ``"qtorch"`` or ``"torch"``.

    ``"qtorch"`` imports (and if needed builds) qtorch now; when that fails the torch backend is used
    and ``QtorchUnavailableWarning`` is issued once.

    Args:
        name: ``"qtorch"`` (QPyTorch's C++ kernels) or ``"torch"`` (``wage_torch.torch_kernels``).

    Returns:
        the backend in use from now on: ``name``, or ``"torch"`` when qtorch is unavailable.

    Raises:
        ValueError: ``name`` is not ``"qtorch"`` or ``"torch"``.

    References:
        docs/torch-backends.md; docs/contract.md §1 (both kernels give its bits on CPU).

    Examples:
        >>> previous = get_backend()
        >>> set_backend("torch")
        'torch'
        >>> set_backend(previous) == previous
        True
    """
    name = _check_name(name, "name")
    if name == "qtorch" and qtorch_modules() is None:
        name = "torch"
    _state["backend"] = name
    return name


def get_backend() -> str:
    """The backend in use, resolving ``WAGE_TORCH_BACKEND`` (default ``"qtorch"``) on first call.

    Returns:
        ``"qtorch"`` or ``"torch"``.

    Raises:
        ValueError: ``WAGE_TORCH_BACKEND`` holds another value.

    References:
        docs/torch-backends.md.

    Examples:
        >>> get_backend() in BACKENDS
        True
    """
    if _state["backend"] is None:
        set_backend(_check_name(os.environ.get(ENV_VAR) or "qtorch", f"the environment variable {ENV_VAR}"))
    return _state["backend"]  # type: ignore[return-value]
