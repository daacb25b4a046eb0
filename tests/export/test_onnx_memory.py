"""The low-memory tf2onnx path (export/formats/onnx/from_tf.py, issue #33 case 8) makes the graph tf2onnx's own
`from_function` makes: the same ops, the same weights, the same outputs, on a model whose biases and LayerNorm
weights are not HF's initial zeros and ones (grappler removes `+ 0` and `* 1`, so initial weights would hide a
difference in how the constants are handled)."""

from __future__ import annotations

import contextlib
import io
from collections import Counter

import numpy as np
import pytest

from tests.export.test_onnx_fusions import batch_of_three, run

pytestmark = pytest.mark.slow  # two tf2onnx conversions per tower


@pytest.fixture(scope="module")
def trained_looking_model(small_hf_clip):
    from clipedge.export import CLIPModel

    model = CLIPModel.from_pretrained(small_hf_clip[1])
    rng = np.random.default_rng(3)
    for variable in model.variables:
        if variable.shape.rank == 1:  # biases, LayerNorm weights: what grappler could fold away at 0 and 1
            values = variable.numpy()
            variable.assign((values + 0.05 * rng.standard_normal(values.shape)).astype(values.dtype))
    return model


@pytest.mark.parametrize("tower", ["image", "text"])
def test_the_low_memory_conversion_makes_tf2onnxs_graph(trained_looking_model, tower):
    import tf2onnx

    from clipedge.export.formats.onnx.convert import ONNX_OPSET
    from clipedge.export.formats.onnx.from_tf import tf_function_to_onnx
    from clipedge.export.towers import tower_spec

    function = tower_spec(trained_looking_model, tower, "default").function("onnx", None)
    with contextlib.redirect_stdout(io.StringIO()):
        reference, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                                     opset=ONNX_OPSET)
    ours = tf_function_to_onnx(function, ONNX_OPSET)

    assert Counter(n.op_type for n in ours.graph.node) == Counter(n.op_type for n in reference.graph.node)
    matmuls = [[n.name for n in m.graph.node if n.op_type in ("MatMul", "Gather")] for m in (ours, reference)]
    assert matmuls[0] == matmuls[1] and matmuls[0]
    assert [i.name for i in ours.graph.input] == [i.name for i in reference.graph.input]  # no weight left an input
    weights = {i.name: i for i in reference.graph.initializer if len(i.dims) == 2}
    ours_by_name = {i.name: i for i in ours.graph.initializer}
    assert weights and set(weights) <= set(ours_by_name)  # every matrix under its own name, with its values
    assert all(ours_by_name[name].raw_data == weights[name].raw_data for name in weights)
    feeds = batch_of_three(tower)
    np.testing.assert_array_equal(run(ours, feeds), run(reference, feeds))
