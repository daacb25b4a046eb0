"""`ArtifactRunner`, the one way a bundle's model file is run: it must give what the runtime's encoders give (before
their normalization), whatever the layout, chunking or variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipedge.runtime.clip_runtime import load
from clipedge.runtime.errors import BundleError, InputError
from clipedge.runtime.manifest import Manifest
from clipedge.runtime.preprocess import preprocess
from clipedge.runtime.runner import ArtifactRunner, dequantize, quantize
from clipedge.runtime.scoring import l2_normalize

PHOTOS = sorted((Path(__file__).parents[2] / "calibration_data" / "photos").glob("*.webp"))[:5]
TEXTS = ["a photo of a dog", "a bison in the snow", "", "word " * 100, "a tower at night"]


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_run_is_the_runtime_encoders_before_normalization(small_bundle, fmt):
    runtime = load(small_bundle, precision="fp32", format=fmt)
    manifest = Manifest.read(small_bundle)
    image = ArtifactRunner.open(manifest, manifest.find("image", fmt, "fp32"))
    text = ArtifactRunner.open(manifest, manifest.find("text", fmt, "fp32"))
    raw_images = image.run(preprocess(PHOTOS, runtime.preprocess_config, layout="NHWC"))
    raw_texts = text.run(runtime.tokenize(TEXTS))
    assert not np.allclose(np.linalg.norm(raw_images, axis=1), 1.0)  # raw: the caller normalizes
    np.testing.assert_allclose(l2_normalize(raw_images), runtime.encode_images(PHOTOS, decode="exact"), atol=1e-6)
    np.testing.assert_allclose(l2_normalize(raw_texts), runtime.encode_texts(TEXTS), atol=1e-6)


def test_onnx_pixels_are_transposed_to_nchw(small_bundle):
    manifest = Manifest.read(small_bundle)
    artifact = manifest.find("image", "onnx", "fp32")
    assert artifact.input_layout == "NCHW"
    runner = ArtifactRunner.open(manifest, artifact)
    assert runner.backend.inputs[0].shape[1] == 3  # the file itself takes NCHW
    nhwc = np.random.default_rng(0).standard_normal((3, 64, 64, 3)).astype(np.float32)
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(runner.run(nhwc), runner.run_feeds({"pixel_values": nchw}))


@pytest.mark.parametrize("tower", ["image", "text"])
def test_chunks_give_what_one_call_gives(small_bundle, tower):
    manifest = Manifest.read(small_bundle)
    artifact = manifest.find(tower, "tflite", "dynamic-int8")
    runtime = load(small_bundle, precision="fp32", format="tflite")
    inputs = (runtime.tokenize(TEXTS) if tower == "text"
              else preprocess(PHOTOS, runtime.preprocess_config, layout="NHWC"))
    whole = ArtifactRunner.open(manifest, artifact, chunk=32).run(inputs)
    chunked = ArtifactRunner.open(manifest, artifact, chunk=2).run(inputs)  # 2 + 2 + 1 rows
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    assert ArtifactRunner.open(manifest, artifact).run(inputs[:0]).shape == (0, manifest.embed_dim)


def test_gpu_text_variant_looks_tokens_up_itself(small_bundle):
    manifest = Manifest.read(small_bundle)
    artifact = manifest.find("text", "tflite", "fp32", variant="gpu")
    ids = load(small_bundle, precision="fp32", format="tflite").tokenize(TEXTS)
    ours = ArtifactRunner.open(manifest, artifact).run(ids)
    reference = ArtifactRunner.open(manifest, manifest.find("text", "tflite", "fp32")).run(ids)
    assert np.sum(l2_normalize(ours) * l2_normalize(reference), axis=1).min() > 0.9999
    without_table = ArtifactRunner(manifest.verified_path(artifact), artifact)
    with pytest.raises(BundleError, match="token table"):
        without_table.run(ids)


def test_open_checks_the_file_and_chunk(small_bundle, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(small_bundle, copy)
    manifest = Manifest.read(copy)
    artifact = manifest.find("image", "tflite", "fp32")
    with pytest.raises(InputError, match="chunk"):
        ArtifactRunner.open(manifest, artifact, chunk=0)
    (copy / artifact.file).write_bytes(b"TFL3 damaged")
    with pytest.raises(BundleError, match="sha256"):
        ArtifactRunner.open(manifest, artifact)


def test_quantize_and_dequantize_use_the_files_scale():
    spec = {"scale": 0.5, "zero_point": -3}
    q = quantize(np.array([0.0, 1.0, -200.0, 200.0], np.float32), spec)
    assert q.dtype == np.int8 and q.tolist() == [-3, -1, -128, 127]  # rounded, shifted, clipped
    np.testing.assert_array_equal(dequantize(q[:2], spec), [0.0, 1.0])
    x = np.ones(3, np.float32)
    assert quantize(x, None) is x and dequantize(x, {}) is x  # float I/O: untouched
