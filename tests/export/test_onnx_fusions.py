"""The ONNX graph rewrites (export/formats/onnx/optimize.py): the fused graph computes what tf2onnx's graph computes,
with the patterns really gone, on standard ONNX ops only; the exported files keep a named dynamic batch axis."""

from __future__ import annotations

import copy
from collections import Counter

import numpy as np
import pytest

from tests.conftest import random_ids

# LayerNorms per tower of the 2-layer small config: image pre_layrnorm + 2 per layer + post_layernorm, text 2 per layer
# + final_layer_norm
LAYER_NORMS = {"image": 6, "text": 5}
LAYERS = 2


@pytest.fixture(scope="module")
def small_model(small_hf_clip):
    from clipedge.export import CLIPModel

    return CLIPModel.from_pretrained(small_hf_clip[1])


def unfused_onnx(model, tower, monkeypatch):
    """tf2onnx's graph as it was before the rewrites."""
    import onnx

    from clipedge.export.formats.onnx import convert as export_onnx

    monkeypatch.setattr(export_onnx, "optimize_graph", lambda proto: {})
    return onnx.load_from_string(export_onnx.convert_onnx(model, tower, "fp32"))


def batch_of_three(tower, size=64):
    rng = np.random.default_rng(7)
    if tower == "image":
        return {"pixel_values": rng.normal(size=(3, 3, size, size)).astype(np.float32)}
    return {"input_ids": random_ids(rng, [0, 9, 75]).astype(np.int32)}


def run(proto, feeds):
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("tower", ["image", "text"])
@pytest.mark.slow
def test_fused_graph_equals_unfused(small_model, tower, monkeypatch):
    from clipedge.export.formats.onnx.optimize import optimize_graph

    unfused = unfused_onnx(small_model, tower, monkeypatch)
    fused = copy.deepcopy(unfused)
    counts = optimize_graph(fused)
    assert counts == {"layer_norm": LAYER_NORMS[tower], "query_scale": LAYERS}
    ops = Counter(node.op_type for node in fused.graph.node)
    assert ops["LayerNormalization"] == LAYER_NORMS[tower]
    assert not {"GlobalAveragePool", "ReduceMean", "Sqrt", "Reciprocal", "Sub"} & set(ops), ops
    assert {node.domain for node in fused.graph.node} <= {"", "ai.onnx"}  # no contrib ops: any ONNX Runtime runs it
    assert len(fused.graph.node) < len(unfused.graph.node) - 8 * LAYER_NORMS[tower]

    feeds = batch_of_three(tower)
    expected, got = run(unfused, feeds), run(fused, feeds)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * np.abs(expected).max())
    nhwc = feeds["pixel_values"].transpose(0, 2, 3, 1) if tower == "image" else None
    reference = (small_model.encode_image(nhwc) if tower == "image" else small_model.encode_text(feeds["input_ids"]))
    np.testing.assert_allclose(got, reference.numpy(), rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.slow
def test_layer_norms_without_scale_or_shift_still_fuse(small_hf_clip, monkeypatch):
    """HF's initial LayerNorm weights (1 and 0, the random-init ViT-B/32 checkpoint's): tf2onnx drops the * gamma and
    + beta ops, and the pattern without them must still become LayerNormalization, with the same outputs."""
    from clipedge.export import CLIPModel
    from clipedge.export.formats.onnx.optimize import optimize_graph
    from clipedge.export.model.layers import LayerNorm

    model = CLIPModel.from_pretrained(small_hf_clip[1])
    for module in model.vision_model.submodules:
        if isinstance(module, LayerNorm):
            module.weight.assign(np.ones(module.weight.shape, np.float32))
            module.bias.assign(np.zeros(module.bias.shape, np.float32))
    unfused = unfused_onnx(model, "image", monkeypatch)
    constants = {init.name for init in unfused.graph.initializer}
    reciprocals = {node.output[0] for node in unfused.graph.node if node.op_type == "Reciprocal"}
    scaled = [node for node in unfused.graph.node if set(node.input) & reciprocals]
    assert len(scaled) == LAYER_NORMS["image"]
    assert all(node.op_type == "Mul" and not set(node.input) & constants for node in scaled)  # d * r: no gamma
    fused = copy.deepcopy(unfused)
    assert optimize_graph(fused)["layer_norm"] == LAYER_NORMS["image"]
    feeds = batch_of_three("image")
    expected = run(unfused, feeds)
    np.testing.assert_allclose(run(fused, feeds), expected, rtol=0, atol=2e-6 * np.abs(expected).max())


@pytest.mark.slow
def test_rewrites_are_idempotent(small_model, monkeypatch):
    """convert_onnx runs them again on a reused fp32 file: a second pass must find nothing."""
    from clipedge.export.formats.onnx.optimize import optimize_graph

    fused = unfused_onnx(small_model, "text", monkeypatch)
    optimize_graph(fused)
    assert optimize_graph(fused) == {"layer_norm": 0, "query_scale": 0}


def test_bundle_onnx_files_are_fused_and_take_batch_3(small_bundle, small_model):
    """The exported files (fp32 and dynamic-int8) carry the rewrites, name their dynamic axis `batch` on inputs and
    outputs, and answer a batch of 3 as the TF model does."""
    import onnx

    from clipedge.runtime.manifest import Manifest
    from clipedge.runtime.metrics import cosine_stats

    manifest = Manifest.read(small_bundle)
    checked = 0
    for artifact in manifest.artifacts:
        if artifact.format != "onnx" or artifact.variant != "default":
            continue
        proto = onnx.load(manifest.verified_path(artifact))
        assert Counter(n.op_type for n in proto.graph.node)["LayerNormalization"] == LAYER_NORMS[artifact.tower]
        for value in [*proto.graph.input, *proto.graph.output]:
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch", (artifact.file, value.name)
        feeds = batch_of_three(artifact.tower)
        got = run(proto, feeds)
        nhwc = feeds["pixel_values"].transpose(0, 2, 3, 1) if artifact.tower == "image" else None
        reference = (small_model.encode_image(nhwc) if artifact.tower == "image"
                     else small_model.encode_text(feeds["input_ids"])).numpy()
        assert got.shape == reference.shape == (3, reference.shape[1])
        floor = 0.99999 if artifact.precision == "fp32" else 0.995
        assert cosine_stats(got, reference)["cosine_min"] >= floor, artifact.file
        checked += 1
    assert checked == 4  # image and text, fp32 and dynamic-int8
