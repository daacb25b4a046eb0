"""TensorFlow -> ONNX for one tower (tf2onnx), then ONNX Runtime's own tools for lower precisions.

ONNX models take NCHW `pixel_values` / int32 `input_ids` with a dynamic batch axis. Opset 17: tf2onnx 1.17 supports
up to 18, and 17 has LayerNormalization-free graphs that every ONNX Runtime since 1.14 runs.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx

from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.towers import tower_spec
from clipedge.runtime.errors import ExportError

__all__ = ["ONNX_OPSET", "ONNX_PRECISIONS", "convert_onnx"]

log = logging.getLogger(__name__)

ONNX_OPSET = 17
ONNX_PRECISIONS = ("fp32", "fp16", "dynamic-int8")


def _to_fp32_onnx(model: CLIPEncoder, tower: str) -> onnx.ModelProto:
    import tf2onnx

    spec = tower_spec(model, tower)
    function = spec.function("onnx", None)
    try:
        proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                                 opset=ONNX_OPSET)
    except Exception as err:  # tf2onnx raises assorted exception types
        raise ExportError(f"ONNX conversion of the {tower} tower failed: {err}") from err
    proto.graph.name = spec.signature
    return proto


def _to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: callers feed and read float32 whatever the weights are.
    return convert_float_to_float16(proto, keep_io_types=True)


def _to_dynamic_int8(proto: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="clipedge-onnx-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, source)
        # MatMul holds nearly all weights; Gather is the token table. Conv (one patch embedding) stays float.
        quantize_dynamic(source, target, op_types_to_quantize=["MatMul", "Gather"], per_channel=True,
                         weight_type=QuantType.QInt8)
        return onnx.load(target)


def convert_onnx(model: CLIPEncoder, tower: str, precision: str = "fp32") -> bytes:
    """Serialized .onnx for `tower` at `precision`."""
    if precision not in ONNX_PRECISIONS:
        raise ExportError(f"ONNX precision {precision!r} is not available; choose from {ONNX_PRECISIONS}")
    proto = _to_fp32_onnx(model, tower)
    if precision == "fp16":
        proto = _to_fp16(proto)
    elif precision == "dynamic-int8":
        proto = _to_dynamic_int8(proto)
    return proto.SerializeToString()
