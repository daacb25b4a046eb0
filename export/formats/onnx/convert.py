"""TensorFlow -> ONNX for one tower (tf2onnx), our graph rewrites (onnx_optimize: LayerNormalization, the attention
scale folded, q/k/v in one MatMul), then ONNX Runtime's own tools for lower precisions.

ONNX models take NCHW `pixel_values` / int32 `input_ids` with a dynamic batch axis. Opset 17 (tf2onnx 1.17 stops at
18).

Precisions:
  fp32          tf2onnx's graph
  fp16          float16 weights and compute, float32 in/out (onnxruntime.transformers.float16)
  dynamic-int8  int8 weights of MatMul and the token table, activations quantized on the fly (quantize_dynamic):
                s8 weights at 7 bits, u8 at 8 bits in the first layers where those miss 0.999 (formats/onnx/dynamic.py)
  int8          static QDQ from calibration samples, MatMul, Gemm, Conv and Gather only: quantizing the LayerNorm
                mean (GlobalAveragePool / ReduceMean) fails "out of computation range"; u8 activations with s8
                weights, as s8s8 QDQ ran 6x slower on x86 (docs/architecture.md). Gemm because quant_pre_process fuses
                MatMul+Add into Gemm (MatMulAddFusion): without it, 6 of the 8 matmuls per layer of the demo CLIP
                stayed float (image tower 3.66 MB -> 1.40 MB, ~11 -> ~4 ms, same cosine). Gather because the token
                table is most of a text tower's weights (ViT-B/32: 101 of 253 MB): left float, text int8 was larger
                than fp16; ONNX Runtime drops the DequantizeLinear -> Gather -> QuantizeLinear and gathers the uint8
                table directly
  int4          4-bit block-quantized MatMul weights (MatMulNBits, block 32, symmetric); the first quarter to half of
                the layers, the projection and the token table at int8 (clipedge.export.formats.int4)
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx

from clipedge.export.formats.onnx.dynamic import quantize_dynamic_int8
from clipedge.export.formats.onnx.from_tf import tf_function_to_onnx
from clipedge.export.formats.onnx.optimize import optimize_graph
from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.towers import TowerSpec, tower_spec
from clipedge.runtime.errors import ExportError
from clipedge.runtime.precisions import available, precision

__all__ = ["ONNX_OPSET", "ONNX_PRECISIONS", "STATIC_INT8_OPS", "StaticInt8", "convert_onnx"]

log = logging.getLogger(__name__)

ONNX_OPSET = 17
ONNX_PRECISIONS = tuple(p for p in available("onnx") if precision(p).fixed)
STATIC_INT8_OPS = ("MatMul", "Gemm", "Conv", "Gather")  # what int8 quantizes (see the module docstring)


class _NoPreprocessingAdvice(logging.Filter):
    """onnxruntime's quantizers log "Please consider to run pre-processing before quantization" on the root logger,
    twice per file, at warning level, so a quiet export printed four of them. The advice is for the quantizer's
    callers, not for clipedge's users: the static path runs `quant_pre_process`; the dynamic path quantizes the graph
    our optimizer already fused (pre-processing would undo nothing it needs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("Please consider") and "onnxruntime" in record.pathname)


@contextlib.contextmanager
def _quantizer_advice_hidden() -> Iterator[None]:
    root, advice = logging.getLogger(), _NoPreprocessingAdvice()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _to_fp32_onnx(spec: TowerSpec) -> onnx.ModelProto:
    tower = spec.tower
    try:
        proto = tf_function_to_onnx(spec.function("onnx", None), ONNX_OPSET)
    except Exception as err:  # tf2onnx raises assorted exception types
        raise ExportError(f"ONNX conversion of the {tower} tower failed: {err}") from err
    proto.graph.name = spec.signature
    log.debug("%s tower graph rewrites: %s", tower, optimize_graph(proto))
    return proto


def _to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: callers feed and read float32 whatever the weights are.
    return convert_float_to_float16(proto, keep_io_types=True)


class _Feeds:
    """onnxruntime's CalibrationDataReader protocol over a dict of arrays, one sample at a time."""

    def __init__(self, calibration: Mapping[str, np.ndarray]) -> None:
        from clipedge.export.formats.tflite.convert import per_sample_feeds

        self._items = iter(per_sample_feeds(calibration, "int8"))

    def get_next(self):
        return next(self._items, None)


