"""TensorFlow -> TFLite for one tower at one precision, builtin ops only.

Conversion goes through a SavedModel with a named signature so the .tflite keeps `encode_image` / `encode_text`
as its signature key (a single concrete function would come out as `serving_default`), and the converter freezes
every variable into a constant (no VAR_HANDLE ops, which run as NaN under XNNPACK).

Precisions (names and rules from clipedge.runtime.precisions, shared with the CLI and manifest):
  fp32          the float graph
  fp16          float16 weights, dequantized at load (half the size)
  dynamic-int8  int8 weights, float activations (TF converter's dynamic range mode)
  int8          full integer, calibrated; float in/out unless int8_io (TF converter's quantizer, with activation
                ranges re-measured (_int8) and the towers traced in their int8 formulation (CLIPEncoder.int8_graph))
  int16x8       int16 activations, int8 weights: ai-edge-quantizer static_wi8_ai16 with min/max calibration (TF's own
                16x8 mode fails on these graphs), float in/out: clipedge.export.formats.tflite.int16x8
  int4          4-bit blockwise weights, float activations; the first quarter to half of the layers, the projection,
                the patch conv and the token table at int8: clipedge.export.formats.int4
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from clipedge.export.formats.tflite.edge_quantizer import per_sample_feeds, quiet_quantizer
from clipedge.export.formats.tflite.flatbuffer import op_names
from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.towers import TowerSpec, tower_spec
from clipedge.runtime.errors import ExportError
from clipedge.runtime.precisions import available
from clipedge.runtime.precisions import precision as precision_row

__all__ = ["TFLITE_PRECISIONS", "convert_tflite", "io_quantization", "per_sample_feeds", "quiet_quantizer"]

log = logging.getLogger(__name__)

TFLITE_PRECISIONS = tuple(p for p in available("tflite") if precision_row(p).fixed)


def _tf_convert(spec: TowerSpec, precision: str, batch: int | None, calibration: Mapping[str, np.ndarray] | None,
                int8_io: bool) -> bytes:
    tower = spec.tower
    function = spec.function("tflite", batch)
    graph = spec.model.int8_graph() if precision == "int8" else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="clipedge-savedmodel-") as saved:
        with graph:  # the int8 formulation is traced into the SavedModel here
            tf.saved_model.save(spec.module, saved, signatures={spec.signature: function.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[spec.signature])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # never Flex / Select-TF
        if precision == "fp16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "dynamic-int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif precision == "int8":
            samples = _float_samples(per_sample_feeds(calibration, precision))
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: iter(samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter._experimental_calibrate_only = True  # noqa: SLF001 (ranges are re-measured, see _int8)
        try:
            with warnings.catch_warnings():  # calibration runs TF's deprecated tf.lite.Interpreter internally
                warnings.simplefilter("ignore", UserWarning)
                model_bytes = converter.convert()
                if precision == "int8":
                    model_bytes = _int8(model_bytes, samples, tower, int8_io)
                return model_bytes
        except Exception as err:  # the converter raises ConverterError and plain Exceptions alike
            raise ExportError(f"TFLite conversion of the {tower} tower at {precision} failed: {err}") from err


def _float_samples(samples: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    return [{k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in s.items()} for s in samples]


def _int8(calibrated: bytes, samples: list[dict[str, np.ndarray]], tower: str, int8_io: bool) -> bytes:
    """Full-int8 quantization of a calibrated float model, with its activation ranges re-measured first (what
    TFLiteConverter does with a representative dataset, but with correct ranges).

    TF 2.21's calibrator stores, for a tensor read only by an elementwise op, the union of its own range and that
    op's output range (apparently TFLite runs the op in place and the calibrator sees the shared buffer after it).
    Measured on the demo text tower: LayerNorm's `x - mean` (real range +-0.13) got the normalized output's
    +-3.9 (int8 step 0.03: nine levels for the whole input), and the attention scores (+-8) got the masked sum's
    -105..8; every out_proj and fc2 output got its residual sum's range. Here every tensor is read back from an
    interpreter that preserves all tensors (no buffer sharing, no delegate) and those ranges replace the
    calibrator's: demo text min cosine 0.52 -> 0.98 with this alone."""
    from tensorflow.lite.python import convert

    calibrated = _measure_ranges(calibrated, samples)
    io_type = tf.int8 if int8_io else tf.float32
    return convert.mlir_quantize(calibrated, input_data_type=tf.float32 if tower == "text" else io_type,
                                 output_data_type=io_type)


