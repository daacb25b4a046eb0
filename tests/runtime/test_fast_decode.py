"""The fast decode path for large photos (clipedge.runtime.decode, issue #18) against the exact one, and the exact one
against HF `CLIPImageProcessor` (the reference), through every entry point that takes the choice.

The fidelity check uses the shipped demo CLIP (a trained model: a random one barely reacts to resampling details) in
PyTorch via transformers, on the shipped photos and on large JPEG/PNG photos made from them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipedge.runtime.clip_runtime import load
from clipedge.runtime.decode import DECODES, Shrink
from clipedge.runtime.errors import InputError
from clipedge.runtime.preprocess import OPENAI_CLIP_STD, PreprocessConfig, preprocess

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = sorted((ROOT / "calibration_data" / "photos").glob("*.webp"))
EVAL = sorted((ROOT / "calibration_data" / "eval").glob("*/*.jpg"))
DEMO = ROOT / "export" / "demo" / "demo_checkpoint"
# Measured with the 224-px demo CLIP (fp32): min cosine 0.9966 on the shipped photos (the 12 larger than 2x the
# model's size are shrunk), 0.998 on 12 MP JPEGs; Pillow-thumbnail-style margin 1 gave 0.962, which this floor
# catches. The demo is 112 px since issue #19, so more is shrunk and further: min 0.9921 (the 5 MP JPEG with EXIF
# orientation), 0.997 or more on the others.
MIN_COSINE = 0.99


def levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| of normalized pixels, back in 0..255 levels."""
    return np.abs(a - b) * np.asarray(OPENAI_CLIP_STD, np.float32) * 255


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> list[Path]:
    """Six photos: shipped ones upscaled to about 5 MP with sensor-like noise; JPEG (one with EXIF orientation 6,
    one progressive) and PNG (no DCT scaling: the box reduction alone)."""
    root = tmp_path_factory.mktemp("large")
    biggest = sorted(PHOTOS, key=lambda p: -np.prod(Image.open(p).size))[:6]
    out = []
    for i, source in enumerate(biggest):
        image = Image.open(source).convert("RGB")
        scale = (5e6 / (image.width * image.height)) ** 0.5
        size = (round(image.width * scale), round(image.height * scale))
        pixels = np.asarray(image.resize(size, Image.Resampling.LANCZOS), np.int16)
        pixels = pixels + np.random.default_rng(i).normal(0, 5, pixels.shape[:2] + (1,)).astype(np.int16)
        big = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        path = root / f"{i}.{'png' if i == 5 else 'jpg'}"
        if i == 3:
            exif = Image.Exif()
            exif[0x0112] = 6
            big.save(path, quality=90, exif=exif)
        else:
            big.save(path, quality=90, progressive=i == 4)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def demo():
    model = transformers.CLIPModel.from_pretrained(DEMO).eval()

    def embed(pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model.get_image_features(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))
        out = getattr(out, "pooler_output", out).numpy()
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    return embed


