"""A tower's TF function -> its fp32 ONNX graph through tf2onnx, in a fraction of the memory of
`tf2onnx.convert.from_function` (issue #33, case 8: exporting ViT-B/32 peaked at 7.9 GiB, in this conversion).

The graph is the one `from_function` makes, op for op (checked on ViT-B/32 with non-trivial biases and LayerNorm
weights: the same 454 ops in the same order, the same outputs to the last bit); only the way there differs.
`from_function` freezes with `convert_variables_to_constants_v2` (aggressive inlining), imports the frozen graph into a
session, runs grappler on it and imports the result into another graph for tf2onnx, whose optimizers then deep-copy
the graph before each of a dozen passes: the weights are inside every one of these copies. A ViT-B/32 image tower
(350 MB of weights) took the process from 1.3 to 7.9 GiB. Here the weight matrices never enter any of that:

1. freeze with tf2onnx's large-model freezer (each variable read once into its constant: no inlining copies);
2. take every weight matrix (a 2-D constant that only MatMuls or Gathers read: the linear layers, the token table)
   out of the graph and put a Placeholder of its dtype and shape in its place, under the name constant folding
   would have given it (the ReadVariableOp identity it feeds). Position tables (sliced, added) and vectors stay:
   grappler folds a slice of a constant table into a constant, and LayerNorm's weight into `d * (r * gamma)` only
   when gamma is a constant, the form the ONNX LayerNorm fusion expects;
3. grappler and tf2onnx's converter and optimizers run on a graph of a few MB of constants (tf2onnx's
   `compress_graph_def` takes those out before TF imports the graph again) in which each weight is a graph input;
4. each such input becomes an initializer with its weights again.

Measured on the ViT-B/32 image tower in one process: 7.9 -> 2.4 GiB peak (3.0 GiB while the model is serialized).
"""

from __future__ import annotations

import contextlib
import gc
import io
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper

__all__ = ["tf_function_to_onnx"]


@contextlib.contextmanager
def _collect_between_tf2onnx_passes() -> Iterator[None]:
    """tf2onnx deep-copies the whole graph, weights included, before each of its dozen optimizer passes and drops
    the old copy as cyclic garbage. Python's collector counts objects, not bytes, so it seldom runs: a ViT-B/32 image
    tower reached ~20 GiB (a 4-layer one 8.5 GiB). Collecting before each pass keeps about three copies alive
    (measured on the 4-layer tower: 3.3 GiB)."""
    from tf2onnx import optimizer

    original = optimizer._optimizers  # noqa: SLF001 (read by optimize_graph on every call)

    def collecting(factory):
        def make():
            gc.collect()
            return factory()
        return make

    optimizer._optimizers = OrderedDict((name, collecting(f)) for name, f in original.items())  # noqa: SLF001
    try:
        yield
    finally:
        optimizer._optimizers = original  # noqa: SLF001
        gc.collect()


