"""Move weights between a torch model and a Flax model of your own design, and compare them the WAGE way.

Layouts: torch keeps ``Linear`` weights ``(out, in)`` and ``Conv2d`` weights ``(out, in, kh, kw)``; Flax keeps
kernels ``(in, out)`` and ``(kh, kw, in, out)``. Names: any; the weights pair up in order (torch's
``named_parameters()`` against the Flax parameter dict's own order, which is creation order, i.e. forward
order, for a linen model), or by an explicit ``names`` mapping. Flattening: torch flattens conv features in
``(C, H, W)`` order, Flax models usually in ``(H, W, C)``; either transpose to NCHW before flattening in the
Flax model (as ``wage_jax.models`` do) or pass ``nchw_flatten={flax_path: (C, H, W)}`` for the first dense
layer after the convolutions, whose rows are then permuted.

What to compare (docs/contract.md §3): the logits, bit for bit; and the accumulators as
``JAX == C(torch, bits_W)``: ``wage_jax.wage_sgd`` keeps them clipped while the reference clips them only
when it reads them, so the stored values differ beyond the clip range and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from wage_torch import C

__all__ = ["accumulator_differences", "flax_to_torch_weights", "torch_to_flax_params"]

Path = tuple[str, ...]


def _kernel_paths(tree: Mapping[str, Any], prefix: Path = ()) -> Iterator[Path]:
    """Leaf paths of a nested dict in its own (insertion) order, not sorted as ``jax.tree_util`` would."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _kernel_paths(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key))


def _get(tree: Mapping[str, Any], path: Path) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict[str, Any], path: Path, value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _torch_items(weights: torch.nn.Module | Mapping[str, Any]) -> list[tuple[str, np.ndarray]]:
    items = weights.named_parameters() if isinstance(weights, torch.nn.Module) else weights.items()
    return [(name, w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)) for name, w in items]


def _to_flax(w: np.ndarray) -> np.ndarray:
    if w.ndim == 2:
        return w.T
    if w.ndim == 4:
        return w.transpose(2, 3, 1, 0)
    return w  # biases and other vectors


def _to_torch(k: np.ndarray) -> np.ndarray:
    if k.ndim == 2:
        return k.T
    if k.ndim == 4:
        return k.transpose(3, 2, 0, 1)
    return k


def _nchw_rows(chw: Sequence[int]) -> np.ndarray:
    """``rows[i]``: the torch (C, H, W)-order row of the Flax (H, W, C)-order row ``i``."""
    c, h, w = (int(v) for v in chw)
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def _pairs(torch_items: list[tuple[str, np.ndarray]], paths: list[Path],
           names: Mapping[str, str | Path] | None) -> list[tuple[str, np.ndarray, Path]]:
    if names is None:
        if len(torch_items) != len(paths):
            raise ValueError(f"{len(torch_items)} torch parameters for {len(paths)} Flax parameters: pass names= "
                             f"to pair them explicitly")
        return [(n, w, p) for (n, w), p in zip(torch_items, paths, strict=True)]
    by_name = dict(torch_items)
    out = []
    for torch_name, flax_path in names.items():
        if torch_name not in by_name:
            raise KeyError(f"names: no torch parameter {torch_name!r} (have {sorted(by_name)[:6]}...)")
        path = tuple(flax_path.split("/")) if isinstance(flax_path, str) else tuple(flax_path)
        out.append((torch_name, by_name[torch_name], path))
    return out


def torch_to_flax_params(
    weights: torch.nn.Module | Mapping[str, Any],
    template: Mapping[str, Any],
    *,
    names: Mapping[str, str | Path] | None = None,
    nchw_flatten: Mapping[str | Path, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """The Flax parameters (shaped like ``template``) holding torch's weights, in Flax layouts (float32 NumPy).

    Args:
        weights: a torch module (its ``named_parameters()``) or a mapping name -> tensor, e.g. the WAGE
            accumulators of ``wage_torch.training.WAGETrainer``.
        template: the Flax parameters to fill, e.g. ``model.init(...)["params"]`` (its leaves give the shapes).
        names: torch name -> Flax path (``"dense0/kernel"`` or a tuple); default: pair in order.
        nchw_flatten: Flax kernel path -> ``(C, H, W)`` of the features flattened before it, for a model that
            flattens NHWC where torch flattens NCHW.

    Returns:
        a nested dict like ``template``; parameters ``names`` does not mention keep ``template``'s values.

    Raises:
        ValueError: counts or shapes that do not pair up (the message names both sides).
        KeyError: a name that does not exist.
    """
    paths = list(_kernel_paths(template))
    out: dict[str, Any] = {}
    for path in paths:
        _set(out, path, np.asarray(_get(template, path)))
    permute = {tuple(k.split("/")) if isinstance(k, str) else tuple(k): v for k, v in (nchw_flatten or {}).items()}
    for torch_name, w, path in _pairs(_torch_items(weights), paths, names):
        kernel = _to_flax(w.astype(np.float32))
        if path in permute:
            kernel = kernel[_nchw_rows(permute[path])]
        expected = tuple(np.shape(_get(template, path)))
        if kernel.shape != expected:
            raise ValueError(f"{torch_name} {tuple(w.shape)} gives {kernel.shape} in Flax layout; "
                             f"{'/'.join(path)} expects {expected}")
        _set(out, path, kernel)
    return out


def flax_to_torch_weights(
    params: Mapping[str, Any],
    *,
    nchw_flatten: Mapping[str | Path, Sequence[int]] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """``(flax path, weight in torch layout)`` for every parameter, in the dict's order (inverse of
    ``torch_to_flax_params``: load them with ``param.data.copy_(torch.from_numpy(w))`` in torch's order)."""
    permute = {tuple(k.split("/")) if isinstance(k, str) else tuple(k): v for k, v in (nchw_flatten or {}).items()}
    out = []
    for path in _kernel_paths(params):
        k = np.asarray(_get(params, path), np.float32)
        if path in permute:
            k = k[np.argsort(_nchw_rows(permute[path]))]
        out.append(("/".join(path), np.ascontiguousarray(_to_torch(k))))
    return out


def accumulator_differences(
    flax_params: Mapping[str, Any],
    torch_weights: torch.nn.Module | Mapping[str, Any],
    bits_W: int,
    **convert: Any,
) -> dict[str, int]:
    """How many elements of each Flax accumulator differ from ``C(torch accumulator, bits_W)``, bit for bit.

    Args:
        flax_params: the JAX accumulators (``wage_jax.wage_sgd`` keeps them clipped).
        torch_weights: the torch accumulators (``WAGETrainer.accumulators``) or a module.
        bits_W: the weight bits of ``C``.
        **convert: ``names`` / ``nchw_flatten`` as for ``torch_to_flax_params``.

    Returns:
        Flax path (``"dense0/kernel"``) -> number of differing float32 bit patterns (0 everywhere: parity).
    """
    clipped = {n: C(torch.as_tensor(w), bits_W) for n, w in _torch_items(torch_weights)}
    expected = torch_to_flax_params(clipped, flax_params, **convert)
    return {"/".join(p): int(np.count_nonzero(np.asarray(_get(flax_params, p), np.float32).view(np.uint32)
                                              != np.asarray(_get(expected, p), np.float32).view(np.uint32)))
            for p in _kernel_paths(flax_params)}
