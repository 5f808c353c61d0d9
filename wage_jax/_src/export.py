"""Writing a trained WAGE network's integer program: ONNX (onnxruntime) or serialized StableHLO (``jax.export``).

``export_model(model, params, config, fmt, out_path)`` builds ``integer_program`` once and writes either
form; ``export_run(run, fmt, out_path)`` does the same for a saved run loaded by ``wage_train.load_run``.
Given ``images``, the exporter also checks, on them, the one bound it cannot check statically: where a
layer's float32 sums may exceed ``2^24`` units the float training forward rounds and the integer program
does not (``wage_spec.integer_program.float32_rounding_layers``); it says so in one warning line.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wage_jax._src.integer_inference import integer_forward, integer_program
from wage_jax._src.onnx_graph import integer_onnx
from wage_spec import WAGEConfig
from wage_spec.integer_program import IntegerProgram, float32_rounding_layers

__all__ = ["FORMATS", "check_float32_agreement", "export_model", "export_run", "stablehlo_bytes"]

FORMATS = ("onnx", "stablehlo")


def stablehlo_bytes(program: IntegerProgram, platforms: Sequence[str] | None = None) -> bytes:
    """``integer_forward`` for any batch size ``N`` as ``jax.export`` serialized StableHLO.

    Load it with ``jax.export.deserialize(data).call(images)`` (float32 ``(N, *input_shape)`` -> int32 logits)
    in any process with jax; nothing of this project is needed there.

    Args:
        program: the integer program (its codes become constants of the module).
        platforms: ``jax.export``'s lowering platforms; default: the current backend.
    """
    (n,) = jax.export.symbolic_shape("N")
    spec = jax.ShapeDtypeStruct((n, *program.input_shape), jnp.float32)
    exported = jax.export.export(jax.jit(partial(integer_forward, program)), platforms=platforms)(spec)
    return bytes(exported.serialize())


def check_float32_agreement(program: IntegerProgram, images: Any) -> list[str]:
    """The layers whose float32 sums may round on ``images`` (see the module docstring), with one warning line."""
    risky = float32_rounding_layers(program, np.asarray(images, np.float32))
    if risky:
        warnings.warn(f"layers {', '.join(risky)}: float32 sums exceed 2^24 units on the given images, where the "
                      "float training forward rounds and the integer program does not", stacklevel=2)
    return risky


def export_model(model: Any, params: Mapping, config: WAGEConfig, fmt: str, out_path: str | os.PathLike,
                 *, images: Any = None, requantize: str = "qlinear") -> IntegerProgram:
    """Write the integer program of a trained ``wage_jax.models`` network to ``out_path``.

    Args:
        model, params, config: as ``integer_program`` takes them.
        fmt: ``"onnx"`` (an ONNX model with integer operators; needs the ``export`` extra) or ``"stablehlo"``
            (``jax.export`` serialized bytes).
        out_path: the file to write.
        images: optional float32 model inputs ``(N, ...)``: they set the program's input shape (else inferred,
            see ``integer_program``) and the float32 bound is checked on them (``check_float32_agreement``).
        requantize: the ONNX form's rescale, ``"qlinear"`` or ``"exact"`` (``integer_onnx``).

    Returns:
        the exported ``IntegerProgram`` (its ``logit_exponent`` scales the int32 logits to the float ones).

    Raises:
        ValueError: ``fmt`` unknown, or the network has no integer form (``integer_program``'s one line).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    program = integer_program(model, params, config, None if images is None else np.shape(images)[1:])
    if images is not None:
        check_float32_agreement(program, images)
    data = integer_onnx(program, requantize).SerializeToString() if fmt == "onnx" else stablehlo_bytes(program)
    with open(out_path, "wb") as f:
        f.write(data)
    return program


def export_run(run: Any, fmt: str, out_path: str | os.PathLike, *, images: Any = None) -> IntegerProgram:
    """``export_model`` for a saved run (``wage_train.load_run``'s ``LoadedRun``: ``model``, ``params``, ``wage``).

    ``images`` are model inputs (``run.preprocess(raw)``). A torch run or a float baseline is refused in one line.
    """
    if getattr(run, "framework", "jax") != "jax" or run.params is None:
        raise ValueError("export needs a JAX run (a torch run has no Flax params)")
    if run.wage is None:
        raise ValueError("export needs a WAGE run: a --float run has no integer form")
    return export_model(run.model, run.params, run.wage, fmt, out_path, images=images)