def _to_static_int8(proto: onnx.ModelProto, tmp: Path, calibration: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    source, prepared, target = tmp / "fp32.onnx", tmp / "prepared.onnx", tmp / "int8.onnx"
    _prepare(proto, source, prepared)
    _quantize_static(prepared, target, _Feeds(calibration))
    return onnx.load(target)


def _prepare(proto: onnx.ModelProto, source: Path, prepared: Path) -> None:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx.save(proto, source)
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)  # symbolic shapes fail on tf2onnx graphs


def _quantize_static(prepared: Path, target: Path, feeds: _Feeds | None, exclude: list[str] | None = None,
                     cache: Path | None = None) -> None:
    """The int8 precision's quantize_static; `exclude` keeps those nodes float, `cache` keeps the calibrated ranges
    (with a cache hit, `feeds` may be None)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    # reduce_range (7-bit weights): u8 x s8 on AVX2-only CPUs saturates, as for dynamic-int8 (_to_dynamic_int8)
    quantize_static(str(prepared), str(target), feeds, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(STATIC_INT8_OPS), per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude or [],
                    calibration_cache_path=str(cache) if cache is not None else None)


class StaticInt8:
    """The int8 precision of one fp32 ONNX model, calibrated once, re-quantized with chosen nodes kept in float
    (ONNX Runtime's `nodes_to_exclude`): what `auto` searches. `nodes` lists (name, op type) of the quantizable
    nodes (STATIC_INT8_OPS)."""

    def __init__(self, fp32_model: bytes, calibration: Mapping[str, np.ndarray]) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="clipedge-onnx-auto-")
        tmp = Path(self._tmp.name)
        self._prepared, self._cache = tmp / "prepared.onnx", tmp / "calibration.json"
        _prepare(onnx.load_from_string(fp32_model), tmp / "fp32.onnx", self._prepared)
        graph = onnx.load(self._prepared).graph
        self.nodes = [(n.name, n.op_type) for n in graph.node if n.op_type in STATIC_INT8_OPS]
        self._quantize([], _Feeds(calibration))  # calibrates and fills the cache

    def _quantize(self, exclude: list[str], feeds: _Feeds | None) -> bytes:
        target = Path(self._tmp.name) / "int8.onnx"
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                _quantize_static(self._prepared, target, feeds, exclude, self._cache)
        except Exception as err:  # onnxruntime's quantizers raise assorted types
            raise ExportError(f"ONNX int8 quantization (float nodes {exclude}) failed: {err}") from err
        return target.read_bytes()

    def quantize(self, exclude: list[str]) -> bytes:
        return self._quantize(exclude, None)

    def close(self) -> None:
        self._tmp.cleanup()


def _to_int4(proto: onnx.ModelProto, calibration: Mapping[str, np.ndarray] | None) -> onnx.ModelProto:
    from clipedge.export.formats.int4 import quantize_int4_onnx  # the recipe and its measurements live there

    return quantize_int4_onnx(proto, calibration)


def convert_onnx(model: CLIPEncoder | TowerSpec, tower: str = "image", precision: str = "fp32",
                 calibration: Mapping[str, np.ndarray] | None = None, fp32_model: bytes | None = None) -> bytes:
    """Serialized .onnx for `tower` at `precision`. `calibration` (for int8) maps input names to arrays in the ONNX
    layout (NCHW pixels). `fp32_model` reuses an earlier fp32 conversion of the same tower: tf2onnx is the slow,
    memory-hungry step (each call kept ~GBs of a ViT-B/32 graph alive), the ONNX Runtime tools are cheap."""
    if precision not in ONNX_PRECISIONS:
        raise ExportError(f"ONNX precision {precision!r} is not available; choose from {ONNX_PRECISIONS}")
    spec = model if isinstance(model, TowerSpec) else tower_spec(model, tower)
    tower = spec.tower
    if fp32_model is not None:
        proto = onnx.load_from_string(fp32_model)
        optimize_graph(proto)  # a no-op on our own fp32 files; an older file gets the same graph as a new one
    else:
        proto = _to_fp32_onnx(spec)
    with tempfile.TemporaryDirectory(prefix="clipedge-onnx-") as tmp, _quantizer_advice_hidden():
        try:
            if precision == "fp16":
                proto = _to_fp16(proto)
            elif precision == "dynamic-int8":
                proto = quantize_dynamic_int8(proto, Path(tmp), calibration)
            elif precision == "int8":
                if not calibration:
                    raise ExportError("ONNX int8 needs calibration samples")
                proto = _to_static_int8(proto, Path(tmp), calibration)
            elif precision == "int4":
                proto = _to_int4(proto, calibration)
        except ExportError:
            raise
        except Exception as err:  # onnxruntime's quantizers raise assorted types
            raise ExportError(f"ONNX {precision} quantization of the {tower} tower failed: {err}") from err
    return proto.SerializeToString()
