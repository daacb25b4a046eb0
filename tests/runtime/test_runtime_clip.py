"""The runtime end to end on a bundle exported from a HF checkpoint: embeddings against the TF model and scores
against HF transformers' CLIPModel fed by CLIPImageProcessor."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from clipedge.runtime.clip_runtime import load
from clipedge.runtime.errors import BundleError, ImageError, InputError, TextError
from clipedge.runtime.index import EmbeddingIndex
from clipedge.runtime.preprocess import preprocess
from clipedge.runtime.scoring import softmax

PHOTOS = sorted((__import__("pathlib").Path(__file__).parents[2] / "calibration_data" / "photos").glob("*.webp"))[:6]
TEXTS = ["a photo of a dog", "a bison in the snow", "", "Café &amp; crème, 東京", "word " * 100]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


@pytest.fixture(scope="module")
def tf_model(small_hf_clip):
    from clipedge.export import CLIPModel

    return CLIPModel.from_pretrained(small_hf_clip[1])


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_fp32_embeddings_match_tf(small_bundle, tf_model, fmt):
    runtime = load(small_bundle, precision="fp32", format=fmt)
    pixels = preprocess(PHOTOS, runtime.preprocess_config, layout="NHWC")
    ids = runtime.tokenize(TEXTS)
    assert cosines(runtime.encode_images(PHOTOS), tf_model.encode_image(pixels).numpy()).min() >= 0.99999
    assert cosines(runtime.encode_texts(TEXTS), tf_model.encode_text(ids).numpy()).min() >= 0.99999


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_dynamic_int8_is_close(small_bundle, tf_model, fmt):
    runtime = load(small_bundle, precision="dynamic-int8", format=fmt)
    ids = runtime.tokenize(TEXTS)
    assert cosines(runtime.encode_texts(TEXTS), tf_model.encode_text(ids).numpy()).min() >= 0.999


def test_classify_matches_hf_reference(small_hf_clip, small_bundle):
    """Preprocessing, tokenizer, model, normalization and logit_scale together, against transformers."""
    from transformers import CLIPImageProcessor

    hf_model, _ = small_hf_clip
    runtime = load(small_bundle, precision="fp32", format="onnx")
    labels = ["dog", "bison", "tower", "fish"]
    ours = np.stack([c.probabilities for c in runtime.classify(PHOTOS, labels, template="a photo of a {}.")])
    processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in PHOTOS]
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    ids = torch.from_numpy(runtime.tokenize([f"a photo of a {label}." for label in labels]).astype(np.int64))
    with torch.no_grad():
        logits = hf_model(pixel_values=pixel_values, input_ids=ids).logits_per_image.numpy()
    ours_logits = runtime.logit_scale * runtime.similarity(runtime.encode_images(PHOTOS),
                                                           runtime.label_embeddings(labels, "a photo of a {}."))
    # Logits, not only probabilities: near-uniform softmax rows would hide errors.
    np.testing.assert_allclose(ours_logits, logits, atol=1e-3 * np.abs(logits).max())
    assert np.abs(logits).max() > 1.0
    np.testing.assert_allclose(ours, softmax(logits), atol=1e-4)
    assert runtime.logit_scale == pytest.approx(float(hf_model.logit_scale.detach().exp()), rel=1e-6)


def test_outputs_are_unit_float32(small_bundle):
    runtime = load(small_bundle)
    embeds = runtime.encode_texts(["a", "b"])
    assert embeds.dtype == np.float32 and np.allclose(np.linalg.norm(embeds, axis=1), 1, atol=1e-5)
    assert runtime.encode_texts([]).shape == (0, runtime.manifest.embed_dim)
    assert runtime.describe()["text"]["backend"].startswith("litert")


def test_batches_larger_than_the_model_batch(small_bundle):
    runtime = load(small_bundle, precision="fp32", format="tflite", batch_size=4)
    many = runtime.encode_images(PHOTOS)  # 6 images: batch-1 model, chunks of 4
    one_by_one = np.concatenate([runtime.encode_images([p]) for p in PHOTOS])
    np.testing.assert_allclose(many, one_by_one, atol=1e-6)


def copy_bundle(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_sha256_mismatch_names_the_file(small_bundle, tmp_path):
    bundle = copy_bundle(small_bundle, tmp_path / "b")
    target = bundle / "image_fp32.tflite"
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"image_fp32\.tflite is damaged.*sha256"):
        load(bundle, precision="fp32", format="tflite")


def test_missing_file_and_newer_format(small_bundle, tmp_path):
    bundle = copy_bundle(small_bundle, tmp_path / "b")
    (bundle / "text_fp32.onnx").unlink()
    with pytest.raises(BundleError, match=r"text_fp32\.onnx is missing"):
        load(bundle, precision="fp32", format="onnx")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format 99.*upgrade clipedge"):
        load(bundle)
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load(bundle)
    with pytest.raises(BundleError, match="no clipedge bundle|not a clipedge bundle"):
        load(tmp_path)


def test_unknown_precision_lists_what_exists(small_bundle):
    with pytest.raises(BundleError, match=r"precision=int4.*it has: image/onnx/dynamic-int8"):
        load(small_bundle, precision="int4")


def test_bad_inputs_name_the_item(small_bundle, tmp_path):
    runtime = load(small_bundle)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(PHOTOS[0].read_bytes()[:300])
    with pytest.raises(ImageError, match="image 1"):
        runtime.encode_images([PHOTOS[0], truncated])
    with pytest.raises(TextError, match="text 1"):
        runtime.encode_texts(["fine", None])
    with pytest.raises(TextError):
        runtime.encode_texts(["word " * 100], truncate=False)
    with pytest.raises(InputError, match="label"):
        runtime.classify(PHOTOS[:1], [])
    with pytest.raises(InputError, match="template"):
        runtime.classify(PHOTOS[:1], ["a"], template="no slot")


def test_index_round_trip(small_bundle, tmp_path):
    runtime = load(small_bundle)
    index = EmbeddingIndex.build(runtime, PHOTOS)
    index.save(tmp_path / "idx")
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    hits = loaded.search(runtime, PHOTOS[2], k=3)  # an indexed image finds itself first
    assert hits[0].item == str(PHOTOS[2]) and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(loaded.search(runtime, "a photo of a fish", k=10)) == len(PHOTOS)
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    meta["model"]["sha256"] = "0" * 64
    (tmp_path / "idx" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="rebuild the index"):
        EmbeddingIndex.load(tmp_path / "idx").search(runtime, "x")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    code = ("import sys; from clipedge.runtime.cli.main import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'runtime CLI imported tensorflow'; sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_cli_classify_embed_index_search_info(small_bundle, tmp_path):
    b = ["--bundle", str(small_bundle)]
    result = run_cli("classify", str(PHOTOS[0]), str(PHOTOS[1]), "--labels", "dog,fish", "--json", *b)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [item["image"] for item in payload] == [str(PHOTOS[0]), str(PHOTOS[1])]
    assert sum(t["probability"] for t in payload[0]["top"]) == pytest.approx(1.0, abs=1e-5)
    result = run_cli("embed", "--text", "a dog", "a cat", "-o", str(tmp_path / "t.npy"), *b)
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "t.npy").shape == (2, 32)
    photo_dir = PHOTOS[0].parent
    assert run_cli("index", "build", str(photo_dir), "-o", str(tmp_path / "idx"), *b).returncode == 0
    result = run_cli("search", str(tmp_path / "idx"), "a monument", "-k", "2", "--json", *b)
    assert result.returncode == 0, result.stderr and len(json.loads(result.stdout)) == 2
    result = run_cli("info", str(small_bundle))
    assert result.returncode == 0 and "image_fp32.tflite" in result.stdout


def test_cli_bad_input_is_one_clear_line(small_bundle, tmp_path):
    result = run_cli("classify", str(tmp_path / "missing.jpg"), "--labels", "a", "--bundle", str(small_bundle))
    assert result.returncode == 2
    assert "clipedge: error: image 0" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("classify", str(PHOTOS[0]), "--bundle", str(small_bundle))
    assert result.returncode == 2 and "no labels" in result.stderr
    result = run_cli("info", str(tmp_path))
    assert result.returncode == 2 and "not a clipedge bundle" in result.stderr


def test_runtime_import_does_not_load_tensorflow():
    code = "import sys, clipedge.runtime, clipedge.runtime.clip_runtime, clipedge.runtime.cli.main; " \
           "assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
