"""Reading a .tflite's main graph, op by op: the one flatbuffer walker that the converter's Flex-op guard, `auto`'s
layer groups and the tests' full-integer checks share (LiteRT's generated schema, no interpreter)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

__all__ = ["Operator", "operators", "op_names", "output_names", "input_names"]


@dataclass(frozen=True)
class Operator:
    name: str  # builtin name (FULLY_CONNECTED), or a custom op's own name (Flex ops)
    inputs: tuple[str, ...]  # tensor names
    input_types: tuple[str, ...]  # TensorType names (FLOAT32, INT8, ...)
    outputs: tuple[str, ...]
    output_types: tuple[str, ...]

    @property
    def scope(self) -> str:
        """ai-edge-quantizer's name for the op: its output tensor names joined by ";", with a trailing ";"."""
        return ";".join(n for n in self.outputs if n) + ";"


@cache
def _enum_names(enum: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def _text(name: bytes | str | None) -> str:
    return name.decode() if isinstance(name, bytes) else str(name or "")


def _graph(model_bytes: bytes):
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(model_bytes, 0)
    return schema, model, model.subgraphs[0]


def operators(model_bytes: bytes) -> list[Operator]:
    """The main subgraph's operators in execution order."""
    schema, model, graph = _graph(model_bytes)
    builtin, types = _enum_names(schema.BuiltinOperator), _enum_names(schema.TensorType)
    out = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        number = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = (_text(code.customCode) or "CUSTOM") if number == schema.BuiltinOperator.CUSTOM else builtin.get(
            number, str(number))
        ins = [graph.tensors[i] for i in op.inputs if i >= 0]
        outs = [graph.tensors[i] for i in op.outputs if i >= 0]
        out.append(Operator(name, tuple(_text(t.name) for t in ins), tuple(types.get(t.type, "?") for t in ins),
                            tuple(_text(t.name) for t in outs), tuple(types.get(t.type, "?") for t in outs)))
    return out


def op_names(model_bytes: bytes) -> list[str]:
    """The operator kinds the file uses (one per operator code)."""
    schema, model, _ = _graph(model_bytes)
    builtin = _enum_names(schema.BuiltinOperator)
    names = []
    for code in model.operatorCodes:
        number = max(code.builtinCode, code.deprecatedBuiltinCode)
        names.append((_text(code.customCode) or "CUSTOM") if number == schema.BuiltinOperator.CUSTOM
                     else builtin.get(number, str(number)))
    return names


def output_names(model_bytes: bytes) -> set[str]:
    _, _, graph = _graph(model_bytes)
    return {_text(graph.tensors[i].name) for i in graph.outputs}


def input_names(model_bytes: bytes) -> set[str]:
    _, _, graph = _graph(model_bytes)
    return {_text(graph.tensors[i].name) for i in graph.inputs}
