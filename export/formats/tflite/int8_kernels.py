"""What a full-int8 .tflite needs to run on XNNPACK's int8 kernels, LiteRT's CPU fast path, and not on LiteRT's own
(reference-speed) kernels.

Measured on LiteRT 2.3.0 (ai-edge-litert) with one tiny FC -> op -> FC model per op (tests/export/
test_int8_kernels.py checks the kinds below on real exports):
  delegated in int8   FULLY_CONNECTED, CONV_2D, ADD, SUB, MUL, MEAN, SUM, REDUCE_MAX, LOGISTIC, TANH, RESHAPE,
                      TRANSPOSE, PAD, STRIDED_SLICE, QUANTIZE, DEQUANTIZE; BATCH_MATMUL only when its second operand
                      has zero point 0
  not delegated       SOFTMAX, SQUARED_DIFFERENCE, RSQRT, SQRT, L2_NORMALIZATION, GELU, DIV, EXP, ABS, HARD_SWISH,
                      GATHER (and any op on int32 / bool tensors)
Each op left to LiteRT's kernels splits the graph into one more XNNPACK partition, and its kernel is slow: ViT-B/32
text, one thread, LiteRT's int8 BATCH_MATMUL of the attention scores took 0.35 ms where XNNPACK's takes 0.012 ms,
and a SQUARED_DIFFERENCE of [50, 768] 0.24 ms (an int8 768x768 FULLY_CONNECTED on XNNPACK: 0.07 ms).

So the int8 graph squares with MUL (LayerNorm._int8_form) and the activations that are the second operand of a
BATCH_MATMUL (attention's keys and values) are quantized with zero point 0 (`zero_point_tensors`: their calibrated
range made symmetric, int8 range -128..127 times one scale, before the converter quantizes). What stays on LiteRT's
kernels per layer: SOFTMAX and RSQRT (of a [tokens, 1] tensor); the image tower's pre_layrnorm L2_NORMALIZATION and
the text tower's token GATHER once.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LITERT_KERNEL_OPS", "XNNPACK_INT8_OPS", "symmetric_range", "zero_point_tensors"]

XNNPACK_INT8_OPS = frozenset({
    "FULLY_CONNECTED", "CONV_2D", "ADD", "SUB", "MUL", "MEAN", "SUM", "REDUCE_MAX", "LOGISTIC", "TANH", "RESHAPE",
    "TRANSPOSE", "PAD", "STRIDED_SLICE", "QUANTIZE", "DEQUANTIZE", "BATCH_MATMUL"})
# Ops a CLIP int8 file keeps on LiteRT's own kernels, by design (see the module docstring): per layer SOFTMAX and
# RSQRT; once per file the image tower's L2_NORMALIZATION (pre_layrnorm, LayerNorm.l2_form) and the text tower's
# token lookup and EOT search (GATHER, EQUAL, CAST, ARG_MAX on int32 / bool).
LITERT_KERNEL_OPS = frozenset({"SOFTMAX", "RSQRT", "L2_NORMALIZATION", "GATHER", "EQUAL", "CAST", "ARG_MAX"})
_VIEWS = ("RESHAPE", "TRANSPOSE")  # int8 ops whose output keeps the input's scale and zero point


def zero_point_tensors(graph, model) -> set[int]:
    """Tensor indices (of subgraph `graph` of flatbuffer `model`, schema objects) to quantize with zero point 0: the
    second operand of every BATCH_MATMUL, and the tensors it is a RESHAPE / TRANSPOSE of (those share its scale and
    zero point in int8), back to the op that computes it."""
    from clipedge.export.formats.tflite.flatbuffer import builtin_op_names

    names = builtin_op_names()
    producer = {}
    kinds = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kinds.append(names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), ""))
        for out in op.OutputsAsNumpy():
            producer[int(out)] = i
    out: set[int] = set()
    for i, kind in enumerate(kinds):
        if kind != "BATCH_MATMUL":
            continue
        tensor = int(graph.Operators(i).Inputs(1))
        while tensor >= 0 and tensor not in out:
            out.add(tensor)
            source = producer.get(tensor)
            if source is None or kinds[source] not in _VIEWS:
                break
            tensor = int(graph.Operators(source).Inputs(0))
    return out


def symmetric_range(low: float, high: float) -> tuple[float, float]:
    """The smallest range holding [low, high] whose int8 quantization has zero point 0: [-128 s, 127 s]."""
    scale = max(-min(low, 0.0) / 128.0, max(high, 0.0) / 127.0, np.finfo(np.float32).tiny)
    return -128.0 * scale, 127.0 * scale
