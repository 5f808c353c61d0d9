"""Move weights between this project's torch and Flax models (same architecture, same layer order).

torch keeps ``Linear`` weights ``(out, in)`` and ``Conv2d`` ``(out, in, kh, kw)``; Flax ``(in, out)`` and
``(kh, kw, in, out)``. The Flax layers ``conv0..``, ``dense0..`` in forward order (:func:`layer_order`) are
torch's ``named_parameters()`` order. torch tensors are read through ``.detach().cpu()``: no torch import.
"""

from __future__ import annotations

import re
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["flax_params_to_torch_weights", "layer_order", "torch_weights_to_flax_params"]


def layer_order(params: dict[str, Any]) -> list[str]:
    """The Flax layer names of ``params`` in forward order (``conv0, conv1, ..., dense0, dense1, ...``)."""

    def key(name: str) -> tuple[bool, int]:
        kind, index = re.fullmatch(r"(conv|dense)(\d+)", name).groups()
        return kind != "conv", int(index)

    return sorted(params, key=key)


def torch_weights_to_flax_params(weights: list[Any], template: dict[str, Any]) -> dict[str, Any]:
    """Flax ``params`` shaped like ``template`` holding ``weights`` (torch order and layout); ValueError if the
    count or a shape differs."""
    names = layer_order(template)
    if len(names) != len(weights):
        raise ValueError(f"{len(weights)} torch weights for {len(names)} Flax layers")
    out = {}
    for name, w in zip(names, weights, strict=True):
        w = np.asarray(w.detach().cpu() if hasattr(w, "detach") else w)
        kernel, expected = (w.T if w.ndim == 2 else w.transpose(2, 3, 1, 0)), tuple(template[name]["kernel"].shape)
        if kernel.shape != expected:
            raise ValueError(f"{name}: the torch weight gives {kernel.shape}, Flax expects {expected}")
        out[name] = {"kernel": jnp.asarray(kernel)}
    return out


def flax_params_to_torch_weights(params: dict[str, Any]) -> list[np.ndarray]:
    """The Flax kernels of ``params`` in torch order and layout."""
    kernels = [np.asarray(params[name]["kernel"]) for name in layer_order(params)]
    return [k.T if k.ndim == 2 else k.transpose(3, 2, 0, 1) for k in kernels]
