"""Inference with integers: a trained WAGE network as an integer-only program, exported to ONNX or StableHLO.

``integer_program(model, params, config)`` reads a trained ``wage_jax.models`` network into a
``wage_spec.integer_program.IntegerProgram`` (int8 weight codes, power-of-two shifts, int32 sums);
``wage_spec.integer_program.run_integer_program`` is its NumPy reference and ``integer_forward`` its JAX
forward pass. ``export_model`` / ``export_run`` write it as ONNX (``integer_onnx``; ``float32_onnx`` is the
same network in float32, for comparison) or as ``jax.export`` StableHLO (``stablehlo_bytes``). Every form
predicts the float32 training forward's classes and integer logits exactly; ``docs/deploying.md`` says why.
ONNX needs the ``export`` extra (``onnx``, ``onnxruntime``).
"""

from wage_jax._src.export import FORMATS as _FORMATS
from wage_jax._src.export import check_float32_agreement, export_model, export_run, stablehlo_bytes
from wage_jax._src.integer_inference import integer_forward, integer_program
from wage_jax._src.onnx_graph import float32_onnx, integer_onnx

#: The export formats ``export_model`` and ``export_run`` write: ``"onnx"`` and ``"stablehlo"``.
FORMATS: tuple[str, ...] = _FORMATS

__all__ = [
    "FORMATS",
    "check_float32_agreement",
    "export_model",
    "export_run",
    "float32_onnx",
    "integer_forward",
    "integer_onnx",
    "integer_program",
    "stablehlo_bytes",
]
