"""Integer execution against the float32 path: step time and XLA temp memory side by side.

One WAGE training step (forward, backward, ``C(w - QG(g))``) of the MLP and of VGG7, each compiled
with ``integer=False`` (float32 products) and ``integer=True`` (int8 products, int32 sums; see
``wage_jax.integer``), in the paper's 2-8-8-8 modes. Prints the median step time, the ratio, XLA's
temporary buffer size and the number of int8 and float32 dots/convolutions in the optimized HLO.

    python -m benchmarks.integer --quick

Measured on the shared 2-core CPU (XLA CPU, --quick, 2026-11-29): MLP 64-256-10 batch 32 float 1.43 ms,
integer 7.09 ms; VGG7 at widths (16, 32, 64) batch 8 float 83.9 ms, integer 213 ms (19 of 23 products on
integers, the 4 conv kernel gradients over 8*32*32 terms stay float32). XLA's CPU backend has no fast
int8 matmul, so the integer mode is slower there; the target is int8 tensor cores (GPU) and MXUs (TPU).
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wage_jax import QG, C
from wage_jax.models import MLP, VGG7
from wage_spec import WAGEConfig

CONFIG = WAGEConfig()  # 2-8-8-8, G and E stochastic


def _step_fn(model, cfg: WAGEConfig, lr: float = 8.0):
    def step(params, x, y, key):
        k_model, k_grad = jax.random.split(key)

        def loss_fn(p):
            return 0.5 * jnp.sum((model.apply({"params": p}, x, rngs={"wage": k_model}) - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        leaves, treedef = jax.tree_util.tree_flatten(grads)
        keys = jax.random.split(k_grad, len(leaves))
        new = [C(w - QG(g, cfg.bits_G, lr, cfg.G_mode, key=k), cfg.bits_W)
               for w, g, k in zip(jax.tree_util.tree_leaves(params), leaves, keys, strict=True)]
        return jax.tree_util.tree_unflatten(treedef, new), loss

    return step


def _hlo_products(text: str) -> dict[str, int]:
    """Dots and convolutions of the optimized HLO by result dtype (s32: integer operands, int32 sums).

    The optimized HLO does not print operand types; tests/test_jax_integer.py checks in StableHLO
    that every s32 product has int8 operands.
    """
    counts = {"s32": 0, "f32": 0}
    for line in text.splitlines():
        m = re.search(r"= (\w+)\[[^\]]*\]\S* (dot|convolution)\(", line)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def measure(model_factory, x_shape: tuple[int, ...], steps: int) -> dict[str, dict[str, Any]]:
    """Both modes of one model: median step seconds, XLA temp bytes, HLO product counts."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, x_shape), jnp.float32)
    y = jax.nn.one_hot(rng.integers(0, 10, x_shape[0]), 10)
    out = {}
    for integer in (False, True):
        model = model_factory(integer)
        params = model.init(jax.random.key(0), x)["params"]
        params = jax.tree_util.tree_map(lambda w: C(w, CONFIG.bits_W), params)
        compiled = jax.jit(_step_fn(model, CONFIG)).lower(params, x, y, jax.random.key(1)).compile()
        mem = compiled.memory_analysis()
        p = params
        p, loss = compiled(p, x, y, jax.random.key(1))
        jax.block_until_ready(loss)
        times = []
        for i in range(steps):
            t0 = time.perf_counter()
            p, loss = compiled(p, x, y, jax.random.key(2 + i))
            jax.block_until_ready(loss)
            times.append(time.perf_counter() - t0)
        out["integer" if integer else "float"] = {
            "step_s": float(np.median(times)),
            "temp_bytes": int(getattr(mem, "temp_size_in_bytes", -1)) if mem is not None else -1,
            "products": _hlo_products(compiled.as_text()),
        }
    return out


def vgg7_integer_vs_float(batch: int = 128, steps: int = 10, widths=(128, 256, 512), hidden: int = 1024) -> dict:
    """The paper's VGG7 (32x32x3) in both modes at ``batch``: step seconds, images/s, temp memory, HLO counts.

    For the accelerator benchmark. At the paper's sizes some weight-gradient products exceed the static
    float32 exactness bound and stay float32 (``wage_jax.integer``): the HLO counts say how many.
    """
    res = measure(lambda integer: VGG7(config=CONFIG, widths=widths, hidden=hidden, integer=integer),
                  (batch, 32, 32, 3), steps)
    for mode in res.values():
        mode["images_per_s"] = batch / mode["step_s"]
    res["speedup"] = res["float"]["step_s"] / res["integer"]["step_s"]
    return res


def _print(name: str, res: dict) -> None:
    f, i = res["float"], res["integer"]
    print(f"{name:<28} float {f['step_s'] * 1e3:9.2f} ms  integer {i['step_s'] * 1e3:9.2f} ms  "
          f"ratio float/integer {f['step_s'] / i['step_s']:5.2f}  temp MiB {f['temp_bytes'] / 2**20:7.2f} / "
          f"{i['temp_bytes'] / 2**20:7.2f}  products float {f['products']}  integer {i['products']}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and few steps (CPU smoke)")
    args = ap.parse_args(argv)
    steps = 5 if args.quick else 20
    print(f"backend {jax.default_backend()}; WAGE 2-8-8-8 (G, E stochastic); median of {steps} steps")
    _print("MLP 64-256-10 batch 32", measure(lambda i: MLP(config=CONFIG, hidden=(256,), integer=i), (32, 64), steps))
    if args.quick:
        vgg = measure(lambda i: VGG7(config=CONFIG, widths=(16, 32, 64), hidden=128, integer=i), (8, 32, 32, 3), steps)
        _print("VGG7/8 widths batch 8", vgg)
    else:
        _print("VGG7 batch 16", vgg7_integer_vs_float(16, steps))


if __name__ == "__main__":
    main()
