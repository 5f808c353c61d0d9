"""The environment of qtorch's just-in-time C++ build, set only while qtorch is first imported.

qtorch compiles its kernels at first import (about 25 s) into ``TORCH_EXTENSIONS_DIR``. Set-up builds
them once into ``<venv>/torch_extensions`` with the venv's own ``ninja`` (a wheel in the venv's
``bin``). ``qtorch_build_environment`` is entered around that one import, never at ``import
wage_torch``, and restores ``os.environ`` afterwards (importing wage_torch changes no environment
variable):

* ``TORCH_EXTENSIONS_DIR`` defaults to ``<venv>/torch_extensions``, so any process using the
  environment finds the build, however it was started;
* the venv's ``bin`` goes first on ``PATH`` when it holds ``ninja``: the cache is built and checked by
  the same ninja whatever ninja the user's ``PATH`` holds (a different ninja version rewrites the
  build log and recompiles everything, about 18 s, silently);
* a build that does happen is announced with a ``QtorchBuildWarning`` giving its reason and duration.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator

__all__ = ["QtorchBuildWarning", "extensions_dir", "has_build", "qtorch_build_environment"]

_BUILD_SECONDS = 2.0  # an import slower than this compiled something (a cached import takes ~0.1 s)


class QtorchBuildWarning(UserWarning):
    """qtorch compiled its C++ kernels at import (the message gives why and how long)."""


def extensions_dir() -> str:
    """The folder qtorch's build uses: ``TORCH_EXTENSIONS_DIR``, else ``<venv>/torch_extensions``."""
    return os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(sys.prefix, "torch_extensions")


def has_build(folder: str | None = None) -> bool:
    """Whether ``folder`` (default :func:`extensions_dir`) holds a qtorch build (it may still be out of date)."""
    return os.path.exists(os.path.join(folder or extensions_dir(), "quant_cpu", "quant_cpu.so"))


def _venv_ninja_dir() -> str | None:
    bindir = os.path.dirname(sys.executable)
    return bindir if shutil.which("ninja", path=bindir) else None


@contextlib.contextmanager
def qtorch_build_environment() -> Iterator[None]:
    """Set ``TORCH_EXTENSIONS_DIR`` and ``PATH`` for qtorch's build, announce a build, then restore both."""
    saved = {k: os.environ.get(k) for k in ("TORCH_EXTENSIONS_DIR", "PATH")}
    folder = extensions_dir()
    os.environ["TORCH_EXTENSIONS_DIR"] = folder
    ninja_dir = _venv_ninja_dir()
    if ninja_dir is not None:
        os.environ["PATH"] = ninja_dir + os.pathsep + (saved["PATH"] or "")
    ninja = shutil.which("ninja") or "no ninja on PATH"
    cached = has_build(folder)
    start = time.perf_counter()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    seconds = time.perf_counter() - start
    if seconds > _BUILD_SECONDS:
        reason = (
            "its cached build was out of date (sources, compiler flags or the ninja version changed)"
            if cached
            else "no cached build was found"
        )
        warnings.warn(
            f"qtorch compiled its C++ kernels in {seconds:.1f} s into {folder} because {reason} (ninja: {ninja}); "
            "later imports reuse the build",
            QtorchBuildWarning,
            stacklevel=4,
        )
