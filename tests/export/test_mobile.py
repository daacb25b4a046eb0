"""The `mobile` export (MediaPipe-ready image towers) checked with MediaPipe Tasks itself: ImageEmbedder and
ImageClassifier load the files and agree with clipedge's runtime on the shipped photos and generated demo images.

A 224-pixel model (CLIP's resolution, so MediaPipe's resize works on real photo sizes) kept small and random; its
random weights make it less sensitive to pixel detail than a trained CLIP, and its class probabilities are close to
ties, so the bounds are the measured values less a margin (tests/scripts/mobile_fidelity.py prints them)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("mediapipe")

from clipedge.export.formats.tflite.mediapipe_metadata import (  # noqa: E402
    LABELS_FILE,
    ROI_SETTINGS,
    add_metadata,
    mediapipe_classify,
    mediapipe_embed,
    read_metadata,
)
from clipedge.export.pipeline.export_bundle import export_bundle  # noqa: E402
from clipedge.export.pipeline.plan import plan_jobs  # noqa: E402
from clipedge.export.settings import ExportSettings  # noqa: E402
from clipedge.runtime.clip_runtime import load  # noqa: E402
from clipedge.runtime.datasets import list_images, shipped_data_dir  # noqa: E402
from clipedge.runtime.errors import ExportError  # noqa: E402
from clipedge.runtime.manifest import Manifest  # noqa: E402
from clipedge.runtime.preprocess import load_image  # noqa: E402
from clipedge.runtime.scoring import l2_normalize  # noqa: E402
from tests.conftest import SMALL_VISION, make_hf_clip  # noqa: E402

pytestmark = pytest.mark.slow  # the fast tier (`pytest -m 'not slow'`) leaves this file out

LABELS = ["dog", "tower", "fish", "bird", "car", "flower"]
PRECISIONS = ("fp32", "int8")


@pytest.fixture(scope="module")
def mobile_bundle(tmp_path_factory):
    """fp32 and full-int8 TFLite, classifier, mobile variants: about 30 s on 2 cores."""
    _, checkpoint = make_hf_clip(tmp_path_factory.mktemp("clip224"),
                                 vision=dict(SMALL_VISION, image_size=224, patch_size=32))
    out = tmp_path_factory.mktemp("mobile") / "bundle"
    export_bundle(out, checkpoint=checkpoint, formats=("tflite",), precisions=PRECISIONS, labels=LABELS,
                  gpu=False, samples=16, mobile=True, progress=False)
    return out


@pytest.fixture(scope="module")
def photos():
    files = list_images(shipped_data_dir() / "photos")
    return [load_image(f) for f in files]


@pytest.fixture(scope="module")
def demo_images():
    """Generated demo images at 320 pixels (not the model's 224: both sides resize them)."""
    from clipedge.export.demo.data import EVAL_STREAM, make_sample

    return [make_sample(seed=0, index=i, stream=EVAL_STREAM, size=320).image for i in range(8)]


def test_manifest_lists_mediapipe_ready_models(mobile_bundle):
    manifest = Manifest.read(mobile_bundle)
    mobile = {a.file: a for a in manifest.artifacts if a.variant == "mobile"}
    assert set(mobile) == {f"{t}_mobile_{p}.tflite" for t in ("image", "classifier") for p in PRECISIONS}
    for artifact in mobile.values():
        assert artifact.inputs == [{"name": "image", "shape": [1, 224, 224, 3], "dtype": "uint8", "layout": "NHWC"}]
        task = "ImageClassifier" if artifact.tower == "classifier" else "ImageEmbedder"
        assert artifact.extra["mediapipe"]["task"] == task
        assert artifact.fidelity["cosine_min"] >= (0.9999 if artifact.precision == "fp32" else 0.8)
        metadata, files = read_metadata(manifest.verified_path(artifact).read_bytes())
        image = metadata.subgraphMetadata[0].inputTensorMetadata[0]
        assert list(image.processUnits[0].options.mean) == [0.0] and list(image.processUnits[0].options.std) == [1.0]
        if artifact.tower == "classifier":
            assert files == {LABELS_FILE: ("\n".join(LABELS) + "\n").encode()}
        else:
            assert files == {}
    # the runtime never picks a mobile model by itself
    runtime = load(mobile_bundle, precision="fp32", format="tflite")
    assert runtime.artifact("image").file == "image_fp32.tflite"
    assert "mobile" in json.dumps(manifest.data["artifacts"])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_image_embedder_agrees_with_runtime(mobile_bundle, photos, demo_images, precision):
    """Measured on all 96 photos (fp32 / int8): clip-crop mean 0.99999 / 0.99985, min 0.99982 / 0.99957; whole
    image mean 0.99967 / 0.99944; demo images 0.99999 / 0.99987 with any setting."""
    manifest = Manifest.read(mobile_bundle)
    path = manifest.verified_path(manifest.find("image", "tflite", precision, "mobile"))
    runtime = load(mobile_bundle, precision=precision, format="tflite")
    images = photos[::4] + demo_images
    reference = runtime.encode_images(images)
    cosines = {roi: np.sum(l2_normalize(mediapipe_embed(path, images, roi)) * reference, axis=-1)
               for roi in ROI_SETTINGS}
    best = cosines["clip-crop"]
    assert best.mean() >= 0.999 and best.min() >= 0.995, best
    assert best.mean() > cosines["full"].mean()  # the window CLIP's own crop keeps
    with pytest.raises(ExportError, match="unknown region-of-interest setting 'middle'"):
        mediapipe_embed(path, images[:1], "middle")


def test_image_classifier_agrees_with_runtime(mobile_bundle, photos, demo_images):
    """Measured: 97.9% top-1 agreement on the 96 photos (clip-crop), 100% on demo images."""
    manifest = Manifest.read(mobile_bundle)
    path = manifest.verified_path(manifest.find("classifier", "tflite", "fp32", "mobile"))
    runtime = load(mobile_bundle, precision="fp32", format="tflite")
    images = photos + demo_images
    top, names = mediapipe_classify(path, images, "clip-crop")
    reference = np.array([r.probabilities.argmax() for r in runtime.classify(images, LABELS)])
    assert [LABELS[i] for i in top] == names  # the label file inside the model names the outputs
    assert np.mean(top == reference) >= 0.9, (top, reference)


def test_metadata_refuses_bad_input(mobile_bundle):
    data = (mobile_bundle / "image_fp32.tflite").read_bytes()
    common = dict(name="m", description="d", image_size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(ExportError, match="2 labels for a classifier with 6 outputs"):
        add_metadata(data, "classifier", output_width=6, labels=["a", "b"], **common)
    with pytest.raises(ExportError, match="needs its labels"):
        add_metadata(data, "classifier", output_width=6, **common)
    with pytest.raises(ExportError, match="not 'text'"):
        add_metadata(data, "text", output_width=6, **common)
    once = add_metadata(data, "image", output_width=32, **common)
    with pytest.raises(ExportError, match="already has TFLite metadata"):
        add_metadata(once, "image", output_width=32, **common)


def test_mobile_needs_tflite_and_an_image_model():
    with pytest.raises(ExportError, match="need the tflite format"):
        ExportSettings(formats=["onnx"], precisions=["fp32"], towers=["image"], gpu=False, mobile=True)
    with pytest.raises(ExportError, match="need the tflite format"):
        ExportSettings(formats=["tflite"], precisions=["fp32"], towers=["text"], gpu=False, mobile=True)
    jobs = plan_jobs(ExportSettings(formats=["tflite"], precisions=["fp32", "auto"], towers=["image", "text"],
                                    gpu=False, labels=["a", "b"], mobile=True))
    assert {j.file for j in jobs if j.variant == "mobile"} == {"image_mobile_fp32.tflite",
                                                               "classifier_mobile_fp32.tflite"}
