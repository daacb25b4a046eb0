"""TensorFlow -> TFLite for one tower at one precision, builtin ops only.

Conversion goes through a SavedModel with a named signature so the .tflite keeps `encode_image` / `encode_text`
as its signature key (a single concrete function would come out as `serving_default`), and the converter freezes
every variable into a constant (no VAR_HANDLE ops, which run as NaN under XNNPACK).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.towers import tower_spec
from clipedge.runtime.errors import ExportError

__all__ = ["TFLITE_PRECISIONS", "convert_tflite", "op_names"]

log = logging.getLogger(__name__)

TFLITE_PRECISIONS = ("fp32", "fp16", "dynamic-int8")


def _configure(converter: tf.lite.TFLiteConverter, precision: str,
               representative: Callable[[], Iterable[list[np.ndarray]]] | None) -> None:
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # never Flex / Select-TF
    if precision == "fp32":
        return
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        return
    if precision == "dynamic-int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # int8 weights, float activations
        return
    raise ExportError(f"TFLite precision {precision!r} is not available; choose from {TFLITE_PRECISIONS}")


def op_names(model_bytes: bytes) -> list[str]:
    """Operator names in a .tflite (builtin names; custom/Flex ops appear by their custom name)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(model_bytes, 0)
    builtin_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names = []
    for code in model.operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.append((code.customCode or b"CUSTOM").decode() if isinstance(code.customCode, bytes)
                         else str(code.customCode))
        else:
            names.append(builtin_names.get(builtin, str(builtin)))
    return names


def convert_tflite(model: CLIPEncoder, tower: str, precision: str = "fp32", batch: int = 1,
                   representative: Callable[[], Iterable[list[np.ndarray]]] | None = None) -> bytes:
    """Serialized .tflite for `tower` ("image" | "text") at `precision`, with a fixed batch."""
    spec = tower_spec(model, tower)
    function = spec.function("tflite", batch)
    with tempfile.TemporaryDirectory(prefix="clipedge-savedmodel-") as saved:
        tf.saved_model.save(spec.module, saved, signatures={spec.signature: function.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[spec.signature])
        _configure(converter, precision, representative)
        try:
            model_bytes = converter.convert()
        except Exception as err:  # the converter raises ConverterError and plain Exceptions alike
            raise ExportError(f"TFLite conversion of the {tower} tower at {precision} failed: {err}") from err
    flex = [name for name in op_names(model_bytes) if name.startswith("Flex") or name == "CUSTOM"]
    if flex:
        raise ExportError(f"the {tower} tower at {precision} needs non-builtin ops {sorted(set(flex))}: "
                          "edge interpreters cannot run them")
    return model_bytes