@pytest.mark.slow
def test_exact_equals_clip_image_processor_on_large_photos(large):
    hf = transformers.CLIPImageProcessorPil()
    for path in large:
        if path.name == "3.jpg":
            continue  # EXIF orientation: CLIPImageProcessor ignores it on a PIL image (test_preprocess covers it)
        expected = hf(Image.open(path), return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(preprocess(str(path), decode="exact"), expected)
        np.testing.assert_array_equal(preprocess(str(path)), expected)  # preprocess() stays exact by default


def test_jpeg_is_decoded_at_a_reduced_scale_keeping_twice_the_size(large):
    image = Image.open(large[0])
    full = image.size
    Shrink(224, 224).before_decode(image)
    image.load()
    assert image.size[0] < full[0] / 1.9 and min(image.size) >= 2 * 224


def test_small_images_are_untouched(tmp_path):
    """Up to twice the resized size per axis, fast gives the exact pixels: the shipped evaluation images and the
    shipped photos of 320 x 240 and the like."""
    small = [p for p in PHOTOS if max(Image.open(p).size) <= 640] + EVAL[::10]
    assert len(small) > 50
    np.testing.assert_array_equal(preprocess(small, decode="fast"), preprocess(small, decode="exact"))


def test_fast_is_close_to_exact(large, demo):
    photos = PHOTOS + large
    exact, fast = preprocess(photos, decode="exact"), preprocess(photos, decode="fast")  # at CLIP's usual 224
    diff = levels(fast, exact)
    assert diff.mean() < 1.0 and np.percentile(diff, 99) < 8  # measured: mean 0.6, 99th 4 levels on 12 MP
    assert diff[len(PHOTOS):].max() > 0  # the large ones did take the fast path
    side = json.loads((DEMO / "preprocessor_config.json").read_text())["crop_size"]["height"]  # the demo's 112
    config = PreprocessConfig(image_size=side, crop_size=side)
    exact, fast = preprocess(photos, config, decode="exact"), preprocess(photos, config, decode="fast")
    cosine = (demo(exact) * demo(fast)).sum(axis=1)
    assert cosine.min() >= MIN_COSINE, sorted(zip(cosine.tolist(), map(str, photos), strict=True))[:3]


def test_exif_orientation_on_the_fast_path(large):
    rotated = large[3]
    assert Image.open(rotated).getexif().get(0x0112) == 6
    fast, exact = preprocess(str(rotated), decode="fast"), preprocess(str(rotated), decode="exact")
    assert levels(fast, exact).mean() < 1.0  # unrotated, the two would differ everywhere


def test_bytes_and_pil_images_take_the_fast_path(large):
    data = large[0].read_bytes()
    by_path = preprocess(str(large[0]), decode="fast")
    np.testing.assert_array_equal(preprocess(data, decode="fast"), by_path)
    pil = Image.open(io.BytesIO(data))
    assert levels(preprocess(pil, decode="fast"), preprocess(pil, decode="exact")).mean() < 1.0


def test_resize_mode_none_is_never_shrunk(large):
    config = PreprocessConfig(resize_mode="none")
    np.testing.assert_array_equal(preprocess(str(large[0]), config, decode="fast"),
                                  preprocess(str(large[0]), config, decode="exact"))


def test_runtime_and_cli_take_the_choice(small_bundle, large, tmp_path):
    fast, exact = load(small_bundle), load(small_bundle, decode="exact")
    assert fast.decode == "fast" and exact.decode == "exact" and DECODES == ("exact", "fast")
    paths = [str(p) for p in large[:2]]
    np.testing.assert_array_equal(fast.encode_images(paths, decode="exact"), exact.encode_images(paths))
    assert not np.array_equal(fast.encode_images(paths), exact.encode_images(paths))
    with pytest.raises(InputError, match="decode must be one of"):
        load(small_bundle, decode="quick")
    out = tmp_path / "e.npy"
    done = subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", "embed", *paths, "--decode", "exact",
                           "--bundle", str(small_bundle), "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(out), exact.encode_images(paths), rtol=0, atol=1e-6)


def test_bench_photos_times_decode_beside_the_model(small_bundle, large, tmp_path):
    import json

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in large[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    done = subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", "bench", str(small_bundle), "--photos",
                           str(folder), "--repeats", "1", "--threads", "1", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {row["what"]: row for row in json.loads(done.stdout)["rows"]}
    assert list(rows) == ["model", "fast decode", "fast single", "fast stream", "exact decode", "exact single",
                          "exact stream"]
    assert rows["fast stream"]["images"] == 2 and rows["model"]["images_per_second"] > 0
    # the exact path decodes 5 MP photos whole: slower than the fast one on the same files, by far
    assert rows["exact decode"]["latency"]["median_ms"] > rows["fast decode"]["latency"]["median_ms"]
    model_file = small_bundle / json.loads((small_bundle / "manifest.json").read_text())["artifacts"][0]["file"]
    refused = subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", "bench", str(model_file), "--photos",
                              str(folder)], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "needs a bundle directory" in refused.stderr
