"""The one reader and writer of .tflite flatbuffers (LiteRT's generated schema, no interpreter): everything in
clipedge that looks inside or rewrites a .tflite goes through here: the converter's Flex-op guard and range
re-measuring, full int8's kernel fixes, int4's and `auto`'s layer groups, the self-description, MediaPipe's metadata,
the gpu variant's op count and the tests.

Two views, as the schema offers them: `read_model` unpacks into the mutable object API (ModelT) for rewriting, with
weights that ai-edge-quantizer stored after the flatbuffer brought inside; `model_view` is the zero-copy reader for
looking. `write_model` packs a ModelT back with the 16-byte buffer alignment TFLite's schema asks for (flatbuffers'
Python packer forgets it; kernels may read weights in place).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["FILE_IDENTIFIER", "Operator", "schema", "read_model", "model_view", "write_model", "metadata_bytes",
           "set_metadata", "builtin_op_names", "tensor_type_names", "operators", "op_names", "output_names",
           "input_names", "input_shape"]

FILE_IDENTIFIER = b"TFL3"
BUFFER_ALIGNMENT = 16  # TFLite's schema: Buffer.data is force_align 16


def schema() -> ModuleType:
    """LiteRT's generated flatbuffer classes (imported on first use)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def read_model(model_bytes: bytes) -> Any:
    """The file as a mutable `ModelT`. Buffers stored after the flatbuffer (ai-edge-quantizer's `offset` form, for
    files near the 2 GB limit) are brought inside, so that `write_model` writes a self-contained file."""
    model = schema().ModelT.InitFromPackedBuf(model_bytes, 0)
    for buffer in model.buffers or []:
        if (buffer.offset or 0) > 1:
            buffer.data = np.frombuffer(model_bytes, np.uint8, count=buffer.size, offset=buffer.offset)
            buffer.offset = buffer.size = 0
    return model


def model_view(model_bytes: bytes) -> Any:
    """The zero-copy, read-only `Model` table."""
    return schema().Model.GetRootAs(model_bytes, 0)


def write_model(model: Any, size_hint: int = 1024) -> bytes:
    """Pack a ModelT into .tflite bytes, weights 16-byte aligned as TFLite's converter writes them."""
    import flatbuffers

    class AlignedBuilder(flatbuffers.Builder):
        def StartVector(self, elemSize, numElems, alignment):  # noqa: N802, N803 - flatbuffers' names
            if elemSize == 1:
                alignment = max(alignment, BUFFER_ALIGNMENT)
            return super().StartVector(elemSize, numElems, alignment)

    builder = AlignedBuilder(size_hint + 4096)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def metadata_bytes(model_bytes: bytes, name: str) -> bytes | None:
    """The content of the model's metadata entry `name`, or None."""
    model = model_view(model_bytes)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() and entry.Name().decode() == name:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def set_metadata(model: Any, name: str, content: bytes, replace: bool = True) -> None:
    """Set the ModelT's metadata entry `name` to `content` (a new buffer, or the entry's own when it exists and
    `replace`; ValueError when it exists and not `replace`)."""
    model.metadata = model.metadata or []
    entry = next((m for m in model.metadata if _text(m.name) == name), None)
    if entry is not None and not replace:
        raise ValueError(f"the model already has a {name!r} metadata entry")
    if entry is None:
        model.buffers.append(schema().BufferT())
        entry = schema().MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata.append(entry)
    model.buffers[entry.buffer].data = np.frombuffer(content, dtype=np.uint8)


@dataclass(frozen=True)
class Operator:
    name: str  # builtin name (FULLY_CONNECTED), or a custom op's own name (Flex ops)
    inputs: tuple[str, ...]  # tensor names
    input_types: tuple[str, ...]  # TensorType names (FLOAT32, INT8, ...)
    outputs: tuple[str, ...]
    output_types: tuple[str, ...]
    input_shapes: tuple[tuple[int, ...], ...] = ()

    @property
    def scope(self) -> str:
        """ai-edge-quantizer's name for the op: its output tensor names joined by ";", with a trailing ";"."""
        return ";".join(n for n in self.outputs if n) + ";"


@cache
def _enum_names(enum: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def builtin_op_names() -> dict[int, str]:
    """BuiltinOperator number -> name (FULLY_CONNECTED, ...)."""
    return _enum_names(schema().BuiltinOperator)


def tensor_type_names() -> dict[int, str]:
    """TensorType number -> name (FLOAT32, INT8, ...)."""
    return _enum_names(schema().TensorType)


def _text(name: bytes | str | None) -> str:
    return name.decode() if isinstance(name, bytes) else str(name or "")


def _graph(model_bytes: bytes):
    model = schema().ModelT.InitFromPackedBuf(model_bytes, 0)
    return schema(), model, model.subgraphs[0]


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
                            tuple(_text(t.name) for t in outs), tuple(types.get(t.type, "?") for t in outs),
                            tuple(tuple(int(d) for d in (t.shape if t.shape is not None else ())) for t in ins)))
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


def input_shape(model_bytes: bytes, index: int = 0) -> tuple[int, ...]:
    """The shape of the main graph's `index`-th input."""
    graph = model_view(model_bytes).Subgraphs(0)
    return tuple(int(d) for d in graph.Tensors(graph.Inputs(index)).ShapeAsNumpy())
