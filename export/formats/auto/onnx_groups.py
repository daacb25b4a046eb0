"""`auto` for ONNX: the int8 precision (ONNX Runtime static QDQ of STATIC_INT8_OPS) searched group by group, a group
kept float through `quantize_static(nodes_to_exclude=...)` with one calibration cache. Groups are the model's name
scopes in the node names (tf2onnx keeps TF's scopes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from clipedge.export.formats.auto.search import GROUP_RULE, Candidate
from clipedge.runtime.errors import ExportError

__all__ = ["OnnxGroupQuantizer", "onnx_group_precisions"]


def onnx_group_precisions(model_bytes: bytes) -> dict[str, dict[str, int]]:
    """What an ONNX file computes per group: {group: {"INT8": n, "FLOAT32": m}} over its STATIC_INT8_OPS nodes, INT8
    where one of the two operands (data and weights; not a Gemm's or Conv's bias) comes from a DequantizeLinear
    (QDQ). A float node's bias may come from one: tf2onnx merges equal constants, so the zero biases of a
    random-init checkpoint are one initializer, quantized for the int8 nodes that share it."""
    import onnx

    from clipedge.export.formats.onnx.convert import STATIC_INT8_OPS

    graph = onnx.load_from_string(model_bytes).graph
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    out: dict[str, dict[str, int]] = {}
    for node in graph.node:
        if node.op_type in STATIC_INT8_OPS:
            match = GROUP_RULE.search(node.name)
            kind = "INT8" if set(node.input[:2]) & dequantized else "FLOAT32"
            counts = out.setdefault(match.group(1) if match else "other", {})
            counts[kind] = counts.get(kind, 0) + 1
    return out


class OnnxGroupQuantizer:
    """The GroupQuantizer protocol (clipedge.export.formats.auto.search) over
    clipedge.export.formats.onnx.convert.StaticInt8: levels are int8 or float per group."""

    method = "onnxruntime-nodes-to-exclude"
    base = "int8"
    suffix = ".onnx"
    raise_to: tuple[str, ...] = ()

    def __init__(self, fp32_model: bytes, calibration: Mapping[str, np.ndarray]) -> None:
        from clipedge.export.formats.onnx.convert import StaticInt8

        self._static = StaticInt8(fp32_model, calibration)
        self.groups: dict[str, list[str]] = {}
        for name, _ in self._static.nodes:
            match = GROUP_RULE.search(name)
            self.groups.setdefault(match.group(1) if match else "other", []).append(name)

    def _excluded(self, levels: Mapping[str, str]) -> list[str]:
        return [n for g, p in levels.items() if p == "float" for n in self.groups[g]]

    def quantize(self, levels: Mapping[str, str]) -> bytes:
        return self._static.quantize(self._excluded(levels))

    def rebuild(self, levels: Mapping[str, str]) -> dict[str, Any]:
        return {"nodes_to_exclude": self._excluded(levels)}

    def keeps(self, mix: Candidate) -> bool:
        return "float" in mix.levels.values()  # all-int8 is the int8 precision itself

    def measure(self, data: bytes, levels: Mapping[str, str]) -> dict[str, dict[str, int]]:
        measured = onnx_group_precisions(data)
        for group, level in levels.items():
            kinds = measured.get(group, {})
            if (level == "float") == ("INT8" in kinds):
                raise ExportError(f"auto: ONNX group {group} was to be {level} but computes {kinds}")
        return measured

    def close(self) -> None:
        self._static.close()