# The ops whose 2-D constant operand is put aside: a weight matrix or a token table, used as it is.
_WEIGHT_USERS = frozenset({"MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "GatherV2", "ResourceGather"})


def _matrices_aside(graph_def: Any) -> dict[str, np.ndarray]:
    """Step 2, in place: every 2-D constant over 1 kB that only MatMuls or Gathers read becomes a Placeholder (of the
    Identity it feeds alone, where it does, as constant folding would have named it); returns the weights by
    placeholder name."""
    from tensorflow.python.framework import tensor_util

    consumers: dict[str, list[Any]] = {}
    for node in graph_def.node:
        for name in node.input:
            if not name.startswith("^"):  # a control edge (the function's NoOp) reads no values
                consumers.setdefault(name.split(":")[0], []).append(node)
    aside: dict[str, np.ndarray] = {}
    dropped: set[str] = set()
    for node in graph_def.node:
        tensor = node.attr["value"].tensor if node.op == "Const" else None
        if tensor is None or len(tensor.tensor_shape.dim) != 2 or len(tensor.tensor_content) <= 1000:
            continue
        users = consumers.get(node.name, [])
        target = users[0] if len(users) == 1 and users[0].op == "Identity" else node
        if target is not node:
            users = consumers.get(target.name, [])
        if not users or any(user.op not in _WEIGHT_USERS for user in users):
            continue  # a table that is sliced or added stays a constant: grappler and tf2onnx fold what it feeds
        if target is not node:
            dropped.add(node.name)
        aside[target.name] = tensor_util.MakeNdarray(tensor)
        dtype, shape = node.attr["dtype"].type, type(tensor.tensor_shape)()
        shape.CopyFrom(tensor.tensor_shape)
        target.op = "Placeholder"
        del target.input[:]
        target.ClearField("attr")
        target.attr["dtype"].type = dtype
        target.attr["shape"].shape.CopyFrom(shape)
    kept = [node for node in graph_def.node if node.name not in dropped]
    del graph_def.node[:]
    graph_def.node.extend(kept)
    return aside


def _frozen_and_optimized(concrete: Any, inputs: list[str],
                          outputs: list[str]) -> tuple[Any, list[str], dict[str, np.ndarray]]:
    """Steps 1-3 up to grappler: the frozen GraphDef after grappler, the input names without resource inputs, and the
    weights put aside."""
    import tensorflow as tf
    from tf2onnx import tf_loader

    frozen = tf_loader.fix_freezing_errors_part2(tf_loader.convert_variables_to_constants_large_model(concrete))
    aside = _matrices_aside(frozen)
    with tf.Graph().as_default() as graph, tf_loader.tf_session(graph=graph) as session:
        tf.import_graph_def(frozen, name="")
        inputs = tf_loader.inputs_without_resource(session, inputs)
        # grappler wants a graph, not eager mode; the placeholders are fetched so that it keeps them as they are
        optimized = tf_loader.tf_optimize(inputs + list(aside), outputs, frozen)
    return optimized, inputs, aside


def _weights_back(model: onnx.ModelProto, aside: dict[str, np.ndarray]) -> None:
    """Step 4: the graph inputs that stand for weights become initializers holding them."""
    tensor_names = {f"{name}:0": name for name in aside}
    real_inputs = [i for i in model.graph.input if i.name not in tensor_names]
    for graph_input in model.graph.input:
        if graph_input.name in tensor_names:
            weights = aside.pop(tensor_names[graph_input.name])
            model.graph.initializer.append(onnx.numpy_helper.from_array(weights, graph_input.name))
    del model.graph.input[:]
    model.graph.input.extend(real_inputs)


def tf_function_to_onnx(function: Any, opset: int) -> onnx.ModelProto:
    """The ONNX model of a `tf.function` with an input signature, as `tf2onnx.convert.from_function(function,
    input_signature=function.input_signature, opset=opset)` makes it. tf2onnx's printing is swallowed."""
    import tensorflow as tf
    from tf2onnx import optimizer
    from tf2onnx.convert import tensor_names_from_structed
    from tf2onnx.tf_utils import compress_graph_def
    from tf2onnx.tfonnx import process_tf_graph

    concrete = function.get_concrete_function(*function.input_signature)
    inputs = [t.name for t in concrete.inputs if t.dtype != tf.dtypes.resource]
    outputs = [t.name for t in concrete.outputs if t.dtype != tf.dtypes.resource]
    renames = tensor_names_from_structed(concrete, inputs, outputs)
    with tf.device("/cpu:0"), contextlib.redirect_stdout(io.StringIO()), _collect_between_tf2onnx_passes():
        graph_def, inputs, aside = _frozen_and_optimized(concrete, inputs, outputs)
        with tf.Graph().as_default() as graph:
            small = compress_graph_def(graph_def)
            tf.import_graph_def(graph_def, name="")
            del graph_def
            converted = process_tf_graph(graph, continue_on_error=True, opset=opset,
                                         input_names=inputs + [f"{name}:0" for name in aside], output_names=outputs,
                                         tensors_to_rename=renames, const_node_values=small)
            converted = optimizer.optimize_graph(converted, True)
            model = converted.make_model(f"converted from {concrete.name}")
    _weights_back(model, aside)
    return model
