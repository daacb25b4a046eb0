"""Graph rewrites of tf2onnx's fp32 CLIP towers before ONNX Runtime's quantizers see them: fewer, fused ops.

Why our own passes and not `onnxruntime.transformers.optimizer`: its fusions match PyTorch exporters' patterns and
crash or match nothing on tf2onnx's (its QuickGelu fusion reads a constant from the wrong side of a Mul and raises,
its LayerNorm fusion wants ReduceMean/Pow/Div where tf2onnx writes TensorFlow's `tf.nn.moments` as
GlobalAveragePool / Mul / Sqrt / Reciprocal). The towers are our own TF graphs (export/model/), so the patterns
below are known exactly; a pattern that does not match is left as it is (a graph never fails to export here).

Passes (each output equals the input graph's up to float32 rounding; tests/export/test_onnx_fusions.py):
  layer_norm    TF's LayerNorm, 10 ops (mean, x - mean, square, mean, + eps, sqrt, reciprocal, * gamma, * x - mean,
                + beta), becomes one ONNX LayerNormalization (opset 17, a kernel in every ONNX Runtime since 1.14)
  query_scale   a scalar Mul of a MatMul's output (through Reshapes, nothing else reading it) folded into the
                constant weight and bias: attention's q * 1/sqrt(Dh) (exact when Dh is a power of 4: 1/sqrt(64) =
                2^-3), and the classifier's logit scale

Not done: q, k and v as one MatMul on concatenated weights (tried: no faster on one thread, and the static int8
precision quantizes the joined output with one scale, where the folded q is 8x narrower than k and v: demo-size
ViT-B/32 width, int8 min cosine image 0.9952 -> 0.9888). Attention and bias-GELU contrib ops (com.microsoft) are
not written: the files stay standard ONNX, which every ONNX Runtime the runtime supports (pyproject's floor, 1.18)
and every execution provider runs.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["optimize_graph", "fuse_layer_norms", "fold_query_scale"]


class _Graph:
    """Producer and consumer maps over one ONNX graph, and its constants."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in dict.fromkeys(node.input):  # a node reading one tensor twice (d * d) counts once
                self.consumers.setdefault(name, []).append(node)
        self.constants = {init.name: init for init in graph.initializer}
        self.outputs = {out.name for out in graph.output}

    def constant(self, name: str) -> np.ndarray | None:
        init = self.constants.get(name)
        if init is not None:
            return numpy_helper.to_array(init)
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def only_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def made_by(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type else None


def _other(node: onnx.NodeProto, name: str) -> str | None:
    """The input of a binary node that is not `name` (None if `name` is not one of its two inputs)."""
    if len(node.input) != 2 or name not in node.input:
        return None
    return node.input[1] if node.input[0] == name else node.input[0]


def _is_last_axis_mean(g: _Graph, node: onnx.NodeProto, ranks: dict[str, int]) -> bool:
    """A mean over the last axis only, keeping it: GlobalAveragePool of a rank-3 tensor (tf2onnx's form of
    reduce_mean(axis=-1) on [B, N, D]) or ReduceMean(axes=[-1] / [rank - 1], keepdims=1)."""
    rank = ranks.get(node.input[0])
    if node.op_type == "GlobalAveragePool":
        return rank == 3
    if node.op_type != "ReduceMean" or rank is None:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1:
        axes = g.constant(node.input[1])
    return (attrs.get("keepdims", 1) == 1 and axes is not None and len(list(np.ravel(axes))) == 1
            and int(np.ravel(axes)[0]) % rank == rank - 1)


def _match_layer_norm(g: _Graph, mean: onnx.NodeProto, ranks: dict[str, int]):
    """From a last-axis mean, TF's LayerNorm pattern; returns (x, gamma, beta, eps, nodes, output) or None, gamma
    and beta None where the graph has no such op.

    mean = m(x); d = x - mean; var = m(d * d); r = 1 / sqrt(var + eps); y = d * (r * gamma) + beta"""
    if not _is_last_axis_mean(g, mean, ranks):
        return None
    x = mean.input[0]
    sub = g.only_consumer(mean.output[0])
    if sub is None or sub.op_type != "Sub" or list(sub.input) != [x, mean.output[0]]:
        return None
    d = sub.output[0]
    users = g.consumers.get(d, [])
    square = next((n for n in users if n.op_type == "Mul" and list(n.input) == [d, d]), None)
    scale = next((n for n in users if n.op_type == "Mul" and _key(n) != _key(square)), None)
    if square is None or scale is None or len(users) != 2 or d in g.outputs:
        return None
    var = g.only_consumer(square.output[0])
    if var is None or var.op_type != mean.op_type or not _is_last_axis_mean(g, var, ranks):
        return None
    add_eps = g.only_consumer(var.output[0])
    eps = g.constant(_other(add_eps, var.output[0]) or "") if add_eps is not None and add_eps.op_type == "Add" \
        else None
    if eps is None or eps.size != 1:
        return None
    sqrt = g.only_consumer(add_eps.output[0])
    recip = g.only_consumer(sqrt.output[0]) if sqrt is not None and sqrt.op_type == "Sqrt" else None
    if recip is None or recip.op_type != "Reciprocal":
        return None
    # d * (r * gamma), or d * r where tf2onnx dropped a gamma of ones (HF's initial weights)
    times_gamma = g.only_consumer(recip.output[0])
    gamma = _other(times_gamma, recip.output[0]) if _key(times_gamma) != _key(scale) else None
    if gamma is not None and (times_gamma.op_type != "Mul" or g.constant(gamma) is None
                              or g.only_consumer(times_gamma.output[0]) is None
                              or _key(g.only_consumer(times_gamma.output[0])) != _key(scale)):
        return None
    if _other(scale, d) != (times_gamma.output[0] if gamma is not None else recip.output[0]):
        return None
    # + beta, absent where tf2onnx dropped a beta of zeros
    add_beta = g.only_consumer(scale.output[0])
    beta = _other(add_beta, scale.output[0]) if add_beta is not None and add_beta.op_type == "Add" else None
    if beta is not None and (g.constant(beta) is None or g.constant(beta).ndim != 1):
        beta, add_beta = None, None
    nodes = [mean, sub, square, var, add_eps, sqrt, recip, *([times_gamma] if gamma else []), scale,
             *([add_beta] if beta else [])]
    return x, gamma, beta, float(eps.ravel()[0]), nodes, nodes[-1].output[0]


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Every tensor's inferred shape (None for a dynamic axis), where ONNX's shape inference knows it."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    out = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        kind = info.type.tensor_type
        if kind.HasField("shape"):
            out[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim)
    return out


def _vector(g: _Graph, name: str | None, width: int, fill: float, new_name: str) -> str | None:
    """The name of a [width] float32 initializer holding constant `name` (filled with `fill` when None); None when
    `name` is not a constant of `width` values."""
    values = np.full(width, fill, np.float32) if name is None else g.constant(name)
    if values is None or values.size != width:
        return None
    if name is not None and values.shape == (width,) and values.dtype == np.float32:
        return name
    g.graph.initializer.append(numpy_helper.from_array(values.reshape(width).astype(np.float32), new_name))
    return new_name


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _key(node: onnx.NodeProto | None) -> str | None:
    """A node's identity: its first output (SSA: unique). Protobuf hands out a new wrapper object per access, so
    `is` cannot compare nodes."""
    return node.output[0] if node is not None else None


def _replace(graph: onnx.GraphProto, removed: Iterable[str], added: dict[str, onnx.NodeProto]) -> None:
    """Remove the nodes keyed `removed` and insert each of `added` where the node of that key stood (topological
    order holds: the fused node's inputs come before the pattern, its output was the pattern's last)."""
    gone = set(removed)
    kept = []
    for node in graph.node:
        if _key(node) in added:
            kept.append(added[_key(node)])
        if _key(node) not in gone:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def fuse_layer_norms(model: onnx.ModelProto) -> int:
    """Rewrite every TF LayerNorm pattern into LayerNormalization, in place; returns how many."""
    g = _Graph(model.graph)
    shapes = _shapes(model)
    ranks = {name: len(shape) for name, shape in shapes.items()}
    removed: set[str] = set()
    added: dict[str, onnx.NodeProto] = {}
    for node in list(model.graph.node):
        if node.op_type not in ("GlobalAveragePool", "ReduceMean") or _key(node) in removed:
            continue
        found = _match_layer_norm(g, node, ranks)
        if found is None:
            continue
        x, gamma, beta, eps, nodes, output = found
        width = shapes.get(x, (None,))[-1]
        scope = nodes[-1].name.rsplit("/", 1)[0] + "/" if "/" in nodes[-1].name else ""
        name = f"{scope}LayerNorm_{len(added)}"  # keeps the layer's scope: `auto` groups nodes by it
        gamma = _vector(g, gamma, width, 1.0, f"{name}/gamma") if width else None
        beta = _vector(g, beta, width, 0.0, f"{name}/beta") if width else None
        if gamma is None or beta is None:
            continue
        removed.update(_key(n) for n in nodes)
        added[_key(nodes[-1])] = helper.make_node("LayerNormalization", [x, gamma, beta], [output], axis=-1,
                                                  epsilon=eps, name=name)
    if added:
        _replace(model.graph, removed, added)
        _drop_unused_initializers(model.graph)
    return len(added)


def _weight_chain(g: _Graph, name: str) -> tuple[onnx.NodeProto, onnx.NodeProto | None] | None:
    """(MatMul with a constant 2-D weight, its bias Add or None) that `name` comes from through Reshapes only, each
    tensor on the way read by nothing else; None otherwise."""
    node = g.producer.get(name)
    while node is not None and node.op_type == "Reshape" and g.only_consumer(node.output[0]) is not None:
        node = g.producer.get(node.input[0])
    add = None
    if node is not None and node.op_type == "Add" and g.only_consumer(node.output[0]) is not None:
        bias = next((i for i in node.input if g.constant(i) is not None), None)
        add, node = (node, g.producer.get(_other(node, bias))) if bias is not None else (None, None)
    if node is None or node.op_type != "MatMul" or g.only_consumer(node.output[0]) is None:
        return None
    weight = g.constant(node.input[1])
    return (node, add) if weight is not None and weight.ndim == 2 else None


def _set_constant(g: _Graph, node: onnx.NodeProto, index: int, values: np.ndarray, name: str) -> None:
    """Point input `index` of `node` at a new initializer (the old one may be shared)."""
    g.graph.initializer.append(numpy_helper.from_array(values.astype(np.float32), name))
    g.constants[name] = g.graph.initializer[-1]
    node.input[index] = name


def _bypass(g: _Graph, node: onnx.NodeProto, keep: str) -> None:
    """Remove `node`, its consumers reading `keep` instead of its output (never a graph output: callers check)."""
    for user in g.consumers.get(node.output[0], []):
        for i, name in enumerate(user.input):
            if name == node.output[0]:
                user.input[i] = keep
    g.graph.node.remove(node)


def _fold_one_query_scale(g: _Graph) -> bool:
    for node in g.graph.node:
        if node.op_type != "Mul" or node.output[0] in g.outputs:
            continue
        scalar = next((i for i in node.input if g.constant(i) is not None and g.constant(i).size == 1), None)
        found = _weight_chain(g, _other(node, scalar)) if scalar is not None else None
        if found is None:
            continue
        matmul, add = found
        scale = np.float32(g.constant(scalar).ravel()[0])
        _set_constant(g, matmul, 1, g.constant(matmul.input[1]) * scale, f"{matmul.name}/scaled_weight")
        if add is not None:
            index = next(i for i, name in enumerate(add.input) if g.constant(name) is not None)
            _set_constant(g, add, index, g.constant(add.input[index]) * scale, f"{add.name}/scaled_bias")
        _bypass(g, node, _other(node, scalar))
        return True
    return False


def fold_query_scale(model: onnx.ModelProto) -> int:
    """Mul(y, scalar) where y = x W (+ b), through Reshapes, folded into W and b, in place; returns how many."""
    folded = 0
    while _fold_one_query_scale(_Graph(model.graph)):
        folded += 1
    if folded:
        _drop_unused_initializers(model.graph)
    return folded


def optimize_graph(model: onnx.ModelProto) -> dict[str, int]:
    """Every pass above, in place, on an fp32 tf2onnx tower; returns {pass: rewrites}."""
    return {"layer_norm": fuse_layer_norms(model), "query_scale": fold_query_scale(model)}
