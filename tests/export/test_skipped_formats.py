"""A format that cannot be produced for a checkpoint does not sink the others: the export writes them and says why,
unless that format was asked for alone. (Before, an exact-GELU checkpoint failed tf2onnx and the user got no bundle
at all, not even the TFLite files, which were fine.)"""

from __future__ import annotations

import json

import pytest

from clipedge.export.pipeline.export_bundle import export_bundle
from clipedge.runtime.clip_runtime import load
from clipedge.runtime.errors import ExportError
from clipedge.runtime.manifest import Manifest

REFUSAL = "ONNX conversion of the image tower failed: No Op registered for Erfc with domain_version of 17"


@pytest.fixture
def onnx_refuses(monkeypatch):
    import clipedge.export.formats.onnx.convert as onnx_module

    def refuse(spec):
        raise ExportError(REFUSAL)

    monkeypatch.setattr(onnx_module, "_to_fp32_onnx", refuse)


@pytest.mark.slow
def test_the_other_formats_are_written_and_the_manifest_says_why(small_hf_clip, tmp_path, onnx_refuses):
    out = tmp_path / "bundle"
    result = export_bundle(out, checkpoint=small_hf_clip[1], precisions=["fp32", "dynamic-int8"], progress=False)
    assert result.skipped_formats == {"onnx": REFUSAL}
    assert f"no onnx files: {REFUSAL}" in result.table()
    manifest = Manifest.read(out)
    assert {a.format for a in manifest.artifacts} == {"tflite"}
    assert manifest.data["export"]["skipped_formats"] == {"onnx": REFUSAL}
    assert not list(out.glob("*.onnx"))
    listed = set(json.loads((out / "manifest.json").read_text())["files"]) | {a.file for a in manifest.artifacts}
    assert {p.name for p in out.iterdir() if p.is_file() and p.name != "manifest.json"} <= listed
    assert load(out, format="tflite").encode_texts(["a dog"]).shape == (1, manifest.embed_dim)


def test_a_format_asked_for_alone_still_fails(small_hf_clip, tmp_path, onnx_refuses):
    with pytest.raises(ExportError, match="Erfc"):
        export_bundle(tmp_path / "bundle", checkpoint=small_hf_clip[1], formats=["onnx"], precisions=["fp32"],
                      progress=False)
    assert not (tmp_path / "bundle").exists()
