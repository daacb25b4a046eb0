"""What a precision is, in one table: the formats it exists in, whether it needs calibration samples, whether it is
built from the tower's fp32 file, and the fidelity it must reach. Export plans, converts, judges and searches (`auto`)
from this table; the runtime and the manifest read the names from it.

Pure data, no numpy: `clipedge.runtime` imports it on a Pi.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Precision", "PRECISIONS", "PRECISION_NAMES", "WARN_BELOW", "FIDELITY_FLAGS", "DEFAULT_PRECISIONS",
           "precision", "available", "auto_candidates"]

# Below this min cosine on the held-out samples, a precision without a floor (the integer family) is kept but
# flagged "low-fidelity": reported, never silently recommended.
WARN_BELOW = 0.99
# The flags that say a file missed its fidelity (Precision.flags): `clipedge report` never recommends such a file.
FIDELITY_FLAGS = ("below-floor", "low-fidelity")


@dataclass(frozen=True)
class Precision:
    name: str  # as in the CLI, file names and the manifest
    formats: tuple[str, ...]  # "tflite", "onnx"
    description: str
    calibrated: bool = False  # needs representative samples (activation ranges)
    # Formats in which this precision is made from the tower's fp32 file rather than converted from TensorFlow again
    # (ONNX Runtime's quantizers and ai-edge-quantizer start from the float file; tf2onnx runs once per tower).
    from_fp32: tuple[str, ...] = ()
    floor: float | None = None  # min cosine every held-out sample must reach, else "below-floor"
    float_weights: bool = False  # fp32 / fp16: what `auto` falls back to when nothing quantized meets its target
    fixed: bool = True  # False for `auto`, which picks among the fixed precisions per tower
    # Formats whose files quantize activations with one range per call, taken over the whole batch (ONNX Runtime's
    # DynamicQuantizeLinear): a row's result would depend on the rows sent with it, so the runtime sends these files
    # one row per call (clipedge.runtime.runner), and the same image gets the same embedding alone or in any batch.
    per_call_ranges: tuple[str, ...] = ()

    def flags(self, cosine_min: float) -> list[str]:
        """The manifest's flags for a measured min cosine: "below-floor" under the floor, "low-fidelity" under
        WARN_BELOW for a precision without a floor."""
        if self.floor is not None:
            return ["below-floor"] if cosine_min < self.floor else []
        return ["low-fidelity"] if cosine_min < WARN_BELOW else []


PRECISIONS: tuple[Precision, ...] = (
    Precision("fp32", ("tflite", "onnx"), "the float graph, the file the others are made from", floor=0.9999,
              float_weights=True),
    Precision("fp16", ("tflite", "onnx"), "float16 weights (TFLite: dequantized at load; ONNX: fp16 compute)",
              from_fp32=("onnx",), floor=0.9999, float_weights=True),
    Precision("dynamic-int8", ("tflite", "onnx"), "int8 weights, activations quantized on the fly",
              from_fp32=("onnx",), per_call_ranges=("onnx",)),
    Precision("int8", ("tflite", "onnx"), "full integer, calibrated activation ranges", calibrated=True,
              from_fp32=("onnx",)),
    Precision("int16x8", ("tflite",), "int16 activations, int8 weights (ai-edge-quantizer static_wi8_ai16, min/max "
              "calibration)", calibrated=True, from_fp32=("tflite",)),
    # int4 uses its calibration samples too (the TFLite token table's range; how many layers stay 8-bit), but
    # without them falls back to the first quarter of the layers at 8 bits: not `calibrated`.
    Precision("int4", ("tflite", "onnx"), "4-bit blockwise weights, the first layers, projection and token table "
              "8-bit, float activations", from_fp32=("tflite", "onnx"), per_call_ranges=("onnx",)),
    Precision("auto", ("tflite", "onnx"), "per tower, the smallest fastest file (fixed or per-layer mix) that "
              "meets a fidelity target", calibrated=True, fixed=False, per_call_ranges=("onnx",)),
)
PRECISION_NAMES = tuple(p.name for p in PRECISIONS)
# What `clipedge export` writes without --precisions: every fixed precision (auto is asked for by name).
DEFAULT_PRECISIONS = tuple(p.name for p in PRECISIONS if p.fixed)
_BY_NAME = {p.name: p for p in PRECISIONS}


def precision(name: str) -> Precision:
    """The table's row; KeyError for an unknown name (callers turn it into their own error with the choices)."""
    return _BY_NAME[name]


def available(fmt: str) -> tuple[str, ...]:
    """The precisions a format can be exported in, `auto` included, in table order."""
    return tuple(p.name for p in PRECISIONS if fmt in p.formats)


def auto_candidates(fmt: str) -> tuple[str, ...]:
    """The fixed precisions `auto` scores against its per-layer mixes: the quantized ones, then the float fallbacks
    (fp16 before fp32)."""
    fixed = [p for p in PRECISIONS if p.fixed and fmt in p.formats]
    return tuple([p.name for p in fixed if not p.float_weights] + [p.name for p in reversed(fixed) if p.float_weights])
