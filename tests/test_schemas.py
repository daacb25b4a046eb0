"""docs/schema/ (issue #20): JSON Schemas for manifest.json and the index's index.json, for apps that read bundles
in Kotlin, Swift or JavaScript. Every bundle and index the test session writes is checked against them as it is
written (tests/conftest.py); here: the schemas themselves, and that they refuse what the runtime refuses."""

from __future__ import annotations

import copy
import json

import pytest

from tests.conftest import SCHEMAS, schema_errors

jsonschema = pytest.importorskip("jsonschema")


@pytest.mark.parametrize("name", ["manifest.schema.json", "index.schema.json"])
def test_schemas_are_valid_draft_2020_12(name):
    jsonschema.Draft202012Validator.check_schema(json.loads((SCHEMAS / name).read_text(encoding="utf-8")))


def test_the_session_checks_what_it_writes():
    from clipedge.export.pipeline.bundle_writer import BundleWriter
    from clipedge.runtime.index import EmbeddingIndex

    assert BundleWriter.finish.__name__ == "checked_finish" and EmbeddingIndex.save.__name__ == "checked_save"


@pytest.fixture(scope="module")
def manifest(small_bundle):
    return json.loads((small_bundle / "manifest.json").read_text(encoding="utf-8"))


def test_a_fresh_bundle_matches(manifest):
    assert schema_errors(manifest, "manifest.schema.json") == []


@pytest.mark.parametrize("damage, where", [
    (lambda m: m["artifacts"][0].update(file="../elsewhere.tflite"), "artifacts/0/file"),
    (lambda m: m["artifacts"][0].update(sha256="abc"), "artifacts/0/sha256"),
    (lambda m: m["artifacts"][0]["inputs"][0].update(dtype="complex64"), "artifacts/0/inputs/0/dtype"),
    (lambda m: m.update(logit_scale="100"), "logit_scale"),
    (lambda m: m.update(format_version=2), "format_version"),
    (lambda m: m["preprocess"].update(mean=[0.5, 0.5]), "preprocess/mean"),
    (lambda m: m.pop("embed_dim"), "(top)"),
])
def test_what_the_runtime_refuses_the_schema_refuses(manifest, damage, where):
    damaged = copy.deepcopy(manifest)
    damage(damaged)
    errors = schema_errors(damaged, "manifest.schema.json")
    assert errors and errors[0].startswith(f"{where}:"), errors


def test_index_versions():
    model = {"sha256": "0" * 64, "name": "m", "format": "tflite", "precision": "fp32", "embed_dim": 4}
    assert schema_errors({"version": 1, "items": ["a.jpg"], "model": model}, "index.schema.json") == []
    assert schema_errors({"version": 2, "paths": "relative-to-index", "items": ["../a.jpg"], "model": model},
                         "index.schema.json") == []
    assert schema_errors({"version": 3, "items": [], "model": model}, "index.schema.json")
