"""The ONNX dynamic-int8 recipe: int8 weights of every weight MatMul and of the token table's Gather, activations
quantized on the fly by ONNX Runtime (one uint8 range per tensor); the patch embedding's Conv stays float.

Weights are s8 at 7 bits (reduce_range): on x86 CPUs without VNNI (AVX2 only), ONNX Runtime's u8 x s8 MatMulInteger
uses VPMADDUBSW, which saturates the 16-bit sum of two products: the small reference CLIP's text tower fell to min
cosine 0.990 on such a CPU (AMD EPYC, AVX2), 0.999+ with 7-bit weights or on a VNNI CPU. The file is made on one
machine and run on another, so it must hold on both (docs/architecture.md, numerical traps).

u8 weights at 8 bits never saturate (u8 x u8 kernels widen to 16 bits before multiplying) and have twice the levels,
but run slower on that CPU (all of ViT-B/32's text tower in u8: 15-19% slower at batch 1, 2 threads). So: where the
7-bit file misses TARGET_COSINE on the calibration samples, the projection and then the first layers, one at a time
(the sensitivity falls with depth, as for int4), take u8 weights until it does; at most half the layers, then all.
Measured, ViT-B/32 text (plain, equalised), held-out min cosine and batch-1 latency: all s8 0.99865 / 116 ms,
projection + layer 0 u8 0.99898 / 120 ms, + layer 1 0.99916 / 125 ms, all u8 0.99951 / 131-160 ms.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from clipedge.export.formats.int4 import onnx_weight_matmuls

__all__ = ["TARGET_COSINE", "quantize_dynamic_int8"]

log = logging.getLogger(__name__)

TARGET_COSINE = 0.999  # the floor docs/precisions.md holds dynamic-int8 to on trained-like checkpoints
AT_MOST = 0.5  # share of the layers that may take u8 weights one at a time, before all of them do


def _quantize(source: Path, tmp: Path, nodes: list[str], wide: list[str]) -> bytes:
    """Of `nodes` (the fp32 model's MatMuls and Gathers), those in `wide` with u8 weights at 8 bits, every other
    weight MatMul and the token table s8 at 7 bits."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    stage = source
    if wide:
        stage = tmp / "dynamic-u8.onnx"
        quantize_dynamic(source, stage, op_types_to_quantize=["MatMul"], nodes_to_quantize=wide, per_channel=True,
                         reduce_range=False, weight_type=QuantType.QUInt8)
    rest = [name for name in nodes if name not in wide]  # the u8 pass leaves the other nodes' names as they were
    target = tmp / "dynamic-int8.onnx"
    quantize_dynamic(stage, target, op_types_to_quantize=["MatMul", "Gather"], nodes_to_quantize=rest,
                     per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)
    return target.read_bytes()


def _widening_steps(groups: dict[str, str]) -> list[list[str]]:
    """The node sets to try in u8, in order: the projection, then with it the first layer, the first two, ... up to
    AT_MOST of the layers, then every weight MatMul."""
    layers = sorted({g for g in groups.values() if g.startswith("layer_")}, key=lambda g: int(g.split("_")[1]))
    steps = []
    for count in range(0, math.ceil(len(layers) * AT_MOST) + 1):
        chosen = set(layers[:count]) | {g for g in groups.values() if "projection" in g}
        steps.append([name for name, group in groups.items() if group in chosen])
    steps.append(list(groups))
    return [s for i, s in enumerate(steps) if s and s not in steps[:i]]


def quantize_dynamic_int8(proto: onnx.ModelProto, tmp: Path,
                          calibration: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The dynamic-int8 model of an fp32 one: s8 weights at 7 bits, widened to u8 where the calibration samples
    (when given) say the file misses TARGET_COSINE; the most faithful file if none reaches it."""
    source = tmp / "fp32.onnx"
    onnx.save(proto, source)
    nodes = [n.name for n in proto.graph.node if n.op_type in ("MatMul", "Gather")]
    data = _quantize(source, tmp, nodes, [])
    if not calibration:
        return onnx.load_from_string(data)
    from clipedge.export.formats.onnx.score import scorer

    score = scorer(source.read_bytes(), calibration)
    best, best_score = data, score(data)
    for wide in _widening_steps(onnx_weight_matmuls(proto)):
        if best_score >= TARGET_COSINE:
            break
        candidate = _quantize(source, tmp, nodes, wide)
        cosine = score(candidate)
        log.info("dynamic-int8: %d MatMuls with u8 weights: min cosine %.5f on the calibration samples", len(wide),
                 cosine)
        if cosine > best_score:
            best, best_score = candidate, cosine
    return onnx.load_from_string(best)
