"""CLIPFeatureExtractorTF (in-graph preprocessing) against CLIPImageProcessor and clipedge.runtime.preprocess.

Tolerance: `TOLERANCE` (2 uint8 steps, see the class docstring for the measurements) on the max |diff| of normalized
values, and `MEAN_TOLERANCE` on the mean |diff|, which catches a systematic drift that the max alone would allow.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")
transformers = pytest.importorskip("transformers")

from clipedge.export.model.feature_extractor import TOLERANCE, CLIPFeatureExtractorTF  # noqa: E402
from clipedge.runtime.errors import InputError  # noqa: E402
from clipedge.runtime.preprocess import PreprocessConfig, preprocess  # noqa: E402

MEAN_TOLERANCE = 2e-4  # measured ~1e-5: all but a few rounding ties are equal

# Real photos: the repo's calibration data if present, else the shared set this project was developed with.
_REPO = Path(__file__).resolve().parents[2]
PHOTO_DIRS = [_REPO / "calibration_data", Path("/work/shared/photos")]
# 119 px to 1920 px a side, both orientations, up- and downscaled; cabrillo (1024x359) gets Pillow's vertical pass first
PHOTO_NAMES = [
    "explore_monuments__cabrillo.webp",
    "categorization__monument1.webp",
    "explore_world_animals__bison.webp",
    "categorization__plier3.webp",
    "erase__kitten.webp",
]


def photos() -> list[np.ndarray]:
    for folder in PHOTO_DIRS:
        found = [folder / name for name in PHOTO_NAMES if (folder / name).is_file()]
        if found:
            return [np.asarray(Image.open(path).convert("RGB")) for path in found]
    return []


def smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Gradients plus mild noise (sd 4)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.stack([128 + 100 * np.sin(3 * x / w + c) * np.cos(2 * y / h + 0.7 * c) for c in range(3)], axis=-1)
    image += np.random.default_rng(seed).normal(0, 4, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


SYNTHETIC = {
    f"{kind}-{h}x{w}": make(h, w)
    for kind, make in [("smooth", smooth), ("noise", noise)]
    for h, w in [(30, 17), (17, 30), (224, 224), (300, 300), (700, 1000), (1000, 700), (1024, 359), (160, 90)]
}


def encode(pixels: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def extractor():
    return CLIPFeatureExtractorTF()


@pytest.fixture(scope="module")
def hf():
    return transformers.CLIPImageProcessorPil()


def hf_nhwc(processor, image: Image.Image) -> np.ndarray:
    return processor(image, return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)


def assert_close(actual, expected) -> None:
    actual = np.asarray(actual)
    assert actual.shape == expected.shape and actual.dtype == np.float32
    diff = np.abs(actual - expected)
    assert diff.max() <= TOLERANCE, f"max |diff| {diff.max():.4f} > {TOLERANCE}"
    assert diff.mean() <= MEAN_TOLERANCE, f"mean |diff| {diff.mean():.2e} > {MEAN_TOLERANCE}"


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_pixels_match_clip_image_processor(extractor, hf, name):
    pixels = SYNTHETIC[name]
    assert_close(extractor.from_pixels(pixels), hf_nhwc(hf, Image.fromarray(pixels)))


def test_photos_match_clip_image_processor(extractor, hf):
    images = photos()
    if not images:
        pytest.skip(f"no photos in {[str(d) for d in PHOTO_DIRS]}")
    for pixels in images:
        assert_close(extractor.from_pixels(pixels), hf_nhwc(hf, Image.fromarray(pixels)))


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("PNG", {}), ("JPEG", {"quality": 95, "subsampling": 0}), ("JPEG", {"quality": 75, "subsampling": 2})],
)
def test_encoded_bytes_match(extractor, hf, fmt, options):
    images = photos()[:3] + [SYNTHETIC["smooth-700x1000"], SYNTHETIC["smooth-30x17"]]
    for pixels in images:
        data = encode(pixels, fmt, **options)
        expected = hf_nhwc(hf, Image.open(io.BytesIO(data)))  # the reference decodes with Pillow
        actual = extractor.from_encoded(tf.constant(data)).numpy()
        assert_close(actual, expected)
        assert_close(actual, preprocess(data))  # the runtime gives the reference's values exactly


def test_runtime_and_tf_agree_on_grayscale_and_rgba_png(extractor):
    gray = SYNTHETIC["smooth-300x300"][:, :, 0]
    rgba = np.dstack([SYNTHETIC["smooth-160x90"], noise(160, 90)[:, :, 0]])
    for pixels in (gray, rgba):  # decode_image(channels=3): gray replicated, alpha dropped, as the runtime does
        data = encode(pixels, "PNG")
        assert_close(extractor.from_encoded(tf.constant(data)).numpy(), preprocess(data))


def test_batch_equals_single(extractor):
    images = np.stack([smooth(240, 320, seed=s) for s in range(3)])
    batch = extractor.from_pixels_batch(images).numpy()
    assert batch.shape == (3, 224, 224, 3)
    for i in range(3):
        np.testing.assert_allclose(batch[i : i + 1], extractor.from_pixels(images[i]).numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("image_size", "crop_size"), [(336, 336), (200, 224), (256, 201)])
def test_other_configs_match_runtime(image_size, crop_size):
    config = PreprocessConfig(image_size=image_size, crop_size=crop_size)
    extractor = CLIPFeatureExtractorTF(config)
    for pixels in (SYNTHETIC["smooth-1000x700"], SYNTHETIC["smooth-30x17"]):
        assert_close(extractor.from_pixels(pixels).numpy(), preprocess(pixels, config))


def test_zero_size_pixels_fail_in_graph(extractor):
    with pytest.raises(tf.errors.InvalidArgumentError, match="zero size"):
        extractor.from_pixels(np.zeros((0, 5, 3), np.uint8))


def test_rejects_other_resample():
    with pytest.raises(InputError, match="bicubic"):
        CLIPFeatureExtractorTF(PreprocessConfig(resample="bilinear"))
    with pytest.raises(InputError, match="PreprocessConfig"):
        CLIPFeatureExtractorTF({"image_size": 224})
