"""`auto` for TFLite: groups are the model's layers, each op belonging to the name scope its output tensor names
carry (`embeddings`, `pre_layrnorm`, `layer_0` ... `layer_N`, `post_layernorm`, `final_layer_norm`; the projection
writes the graph's output and forms `output`). A group's level is a per-scope override in an ai-edge-quantizer recipe
over the fp32 .tflite (base `static_wi8_ai8`; per group NO_QUANTIZE, int16 activations, or NO_QUANTIZE with the
matmuls/convs back at int8). Unlike TF's MLIR quantizer (whose node denylists reshapes and fused ops ignore), it
honours scopes op by op. Calibrated once; each mix is a re-quantization (a fraction of a second)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from clipedge.export.formats.auto.search import GROUP_RULE, LEVELS, Candidate
from clipedge.export.formats.tflite.flatbuffer import operators, output_names
from clipedge.runtime.errors import ExportError

__all__ = ["EdgeGroupQuantizer", "node_groups", "op_groups", "group_precisions"]

log = logging.getLogger(__name__)

_MATMULS = ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D", "DEPTHWISE_CONV_2D")  # static int8 in ai-edge-quantizer
_MARKERS = {"QUANTIZE", "DEQUANTIZE"}  # inserted at precision boundaries; belong to no layer
_EXPECTED = {"float": "FLOAT32", "int8": "INT8", "int16": "INT16", "int8-matmul": "INT8"}


def node_groups(tensor_names: list[str]) -> dict[str, list[str]]:
    """Group TFLite tensor (node) names by the model's name scopes, plus "io" for the graph's input and output;
    other names (constants) are left out."""
    groups: dict[str, list[str]] = {}
    # A fused op's tensor is named "a;b;c" after the TF ops it came from.
    parts = {part for name in tensor_names for part in name.split(";") if part}
    for name in sorted(parts):
        match = GROUP_RULE.search(name)
        if match:
            groups.setdefault(match.group(1), []).append(name)
        elif name.startswith(("encode_", "classify_")) or name.startswith("StatefulPartitionedCall"):
            groups.setdefault("io", []).append(name)  # the graph's input and output (their quantize steps)
    return groups


def _group_of(scope: str, outputs: set[str]) -> str:
    match = GROUP_RULE.search(scope)
    if match:
        return match.group(1)
    return "output" if any(part in outputs for part in scope.split(";")) else "other"


def op_groups(model_bytes: bytes) -> dict[str, list[str]]:
    """{group: [op scopes]} of a float .tflite in graph order: a layer's name scope, "output" for the ops writing the
    graph's output tensors (the projection), "other" for ops with no scope in their names."""
    outputs = output_names(model_bytes)
    groups: dict[str, list[str]] = {}
    for op in operators(model_bytes):
        if op.name not in _MARKERS:
            groups.setdefault(_group_of(op.scope, outputs), []).append(op.scope)
    return groups


def group_precisions(model_bytes: bytes) -> dict[str, dict[str, int]]:
    """What a (quantized) .tflite really computes per group: {group: {output tensor type: op count}}, leaving out the
    QUANTIZE/DEQUANTIZE steps at precision boundaries. A group kept in float shows only FLOAT32; an int8 one INT8
    (plus integer index math such as INT32)."""
    outputs = {name.removesuffix("_dequant") for name in output_names(model_bytes)}
    out: dict[str, dict[str, int]] = {}
    for op in operators(model_bytes):
        if op.name in _MARKERS:
            continue
        counts = out.setdefault(_group_of(op.scope, outputs), {})
        kind = op.output_types[0] if op.output_types else "?"
        counts[kind] = counts.get(kind, 0) + 1
    return out


def _regex(group: str, scopes: list[str], all_scopes: list[str]) -> str:
    """A regex over ai-edge-quantizer op scopes matching exactly this group's ops: the scope name when that is exact,
    else the scopes themselves."""
    if group not in ("output", "other"):
        short = rf"(?:^|[/;]){re.escape(group)}[/;]"
        if {s for s in all_scopes if re.search(short, s)} == set(scopes):
            return short
    return "^(?:" + "|".join(re.escape(s) for s in dict.fromkeys(scopes)) + ")$"


