"""Shared pieces of ``benchmarks.accelerator``: the time budget, the devices, bit counts, versions.

Nothing here imports more than jax and numpy (the accelerator machine has no qtorch, scikit-learn,
tqdm, matplotlib or orbax; torch is looked up, never required).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from benchmarks.common import _cpu_model as cpu_model

__all__ = [
    "Budget",
    "Devices",
    "device_memory",
    "differing_elements",
    "environment",
    "is_out_of_memory",
    "log",
    "median",
    "tree_differing_elements",
]


def log(message: str) -> None:
    """Print a progress line at once (the command's output is read while it runs)."""
    print(message, flush=True)


@dataclass
class Budget:
    """The command's wall-clock budget: phases ask ``allows(estimate_s)`` before optional work.

    ``skipped`` collects what was left out for lack of time (it goes into the report's notes).
    """

    total_s: float
    start: float = field(default_factory=time.monotonic)
    skipped: list[str] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return self.total_s - self.elapsed()

    def allows(self, estimate_s: float, what: str = "") -> bool:
        """True when ``estimate_s`` more seconds fit; otherwise records ``what`` as skipped."""
        ok = self.remaining() >= estimate_s
        if not ok and what:
            self.skipped.append(f"{what} (needs ~{estimate_s:.0f} s, {max(self.remaining(), 0):.0f} s left)")
        return ok


@dataclass(frozen=True)
class Devices:
    """The device under test (jax's default backend) and the host CPU device it is compared against."""

    accel: Any
    host: Any

    @classmethod
    def detect(cls) -> Devices:
        return cls(jax.devices()[0], jax.devices("cpu")[0])

    @property
    def same(self) -> bool:
        """True on a CPU-only machine: the CPU is compared with itself."""
        return self.accel == self.host

    @property
    def platform(self) -> str:
        return self.accel.platform


def differing_elements(a: np.ndarray, b: np.ndarray) -> int:
    """How many elements of two float32 (or bool) arrays differ in their bit patterns (all, on a shape mismatch)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return int(max(a.size, b.size))
    if a.dtype == np.float32:
        return int(np.count_nonzero(a.view(np.int32) != b.view(np.int32)))
    return int(np.count_nonzero(a != b))


def tree_differing_elements(a: Any, b: Any) -> int:
    """``differing_elements`` summed over the leaves of two pytrees of the same structure."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    if len(la) != len(lb):
        raise ValueError(f"the trees differ in structure: {len(la)} and {len(lb)} leaves")
    return sum(differing_elements(x, y) for x, y in zip(la, lb, strict=True))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an XLA error says the device ran out of memory."""
    text = str(exc)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower() or "OOM" in text


def device_memory(device: Any) -> dict[str, int] | None:
    """``device.memory_stats()`` (peak and limit, bytes), or None where the backend keeps none (the CPU)."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if not stats:
        return None
    keys = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit", "largest_alloc_size")
    return {k: int(stats[k]) for k in keys if k in stats}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _plugins() -> dict[str, str]:
    """jax's installed backend plugins (``jax-cuda13-plugin``, ``jax-cuda13-pjrt``, ``libtpu``, ...)."""
    out = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith(("jax-cuda", "jax-rocm", "libtpu", "jax-tpu")):
            out[name] = dist.version
    return dict(sorted(out.items()))


def _nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    query = "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit"
    try:
        done = subprocess.run([exe, query, "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _torch_info() -> dict[str, Any] | None:
    """torch's version and CUDA build, only when torch is installed (imported here, never required)."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken torch must not stop the JAX measurements
        return {"error": f"{type(exc).__name__}: {exc}"}
    info: dict[str, Any] = {"version": torch.__version__, "cuda build": torch.version.cuda}
    try:
        info["cuda available"] = bool(torch.cuda.is_available())
        if info["cuda available"]:
            info["device"] = torch.cuda.get_device_name(0)
    except Exception as exc:  # noqa: BLE001
        info["cuda available"] = f"error: {exc}"
    return info


def environment(devices: Devices) -> dict[str, Any]:
    """The device, the host and every version that the figures depend on."""
    accel = devices.accel
    env: dict[str, Any] = {
        "backend": jax.default_backend(),
        "device": accel.device_kind,
        "device count": jax.device_count(),
        "platform version": getattr(accel.client, "platform_version", None),
        "host cpu": cpu_model(),
        "host cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "jax plugins": _plugins(),
        "flax": _version("flax"),
        "optax": _version("optax"),
        "torch": _torch_info(),
        "nvidia-smi": _nvidia_smi(),
        "device memory": device_memory(accel),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        "XLA_PYTHON_CLIENT_MEM_FRACTION": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
    }
    return env


def median(values: Iterable[float]) -> float:
    s = sorted(values)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
