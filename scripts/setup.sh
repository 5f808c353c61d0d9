#!/usr/bin/env bash
# Set up a virtual environment in .venv: torch first (the CPU wheel, unless you brought your own),
# then this project in editable mode, then qtorch's C++ extension built once into .venv/torch_extensions.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${WAGE_TORCH_SPEC:-torch==2.13.0}

if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
  echo "setup: no C++ compiler on PATH (qtorch builds its kernels with one): install g++ (e.g. apt-get install g++)." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null

# torch first: with no torch installed, resolving plain "torch" would pull a multi-GB CUDA build.
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing $TORCH_SPEC"
  "$VPY" -m pip install -q "$TORCH_SPEC"
fi
"$VPY" -m pip install -q -e ".[torch,train,export,dev]"

# ninja ships as a wheel; put the venv's bin first so torch.utils.cpp_extension finds it.
export PATH="$PWD/.venv/bin:$PATH"
export TORCH_EXTENSIONS_DIR="$PWD/.venv/torch_extensions"
if ! command -v ninja >/dev/null 2>&1; then
  echo "setup: ninja is not on PATH (qtorch needs it to build its kernels): pip install ninja." >&2
  exit 1
fi
start=$(date +%s)
if ! "$VPY" -c "import qtorch.quant" >/tmp/wage_qtorch_build.log 2>&1; then
  echo "setup: qtorch's C++ extension failed to build (log: /tmp/wage_qtorch_build.log):" >&2
  tail -5 /tmp/wage_qtorch_build.log >&2
  exit 1
fi
echo "setup: qtorch kernels ready in $(( $(date +%s) - start )) s (cache: $TORCH_EXTENSIONS_DIR)"
