"""Move weights between the torch and Flax models of this project (same architecture, same order).

torch keeps ``Linear`` weights as ``(out, in)`` and ``Conv2d`` as ``(out, in, kh, kw)``; Flax as
``(in, out)`` and ``(kh, kw, in, out)``. The models name their Flax layers ``conv0..`` and ``dense0..``
in forward order (:func:`layer_order`), which is the order of ``torch_model.named_parameters()``.
Needs neither torch nor a device: torch tensors are read through ``.detach().cpu()``.
"""

from __future__ import annotations

import re
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["flax_params_to_torch_weights", "flax_to_torch", "layer_order", "torch_to_flax",
           "torch_weights_to_flax_params"]


def layer_order(params: dict[str, Any]) -> list[str]:
    """The Flax layer names of ``params`` in forward order (``conv0, conv1, ..., dense0, dense1, ...``), torch's
    parameter order."""

    def key(name: str) -> tuple[int, int]:
        kind, index = re.fullmatch(r"(conv|dense)(\d+)", name).groups()
        return (0 if kind == "conv" else 1, int(index))

    return sorted(params, key=key)


def torch_to_flax(weight: Any) -> np.ndarray:
    """One torch weight (a tensor or an array) as the Flax kernel layout."""
    w = np.asarray(weight.detach().cpu() if hasattr(weight, "detach") else weight)
    return w.T if w.ndim == 2 else w.transpose(2, 3, 1, 0)


def flax_to_torch(kernel: Any) -> np.ndarray:
    """One Flax kernel as the torch weight layout."""
    k = np.asarray(kernel)
    return k.T if k.ndim == 2 else k.transpose(3, 2, 0, 1)


def torch_weights_to_flax_params(weights: list[Any], template: dict[str, Any]) -> dict[str, Any]:
    """Flax ``params`` (shaped like ``template``) holding ``weights`` (torch order and layout)."""
    names = layer_order(template)
    if len(names) != len(weights):
        raise ValueError(f"{len(weights)} torch weights for {len(names)} Flax layers")
    out = {}
    for name, w in zip(names, weights, strict=True):
        kernel = torch_to_flax(w)
        if kernel.shape != tuple(template[name]["kernel"].shape):
            expected = tuple(template[name]["kernel"].shape)
            raise ValueError(f"{name}: the torch weight gives {kernel.shape}, Flax expects {expected}")
        out[name] = {"kernel": jnp.asarray(kernel)}
    return out


def flax_params_to_torch_weights(params: dict[str, Any]) -> list[np.ndarray]:
    """The Flax kernels in torch order and layout."""
    return [flax_to_torch(params[name]["kernel"]) for name in layer_order(params)]
