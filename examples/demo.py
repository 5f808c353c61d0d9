"""A short tour of the WAGE API in both frameworks, side by side (placeholder main job)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

import wage_jax
import wage_torch


def main() -> None:
    rng = np.random.default_rng(0)
    w = rng.uniform(-1, 1, (4, 6)).astype(np.float32)
    g = rng.standard_normal((4, 6)).astype(np.float32)
    wt, gt = torch.from_numpy(w), torch.from_numpy(g)
    rows = [
        ("QW(w, 2)", wage_torch.QW(wt, 2).numpy(), jax.jit(wage_jax.QW, static_argnums=1)(jnp.asarray(w), 2)),
        ("QG(g, 8, lr=8)", wage_torch.QG(gt, 8, 8.0).numpy(), wage_jax.QG(jnp.asarray(g), 8, 8.0)),
        ("shift(g)", wage_torch.shift(gt).numpy(), wage_jax.shift(jnp.asarray(g))),
        ("C(w, 2)", wage_torch.C(wt, 2).numpy(), wage_jax.C(jnp.asarray(w), 2)),
    ]
    for name, a, b in rows:
        same = np.array_equal(np.asarray(a).view(np.int32), np.asarray(b).view(np.int32))
        print(f"{name:16s} torch == jax bit for bit: {same}; first row {np.asarray(b)[0]}")


if __name__ == "__main__":
    main()
