"""Point qtorch's just-in-time C++ build at the cache that ``scripts/setup.sh`` warmed.

qtorch compiles its kernels at first import (about 25 s) into ``TORCH_EXTENSIONS_DIR``. Set-up builds
them once into ``<venv>/torch_extensions``; defaulting to that folder here means any process using
the environment finds the build, however it was started. ``ninja`` comes as a wheel into the venv's
``bin``, which is not on ``PATH`` when the interpreter is called by its full path.
"""

from __future__ import annotations

import os
import shutil
import sys

os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
if shutil.which("ninja") is None:
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