def _measure_ranges(calibrated: bytes, samples: list[dict[str, np.ndarray]]) -> bytes:
    """The calibrated model with each calibrated tensor's min/max replaced by the range it takes on `samples`; the
    second operands of BATCH_MATMUL get the symmetric range around it (zero point 0: int8_kernels)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from clipedge.export.formats.tflite.flatbuffer import model_view
    from clipedge.export.formats.tflite.int8_kernels import symmetric_range, zero_point_tensors

    data = bytearray(calibrated)  # the ranges are rewritten in place, through numpy views into these bytes
    graph = model_view(data).Subgraphs(0)
    ranges = {}  # tensor index -> writable views of its stored min and max (numpy views into `data`)
    for index in range(graph.TensorsLength()):
        q = graph.Tensors(index).Quantization()
        if q is not None and q.MinLength() == 1 and q.MaxLength() == 1:
            ranges[index] = (q.MinAsNumpy(), q.MaxAsNumpy())
    with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": here it is the point
        warnings.simplefilter("ignore", UserWarning)
        interpreter = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    runner = interpreter.get_signature_runner()
    low = dict.fromkeys(ranges, np.inf)
    high = dict.fromkeys(ranges, -np.inf)
    for sample in samples:
        runner(**sample)
        for index in ranges:
            try:
                values = interpreter.get_tensor(index)
            except ValueError:  # no data (an unused or constant buffer): keep the calibrator's range
                continue
            if values.size:
                low[index] = min(low[index], float(values.min()))
                high[index] = max(high[index], float(values.max()))
    centered = zero_point_tensors(graph, model_view(data))  # XNNPACK's int8 BATCH_MATMUL needs them
    for index, (stored_min, stored_max) in ranges.items():
        if np.isfinite(low[index]):
            bounds = (low[index], high[index])
            stored_min[0], stored_max[0] = symmetric_range(*bounds) if index in centered else bounds
    return bytes(data)


def _edge_quantize(float_model: bytes, signature: str, precision: str,
                   calibration: Mapping[str, np.ndarray] | None) -> bytes:
    """int16x8 and int4: ai-edge-quantizer recipes over the float .tflite, each in its own module."""
    if precision == "int16x8":
        from clipedge.export.formats.tflite.int16x8 import quantize_int16x8

        return quantize_int16x8(float_model, signature, calibration)
    from clipedge.export.formats.int4 import quantize_int4_tflite

    return quantize_int4_tflite(float_model, signature, calibration)


def convert_tflite(model: CLIPEncoder | TowerSpec, tower: str = "image", precision: str = "fp32", batch: int | None = 1,
                   calibration: Mapping[str, np.ndarray] | None = None, int8_io: bool = False,
                   variant: str = "default", fp32_model: bytes | None = None) -> bytes:
    """Serialized .tflite for `tower` ("image" | "text") at `precision`, with a fixed batch or, for batch None, a
    dynamic one (every precision: calibration feeds batch-1 samples through it); `model` may also be a ready
    TowerSpec (the classifier).

    `calibration` maps input names to arrays [N, ...] (for int8 / int16x8). `variant="gpu"` is fp32 only: LiteRT's
    GPU accelerator cannot run DEQUANTIZE, so quantized weights would split the graph."""
    if precision not in TFLITE_PRECISIONS:
        raise ExportError(f"TFLite precision {precision!r} is not available; choose from {TFLITE_PRECISIONS}")
    if (variant == "gpu" or getattr(model, "variant", "") == "gpu") and precision != "fp32":
        raise ExportError(f"the gpu variant is fp32 only (got {precision}): GPU delegates cannot run DEQUANTIZE")
    spec = model if isinstance(model, TowerSpec) else tower_spec(model, tower, variant)
    tower = spec.tower
    if "tflite" in precision_row(precision).from_fp32:  # ai-edge-quantizer starts from the float .tflite
        float_model = fp32_model if fp32_model is not None else _tf_convert(spec, "fp32", batch, None, False)
        model_bytes = _edge_quantize(float_model, spec.signature, precision, calibration)
    else:
        model_bytes = _tf_convert(spec, precision, batch, calibration, int8_io)
    flex = [name for name in op_names(model_bytes) if name.startswith("Flex") or name == "CUSTOM"]
    if flex:
        raise ExportError(f"the {tower} tower at {precision} needs non-builtin ops {sorted(set(flex))}: "
                          "edge interpreters cannot run them")
    return model_bytes


def io_quantization(model_bytes: bytes, signature: str) -> dict[str, dict[str, float]]:
    """{tensor name: {"scale", "zero_point"}} for the signature's integer-quantized inputs and outputs (int8_io)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model_bytes).get_signature_runner(signature)
    out: dict[str, dict[str, float]] = {}
    for details in (runner.get_input_details(), runner.get_output_details()):
        for name, d in details.items():
            scale, zero_point = d.get("quantization", (0.0, 0))
            if scale and np.dtype(d["dtype"]).kind in "iu" and name != "input_ids":
                out[name] = {"scale": float(scale), "zero_point": int(zero_point)}
    return out
