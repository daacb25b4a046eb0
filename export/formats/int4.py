"""The int4 precision, TFLite and ONNX: 4-bit blockwise weights for the transformer's matmuls, the layers that lose
most at 4 bits kept at 8 bits, the token table and patch embedding at 8 bits. Float activations (TFLite: quantized on
the fly by the hybrid kernels; ONNX: float compute).

Per-layer sensitivity (issue #18), ViT-B/32 random weights, ONNX, min cosine to fp32 on 64 calibration samples with
*only* that group at 4 bits (block 32), the rest float:

    text:  layer_0 0.9870, layer_1 0.9929, layer_2 0.9968, layer_3 0.9979, layer_4..11 0.9982-0.9994,
           text_projection 0.9965
    image: every layer 0.9993-0.9995

The losses add up (all 4-bit: text 0.966, image 0.991) and sit at the start of the stack (the residual stream is
smallest there, so the same weight noise is a larger share of it) and in the output projection (nothing after it
averages its noise out). So, for every architecture: the projection and the first quarter of the transformer layers
(rounded up: ViT-B/32 layer_0..layer_2 of 12) keep 8-bit weights (per output channel); if the file still misses
TARGET_COSINE on the calibration samples, the next layer joins them, one at a time, up to the first half
(choose_kept). Every other matmul is 4-bit in blocks of 32 along its input axis, one scale per block, symmetric.
TFLite's hybrid kernels also quantize activations to int8, which costs the text tower more than ONNX's float compute
(first quarter at 8 bits: TFLite 0.985, ONNX 0.991): there the search goes further. Sizes stay far under a third
of fp32 (docs/precisions.md has the table, tests/scripts/fidelity_precisions.py prints it).

- TFLite (ai-edge-quantizer): FULLY_CONNECTED dynamic int4 BLOCKWISE_32 (its `dynamic_wi4b32_afp32`; the old recipe,
  `dynamic_wi4_afp32`, is channelwise: one scale per output row), the kept layers' FULLY_CONNECTED and the CONV_2D
  dynamic int8 channelwise, the token table's GATHER static int8 (no weight-only recipe takes GATHER; LiteRT gathers
  the int8 rows and dequantizes only those: text tower 121 -> ~50 MB).
- ONNX: MatMulNBits (bits 4, block 32, symmetric; ONNX Runtime's contrib op, CPU since 1.17) for the 4-bit matmuls,
  then `quantize_dynamic` (int8 per channel, MatMulInteger) for the kept ones and the token table's Gather: both run
  on every ONNX Runtime the runtime supports (GatherBlockQuantized, a 4-bit Gather, needs 1.20). The patch
  embedding's Conv stays float (2.4 M of ViT-B/32's 88 M weights).
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from clipedge.runtime.precisions import WARN_BELOW

log = logging.getLogger(__name__)

__all__ = ["BLOCK", "TARGET_COSINE", "choose_kept", "int4_tflite_recipe", "kept_8bit", "layer_of", "onnx_weight_bits",
           "onnx_weight_matmuls",
           "quantize_int4_onnx", "quantize_int4_tflite", "tflite_weight_bits"]

BLOCK = 32  # weights per scale along the input axis (32 against 64/128: ONNX text min cosine 0.966 vs lower)
KEEP_FIRST_LAYERS = 0.25  # share of the transformer layers, from the first, kept at 8 bits (rounded up)...
KEEP_AT_MOST = 0.5  # ...growing up to this share while the calibration samples stay under TARGET_COSINE
TARGET_COSINE = WARN_BELOW + 0.002  # min cosine to fp32 on the calibration samples; a margin over the flag line
_GROUP = re.compile(r"(?:^|[/;])(layer_\d+|embeddings|visual_projection|text_projection|pooling|pre_layrnorm|"
                    r"post_layernorm|final_layer_norm)(?:[/;]|$)")
_PROJECTIONS = ("visual_projection", "text_projection", "projection")  # TFLite: the op writing the output


def layer_of(name: str) -> str:
    """The model group a node/op/tensor name belongs to ("layer_3", "text_projection", "embeddings", ...), or
    "other"; for a fused TFLite op ("a;b;c") the first part that names one."""
    match = _GROUP.search(name)
    return match.group(1) if match else "other"


def kept_8bit(groups: Iterable[str], first: int | None = None) -> list[str]:
    """Of a tower's groups, those whose matmuls keep 8-bit weights: the first `first` transformer layers (default:
    the first quarter, rounded up) and the projection (see the module docstring for the measurements behind it)."""
    groups = set(groups)
    layers = sorted((g for g in groups if g.startswith("layer_")), key=lambda g: int(g.split("_")[1]))
    count = math.ceil(len(layers) * KEEP_FIRST_LAYERS) if first is None else first
    return layers[:count] + [g for g in _PROJECTIONS if g in groups]


def choose_kept(groups: Iterable[str], build: Callable[[list[str]], bytes],
                score: Callable[[bytes], float] | None) -> tuple[bytes, list[str]]:
    """(file, kept groups): the first quarter of the layers kept at 8 bits, then one more layer at a time (the
    sensitivity falls with depth) until `score` (min cosine to fp32 on the calibration samples) reaches
    TARGET_COSINE, at most the first half. Without `score` (no calibration samples): the first quarter."""
    groups = list(groups)
    layers = sum(g.startswith("layer_") for g in set(groups))
    low, high = math.ceil(layers * KEEP_FIRST_LAYERS), math.ceil(layers * KEEP_AT_MOST)
    for first in range(low, max(low, high) + 1):
        kept = kept_8bit(groups, first)
        data = build(kept)
        if score is None or first >= high:
            return data, kept
        cosine = score(data)
        log.info("int4: %d first layers at 8 bits: min cosine %.5f on the calibration samples", first, cosine)
        if cosine >= TARGET_COSINE:
            return data, kept
    raise AssertionError("unreachable")  # the last step returns


def _min_cosine(ours: np.ndarray, reference: np.ndarray) -> float:
    from clipedge.runtime.metrics import cosine_stats

    return cosine_stats(ours, reference)["cosine_min"]


# ---- TFLite ----------------------------------------------------------------------------------------------------------
def _group_regex(groups: list[str]) -> str:
    return r"(?:^|[/;])(?:" + "|".join(re.escape(g) for g in groups) + r")(?:[/;]|$)"


def _tflite_groups(float_model: bytes) -> dict[str, str]:
    """{op scope: group} of the float .tflite's FULLY_CONNECTED ops (the projection's scope names only the graph's
    output tensor: it is the FULLY_CONNECTED writing an output)."""
    from clipedge.export.formats.tflite.flatbuffer import operators, output_names

    outputs = output_names(float_model)
    out = {}
    for op in operators(float_model):
        if op.name == "FULLY_CONNECTED":
            group = layer_of(op.scope)
            if group == "other" and set(op.outputs) & outputs:
                group = "projection"
            out[op.scope] = group
    return out


def _indivisible_scopes(float_model: bytes) -> list[str]:
    """FULLY_CONNECTED ops whose input width is not a multiple of BLOCK (a tower 80 wide): ai-edge-quantizer refuses
    blockwise int4 there ("not divisible by block size 32"), so they keep 8-bit weights like the kept layers."""
    from clipedge.export.formats.tflite.flatbuffer import operators

    return [op.scope for op in operators(float_model) if op.name == "FULLY_CONNECTED" and len(op.input_shapes) > 1
            and op.input_shapes[1] and op.input_shapes[1][-1] % BLOCK]


def int4_tflite_recipe(float_model: bytes, first: int | None = None,
                       table: bool = True) -> tuple[list[dict], list[str]]:
    """(ai-edge-quantizer recipe, the groups kept at 8 bits) for a float .tflite, with the first `first` layers
    at 8 bits (default: the first quarter); `table`: the token table int8 (a static op: needs calibration)."""
    from ai_edge_quantizer import qtyping, recipe_manager

    ops, granularity = qtyping.TFLOperationName, qtyping.QuantGranularity
    scopes = _tflite_groups(float_model)
    kept = kept_8bit(scopes.values(), first)
    kept_scopes = [s for s, g in scopes.items() if g in kept] + _indivisible_scopes(float_model)
    manager = recipe_manager.RecipeManager()
    manager.add_dynamic_config(".*", ops.FULLY_CONNECTED, 4, granularity=granularity.BLOCKWISE_32)
    if kept_scopes:  # added after the catch-all: a later matching entry wins
        regex = "^(?:" + "|".join(re.escape(s) for s in kept_scopes) + ")$"
        manager.add_dynamic_config(regex, ops.FULLY_CONNECTED, 8)
    manager.add_dynamic_config(".*", ops.CONV_2D, 8)
    if table:
        manager.add_static_config(_group_regex(["embeddings"]), ops.GATHER, activation_num_bits=8,
                                  weight_num_bits=8)
    return manager.get_quantization_recipe(), kept


def _tflite_outputs(model_bytes: bytes, signature: str, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model_bytes, num_threads=2).get_signature_runner(signature)
    return np.concatenate([next(iter(runner(**feed).values())).reshape(1, -1) for feed in feeds])


def quantize_int4_tflite(float_model: bytes, signature: str, calibration: Mapping[str, np.ndarray] | None) -> bytes:
    """The int4 .tflite of a float .tflite. `calibration` gives the token table's GATHER its range (a static int8
    op) and the samples choose_kept scores on; without it, the first quarter of the layers stays 8-bit and the token
    table float."""
    from ai_edge_quantizer import quantizer

    from clipedge.export.formats.tflite.edge_quantizer import calibrate_min_max, per_sample_feeds, quiet_quantizer

    feeds = per_sample_feeds(calibration, "int4") if calibration else None
    recipe, _ = int4_tflite_recipe(float_model, table=feeds is not None)
    ranges = None
    with quiet_quantizer():
        qt = quantizer.Quantizer(float_model)
        qt.load_quantization_recipe(recipe)
        if qt.need_calibration:  # the GATHER's range does not depend on which layers are 8-bit: calibrated once
            ranges = calibrate_min_max(float_model, signature, feeds, recipe)

    def build(kept: list[str]) -> bytes:
        layers = sum(g.startswith("layer_") for g in kept)
        with quiet_quantizer():
            qt = quantizer.Quantizer(float_model)
            qt.load_quantization_recipe(int4_tflite_recipe(float_model, layers, table=feeds is not None)[0])
            return bytes(qt.quantize(ranges).quantized_model)

    score = None
    if feeds is not None:
        reference = _tflite_outputs(float_model, signature, feeds)
        score = lambda data: _min_cosine(_tflite_outputs(data, signature, feeds), reference)  # noqa: E731
    return choose_kept(_tflite_groups(float_model).values(), build, score)[0]


def tflite_weight_bits(model_bytes: bytes) -> dict[str, dict[str, int]]:
    """What a .tflite stores per group: {group: {"int4-b32" | "int8" | "float32" | ...: weight count}} over the
    constant inputs of FULLY_CONNECTED, CONV_2D and GATHER (the projection is "projection")."""
    from clipedge.export.formats.tflite.flatbuffer import operators, output_names, read_model, tensor_type_names

    model = read_model(model_bytes)
    graph = model.subgraphs[0]
    types = tensor_type_names()
    by_name = {t.name.decode() if isinstance(t.name, bytes) else t.name: t for t in graph.tensors}
    outputs = {n.removesuffix("_dequant") for n in output_names(model_bytes)}
    out: dict[str, dict[str, int]] = {}
    for op in operators(model_bytes):
        if op.name not in ("FULLY_CONNECTED", "CONV_2D", "GATHER"):
            continue
        group = layer_of(op.scope)
        if group == "other" and {o.removesuffix("_dequant") for o in op.outputs} & outputs:
            group = "projection"
        weight = by_name.get(op.inputs[0] if op.name == "GATHER" else op.inputs[1])
        buffer = model.buffers[weight.buffer] if weight is not None else None
        if buffer is None or (buffer.data is None and not buffer.offset):  # not a constant (offset: stored after)
            continue
        kind = types.get(weight.type, "?").lower()
        details = weight.quantization.details if weight.quantization is not None else None
        if details is not None and hasattr(details, "blockSize"):
            kind += f"-b{details.blockSize}"
        counts = out.setdefault(group, {})
        counts[kind] = counts.get(kind, 0) + int(np.prod(weight.shape))
    return out


# ---- ONNX ------------------------------------------------------------------------------------------------------------
def onnx_weight_matmuls(proto) -> dict[str, str]:
    """{MatMul node name: group} for the MatMuls with a constant weight (the ones MatMulNBits can take)."""
    constants = {i.name for i in proto.graph.initializer}
    return {n.name: layer_of(n.name) for n in proto.graph.node if n.op_type == "MatMul" and n.input[1] in constants}


def _int4_onnx(proto, kept: list[str]):
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    kept_nodes = [name for name, group in onnx_weight_matmuls(proto).items() if group in kept]
    quantizer = MatMulNBitsQuantizer(onnx.ModelProto.FromString(proto.SerializeToString()), bits=4, block_size=BLOCK,
                                     is_symmetric=True, nodes_to_exclude=kept_nodes)
    quantizer.process()
    four_bit = quantizer.model.model
    constants = {i.name for i in four_bit.graph.initializer}
    gathers = [n.name for n in four_bit.graph.node
               if n.op_type == "Gather" and layer_of(n.name) == "embeddings" and n.input[0] in constants]
    if not kept_nodes and not gathers:
        return four_bit
    with tempfile.TemporaryDirectory(prefix="clipedge-int4-") as tmp:
        source, target = Path(tmp) / "int4.onnx", Path(tmp) / "int4-8.onnx"
        onnx.save(four_bit, source)
        # reduce_range: 7-bit weights, as in dynamic-int8 (u8 x s8 saturates on AVX2-only x86; formats/onnx/convert.py)
        quantize_dynamic(source, target, op_types_to_quantize=["MatMul", "Gather"],
                         nodes_to_quantize=kept_nodes + gathers, per_channel=True, reduce_range=True,
                         weight_type=QuantType.QInt8)
        return onnx.load(target)


def quantize_int4_onnx(proto, calibration: Mapping[str, np.ndarray] | None = None):
    """The int4 ONNX model of an fp32 one (onnx.ModelProto in, ModelProto out); `calibration` ({input: [N, ...]},
    ONNX layout) gives choose_kept its samples."""
    import onnx

    from clipedge.export.formats.onnx.score import scorer

    score = scorer(proto.SerializeToString(), calibration) if calibration else None
    data, _ = choose_kept(onnx_weight_matmuls(proto).values(),
                          lambda kept: _int4_onnx(proto, kept).SerializeToString(), score)
    return onnx.load_from_string(data)


def onnx_weight_bits(proto) -> dict[str, dict[str, int]]:
    """What an ONNX model stores per group: {group: {"int4-b32" | "int8" | "float32": weight count}} over the
    weights of MatMul / MatMulNBits / MatMulInteger / Gather / Conv nodes."""
    sizes = {i.name: (int(np.prod(i.dims)), i.data_type) for i in proto.graph.initializer}
    out: dict[str, dict[str, int]] = {}
    for node in proto.graph.node:
        kind, count = None, 0
        if node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            kind, count = f"int{attrs['bits']}-b{attrs['block_size']}", attrs["K"] * attrs["N"]
        elif node.op_type in ("MatMul", "MatMulInteger", "Gather", "Conv", "ConvInteger"):
            weight = node.input[0] if node.op_type == "Gather" else node.input[1]
            if weight not in sizes:
                continue
            count, dtype = sizes[weight]
            kind = "int8" if dtype in (2, 3) else "float32" if dtype == 1 else str(dtype)
        if kind is not None:
            group = layer_of(node.name)
            counts = out.setdefault(group, {})
            counts[kind] = counts.get(kind, 0) + count
    return out
