"""Self-describing model files (issue #20): an ONNX or TFLite file handed over alone says its tower, precision, input
layout, preprocessing, tokenizer, logit_scale, embedding size, source and producer; ONNX names its batch axis."""

from __future__ import annotations

import json

import pytest

from clipedge.export.pipeline.self_describe import METADATA_NAME, read_description
from clipedge.runtime.manifest import Manifest

REQUIRED = {"producer", "clipedge_version", "tower", "precision", "format", "variant", "inputs", "outputs",
            "embed_dim", "logit_scale", "source_checkpoint", "source_sha256"}
IMAGE = {"input_layout", "image_size", "mean", "std", "preprocess"}
TEXT = {"tokenizer", "context_length", "sot_token_id", "eot_token_id", "pad_token_id", "pool"}


def test_every_onnx_file_describes_itself_to_onnxruntime(small_bundle):
    ort = pytest.importorskip("onnxruntime")
    manifest = Manifest.read(small_bundle)
    onnx_artifacts = [a for a in manifest.artifacts if a.format == "onnx"]
    assert onnx_artifacts
    for artifact in onnx_artifacts:
        session = ort.InferenceSession(str(small_bundle / artifact.file), providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map  # what a device app reads, no onnx package needed
        expected = REQUIRED | (IMAGE if artifact.tower == "image" else TEXT)
        assert expected <= set(meta), (artifact.file, expected - set(meta))
        assert meta["tower"] == artifact.tower and meta["precision"] == artifact.precision
        assert float(meta["logit_scale"]) == pytest.approx(manifest.logit_scale)
        assert int(meta["embed_dim"]) == manifest.embed_dim
        assert meta["source_sha256"] == manifest.data["model"]["sha256"]
        if artifact.tower == "image":
            assert meta["input_layout"] == "NCHW" and json.loads(meta["mean"]) == manifest.data["preprocess"]["mean"]
        else:
            assert int(meta["context_length"]) == 77
        for value in [*session.get_inputs(), *session.get_outputs()]:
            assert value.shape[0] == "batch", (artifact.file, value.name, value.shape)


def test_every_tflite_file_carries_the_same_facts(small_bundle):
    manifest = Manifest.read(small_bundle)
    for artifact in (a for a in manifest.artifacts if a.format == "tflite"):
        facts = read_description((small_bundle / artifact.file).read_bytes())
        assert facts is not None and REQUIRED <= set(facts), artifact.file
        assert facts["precision"] == artifact.precision and facts["variant"] == artifact.variant
        if artifact.tower == "image":
            assert facts["input_layout"] == "NHWC" and facts["inputs"] == artifact.inputs


def test_tflite_weights_stay_16_byte_aligned(small_bundle):
    """TFLite's schema asks for 16-byte aligned buffers (kernels may read weights in place); flatbuffers' Python
    packer drops that when a file is rewritten, so the rewrite puts it back."""
    from ai_edge_litert import schema_py_generated as schema

    for artifact in (a for a in Manifest.read(small_bundle).artifacts if a.format == "tflite"):
        data = (small_bundle / artifact.file).read_bytes()
        model = schema.Model.GetRootAs(data, 0)
        names = [model.Metadata(i).Name().decode() for i in range(model.MetadataLength())]
        assert METADATA_NAME in names, (artifact.file, names)
        for i in range(model.BuffersLength()):
            table = model.Buffers(i)._tab
            field = table.Offset(4)  # Buffer.data
            if field and table.VectorLen(field):
                assert table.Vector(field) % 16 == 0, (artifact.file, i)


def test_a_file_without_a_description_reads_as_none(small_bundle):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(small_bundle / "image_fp32.onnx"))
    del model.metadata_props[:]
    assert read_description(model.SerializeToString()) is None
