"""`--batch dynamic`: TFLite files whose batch axis is resized at load, at every TFLite precision.

The reference is the file itself run one row at a time: a graph that baked the batch into a reshape, or that mixes
rows (attention across the batch, one activation range for the whole batch), gives batch-5 rows that differ from the
rows run alone. Fidelity to the float model is held to the same floors as the fixed-batch files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipedge.export.pipeline.export_bundle import export_bundle
from clipedge.export.settings import ExportSettings
from clipedge.runtime.clip_runtime import load
from clipedge.runtime.errors import ExportError
from clipedge.runtime.manifest import Manifest
from clipedge.runtime.precisions import available, precision
from tests.export.test_export_bundle import MIN_COSINE

pytestmark = pytest.mark.slow  # the fast tier (`pytest -m 'not slow'`) leaves this file out

PRECISIONS = tuple(p for p in available("tflite") if precision(p).fixed)
PHOTOS = sorted((Path(__file__).parents[2] / "calibration_data" / "photos").glob("*.webp"))[:5]
CAPTIONS = ["a photo of a dog", "a tower at night", "fish", "two birds on a wire", "a red car parked by a wall"]
# Batch-5 rows against the same rows run alone. Float and statically quantized files do the same arithmetic per row
# (measured: identical to the last bit on XNNPACK); dynamic-int8 and int4 quantize activations at run time, which
# XNNPACK does per row (also identical) but a kernel that takes one range over the whole batch would not: those two
# get a cosine floor that a mixed-up row (cosine ~0 on this random model) still fails by far.
ROW_ATOL = {"fp32": 1e-5, "fp16": 1e-5, "int8": 1e-5, "int16x8": 1e-5}
DYNAMIC_ACTIVATIONS_MIN_COSINE = 0.999


@pytest.fixture(scope="module")
def dynamic_bundle(small_hf_clip, tmp_path_factory):
    """Every TFLite precision with a dynamic batch, plus the gpu and mobile variants (which stay batch 1)."""
    _, checkpoint = small_hf_clip
    out = tmp_path_factory.mktemp("dynamic") / "bundle"
    export_bundle(out, checkpoint=checkpoint, formats="tflite", precisions=PRECISIONS, batch="dynamic", mobile=True,
                  samples=16, progress=False)
    return out


def test_manifest_and_files_have_a_dynamic_batch(dynamic_bundle):
    from ai_edge_litert.interpreter import Interpreter

    from clipedge.export.pipeline.self_describe import read_description

    manifest = Manifest.read(dynamic_bundle)
    assert json.loads((dynamic_bundle / "manifest.json").read_text())["export"]["batch"] == "dynamic"
    plain = [a for a in manifest.artifacts if a.variant == "default"]
    assert {(a.tower, a.precision) for a in plain} == {(t, p) for t in ("image", "text") for p in PRECISIONS}
    for artifact in plain:
        assert [e["shape"][0] for e in artifact.inputs + artifact.outputs] == [-1, -1], artifact.file
        runner = Interpreter(model_path=str(dynamic_bundle / artifact.file)).get_signature_runner(artifact.signature)
        (details,) = runner.get_input_details().values()
        assert details["shape_signature"][0] == -1, artifact.file
        facts = read_description((dynamic_bundle / artifact.file).read_bytes())  # the file alone says so too
        assert [e["shape"][0] for e in facts["inputs"] + facts["outputs"]] == [-1, -1], artifact.file
        assert artifact.fidelity["cosine_min"] >= MIN_COSINE[artifact.precision], artifact.file


def test_gpu_and_mobile_variants_stay_batch_1(dynamic_bundle):
    from ai_edge_litert.interpreter import Interpreter

    from clipedge.export.pipeline.self_describe import read_description

    others = [a for a in Manifest.read(dynamic_bundle).artifacts if a.variant != "default"]
    assert {a.variant for a in others} == {"gpu", "mobile"}
    for artifact in others:
        assert {e["shape"][0] for e in artifact.inputs + artifact.outputs} == {1}, artifact.file
        facts = read_description((dynamic_bundle / artifact.file).read_bytes())
        assert {e["shape"][0] for e in facts["inputs"] + facts["outputs"]} == {1}, artifact.file
        runner = Interpreter(model_path=str(dynamic_bundle / artifact.file)).get_signature_runner(artifact.signature)
        assert all(d["shape_signature"][0] == 1 for d in runner.get_input_details().values()), artifact.file


def _assert_rows_match(batched: np.ndarray, alone: np.ndarray, name: str) -> None:
    assert batched.shape == alone.shape, name
    if name in ROW_ATOL:
        np.testing.assert_allclose(batched, alone, atol=ROW_ATOL[name], rtol=0, err_msg=name)
    else:
        cosines = np.sum(batched * alone, axis=1) / (np.linalg.norm(batched, axis=1) * np.linalg.norm(alone, axis=1))
        assert cosines.min() >= DYNAMIC_ACTIVATIONS_MIN_COSINE, (name, cosines)


@pytest.mark.parametrize("name", PRECISIONS)
def test_runtime_runs_batch_5_as_the_rows_alone(dynamic_bundle, name):
    runtime = load(dynamic_bundle, precision=name, format="tflite")
    for tower in ("image", "text"):
        assert runtime.backend(tower).inputs[0].shape[0] == -1, (name, tower)  # resized, not looped
    images = runtime.encode_images(PHOTOS)
    _assert_rows_match(images, np.concatenate([runtime.encode_images([p]) for p in PHOTOS]), name)
    texts = runtime.encode_texts(CAPTIONS)
    _assert_rows_match(texts, np.concatenate([runtime.encode_texts([c]) for c in CAPTIONS]), name)
    assert images.shape[0] == texts.shape[0] == 5


def test_settings_take_dynamic_and_record_it():
    assert ExportSettings(batch="dynamic").batch is None
    assert ExportSettings(batch=None).to_manifest()["batch"] == "dynamic"
    assert ExportSettings(batch=4).to_manifest()["batch"] == 4
    for bad in (0, -1, "eight", 2.5, True):
        with pytest.raises(ExportError, match="batch must be >= 1 or 'dynamic'"):
            ExportSettings(batch=bad)


def test_cli_parses_batch():
    from clipedge.runtime.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["export", "--batch", "dynamic"]).batch == "dynamic"
    assert parser.parse_args(["export", "--batch", "4"]).batch == 4
    for bad in ("0", "none", "-2"):
        with pytest.raises(SystemExit):
            parser.parse_args(["export", "--batch", bad])