class EdgeGroupQuantizer:
    """ai-edge-quantizer on one float .tflite: calibrated once, re-quantized per mix of group levels (the
    GroupQuantizer protocol of clipedge.export.formats.auto.search)."""

    method = "ai-edge-quantizer-per-layer"
    base = "static_wi8_ai8"
    suffix = ".tflite"
    raise_to = ("int8-matmul", "int16")

    def __init__(self, float_model: bytes, signature: str, calibration: Mapping[str, np.ndarray]) -> None:
        from ai_edge_quantizer import quantizer

        from clipedge.export.formats.tflite.convert import per_sample_feeds, quiet_quantizer

        self.float_model = float_model
        self.groups = op_groups(float_model)
        if not self.groups:
            raise ExportError("auto: the float model has no operators to quantize")
        outputs = output_names(float_model)
        self.matmuls: dict[str, set[str]] = {}  # group -> its matmul/conv op types (for int8-matmul)
        for op in operators(float_model):
            if op.name in _MATMULS:
                self.matmuls.setdefault(_group_of(op.scope, outputs), set()).add(op.name)
        all_scopes = [s for scopes in self.groups.values() for s in scopes]
        self.regexes = {g: _regex(g, scopes, all_scopes) for g, scopes in self.groups.items()}
        with quiet_quantizer():
            qt = quantizer.Quantizer(float_model)
            qt.load_quantization_recipe(self.recipe({}))
            self.calibration = qt.calibrate({signature: per_sample_feeds(calibration, "auto")}, num_threads=2)

    def recipe(self, levels: Mapping[str, str]) -> list[dict[str, Any]]:
        """The ai-edge-quantizer recipe of a mix: static int8 everywhere, the groups' overrides, float in/out."""
        from ai_edge_quantizer import qtyping, recipe_manager
        from ai_edge_quantizer import recipe as recipes
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

        manager = recipe_manager.RecipeManager()
        manager.load_quantization_recipe(recipes.static_wi8_ai8())
        every = qtyping.TFLOperationName.ALL_SUPPORTED
        for group, level in levels.items():
            if level not in LEVELS:
                raise ExportError(f"auto: unknown group precision {level!r}; choose from {LEVELS}")
            regex = self.regexes[group]
            if level in ("float", "int8-matmul"):
                manager.add_quantization_config(regex, every, algorithm_key=AlgorithmName.NO_QUANTIZE)
                if level == "int8-matmul":  # op configs after the scope's "all": they win for these op types
                    for op in sorted(self.matmuls.get(group, ())):
                        manager.add_static_config(regex, qtyping.TFLOperationName[op], activation_num_bits=8,
                                                  weight_num_bits=8)
            elif level == "int16":
                # Ops with no int16 kernel (SQUARED_DIFFERENCE, the LayerNorm variance) would keep the base int8:
                # float under an equivalent regex first, so that they fall back to it, not to int8.
                manager.add_quantization_config(f"(?:{regex})", every, algorithm_key=AlgorithmName.NO_QUANTIZE)
                manager.add_static_config(regex, every, activation_num_bits=16, weight_num_bits=8)
        for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):  # float in/out, added last so
            manager.add_quantization_config("^.*", op, algorithm_key=AlgorithmName.NO_QUANTIZE)  # it wins over groups
        return manager.get_quantization_recipe()

    def quantize(self, levels: Mapping[str, str]) -> bytes:
        from ai_edge_quantizer import quantizer

        from clipedge.export.formats.tflite.convert import quiet_quantizer

        with quiet_quantizer():
            qt = quantizer.Quantizer(self.float_model)
            qt.load_quantization_recipe(self.recipe(levels))
            return bytes(qt.quantize(self.calibration).quantized_model)

    def rebuild(self, levels: Mapping[str, str]) -> dict[str, Any]:
        return {"edge_quantizer_recipe": self.recipe(levels)}

    def keeps(self, mix: Candidate) -> bool:
        return True

    def measure(self, data: bytes, levels: Mapping[str, str]) -> dict[str, dict[str, int]]:
        """Per group, the op output types of the file. Float groups must be float only; int8/int16 groups should
        show their type (what the quantizer cannot quantize it leaves float: warned, and in the table)."""
        measured = group_precisions(data)
        for group, level in levels.items():
            kinds = measured.get(group, {})
            if level == "float" and set(kinds) - {"FLOAT32", "INT32", "BOOL"}:
                raise ExportError(f"auto: group {group} was to stay float but has {kinds} op outputs")
            if level != "float" and _EXPECTED[level] not in kinds and kinds:
                log.warning("auto: group %s was to be %s but computes %s", group, level, kinds)
        return measured

    def close(self) -> None:
        pass
