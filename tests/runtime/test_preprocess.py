"""clipedge.runtime.preprocess against HF transformers' CLIPImageProcessor (the reference), plus every bad-input check.

transformers 5.x's `CLIPImageProcessor()` is the torchvision backend when torchvision is installed and falls back to
`CLIPImageProcessorPil` otherwise; the Pillow one is OpenAI's transform and the one compared with here.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from clipedge.runtime.errors import ClipEdgeError, ImageError, InputError
from clipedge.runtime.preprocess import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PreprocessConfig,
    load_image,
    preprocess,
    resized_size,
)

transformers = pytest.importorskip("transformers")

ATOL = 1e-5  # on normalized values; measured: 0.0 (bit-identical) everywhere below


@pytest.fixture(scope="module")
def hf():
    return transformers.CLIPImageProcessorPil()


def hf_nhwc(processor, image: Image.Image) -> np.ndarray:
    """CLIPImageProcessor's pixel_values, NCHW -> NHWC."""
    return processor(image, return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)


def noise(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Gradients plus mild noise: closer to a photo than uniform noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.stack([128 + 100 * np.sin(3 * x / w + c) * np.cos(2 * y / h + 0.7 * c) for c in range(3)], axis=-1)
    image += np.random.default_rng(seed).normal(0, 4, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def assert_close(actual: np.ndarray, expected: np.ndarray, atol: float = ATOL) -> None:
    assert actual.shape == expected.shape and actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


# --- against CLIPImageProcessor ----------------------------------------------------------------------------------

SIZES = [  # (height, width): exact, tiny, odd, off-by-one, wide, tall, large, extreme aspect
    (224, 224),
    (1, 1),
    (2, 3),
    (30, 17),
    (17, 30),
    (223, 225),
    (225, 223),
    (224, 500),
    (500, 224),
    (333, 334),
    (700, 1000),
    (1000, 700),
    (1, 300),
    (300, 1),
    (5, 600),
]


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_matches_clip_image_processor_sizes(hf, height, width):
    for pixels in (noise(height, width), smooth(height, width)):
        assert_close(preprocess(pixels), hf_nhwc(hf, Image.fromarray(pixels)))


@pytest.mark.parametrize(
    ("image_size", "crop_size"),
    [(336, 336), (256, 224), (200, 224), (256, 201)],  # L/14-336; crop < resize; crop > resize (zero pad); odd crop
)
def test_matches_clip_image_processor_configs(image_size, crop_size):
    processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": crop_size, "width": crop_size}
    )
    config = PreprocessConfig(image_size=image_size, crop_size=crop_size)
    for height, width in [(50, 81), (301, 200), (1000, 333)]:
        pixels = noise(height, width)
        assert_close(preprocess(pixels, config), hf_nhwc(processor, Image.fromarray(pixels)))


def test_default_clip_image_processor_is_the_pil_one(hf):
    processor = transformers.CLIPImageProcessor()
    if processor.backend != "pil":
        pytest.skip(f"CLIPImageProcessor() uses the {processor.backend} backend here (torchvision installed)")
    image = Image.fromarray(smooth(240, 320))
    assert_close(preprocess(image), hf_nhwc(processor, image))


def test_resized_size_rule():
    # int(224 * long / short), truncated: 224 * 500 / 333 = 336.34 -> 336; 224 * 1024 / 359 = 638.9 -> 638.
    assert resized_size(333, 500, 224) == (224, 336)
    assert resized_size(1024, 359, 224) == (638, 224)
    assert resized_size(224, 224, 224) == (224, 224)
    assert resized_size(1, 300, 224) == (224, 67200)


def rgba_base() -> Image.Image:
    pixels = noise(61, 97, 4, seed=1)
    pixels[:20, :, 3] = 0  # a fully transparent band, so dropping vs compositing alpha differ a lot
    return Image.fromarray(pixels, mode="RGBA")


def mode_image(mode: str) -> Image.Image:
    base = rgba_base()
    if mode == "P":
        return base.convert("RGB").quantize(colors=64)
    if mode == "P+transparency":
        image = base.convert("RGB").quantize(colors=64)
        image.info["transparency"] = 0
        return image
    if mode == "RGB+transparency":  # an RGB PNG with a tRNS colour key
        pixels = np.asarray(base.convert("RGB")).copy()
        pixels[:20] = (10, 20, 30)
        return Image.open(io.BytesIO(encode(Image.fromarray(pixels), transparency=(10, 20, 30))))
    if mode == "I;16":
        return Image.fromarray(np.random.default_rng(2).integers(0, 65536, (61, 97), dtype=np.uint16))
    if mode == "I":  # 32-bit integers holding 8-bit data (PGM, some TIFFs)
        return Image.fromarray(np.random.default_rng(2).integers(0, 256, (61, 97), dtype=np.int32))
    return base.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "CMYK", "1", "YCbCr", "I"])
def test_modes_without_alpha_match(hf, mode):
    image = mode_image(mode)
    assert image.mode == mode
    expected = hf_nhwc(hf, image)  # HF: image.convert("RGB") for modes without transparency
    assert_close(preprocess(image), expected)
    assert_close(preprocess(image, background=(255, 255, 255)), expected)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P+transparency", "RGB+transparency"])
def test_modes_with_alpha(hf, mode):
    image = mode_image(mode)
    # Default: alpha dropped, as Pillow's convert("RGB") / OpenAI CLIP / OpenCLIP do. (Compared with HF on the bare
    # RGB pixels: `convert("RGB")` of a P image keeps its transparency as an RGB colour key in `info`, and HF 5.x
    # would composite pixels of that colour onto white even in the RGB image.)
    assert_close(preprocess(image), hf_nhwc(hf, Image.fromarray(np.asarray(image.convert("RGB")))))
    # transformers 5.x composites onto white instead; background=(255, 255, 255) reproduces it exactly.
    assert_close(preprocess(image, background=(255, 255, 255)), hf_nhwc(hf, image))
    assert np.abs(preprocess(image) - hf_nhwc(hf, image)).max() > 0.5  # the two conventions really differ


def test_rgba_array_and_background_colour():
    image = rgba_base()
    pixels = np.asarray(image)
    assert_close(preprocess(pixels), preprocess(image))
    assert_close(preprocess(pixels, background=(0, 128, 255)), preprocess(image, background=(0, 128, 255)))
    # Fully transparent rows become the background colour exactly (before resize blurs the edge).
    top = load_image(pixels, background=(0, 128, 255))
    assert np.all(np.asarray(top)[:15] == (0, 128, 255))


def exif_rotated_jpeg() -> bytes:
    """100 wide x 60 tall JPEG whose EXIF orientation 6 says: rotate 90 degrees clockwise to view."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(smooth(60, 100)), "JPEG", quality=95, exif=exif)


def test_exif_orientation_applied(hf, tmp_path):
    data = exif_rotated_jpeg()
    stored = Image.open(io.BytesIO(data))
    upright = ImageOps.exif_transpose(stored)
    assert stored.size == (100, 60) and upright.size == (60, 100)
    assert load_image(data).size == (60, 100)
    # CLIPImageProcessor does not apply EXIF to a PIL image (only transformers' own load_image does): compare with
    # HF on the image transposed beforehand, and check that HF on the stored image really differs.
    expected = hf_nhwc(hf, upright)
    assert_close(preprocess(data), expected)
    assert np.abs(hf_nhwc(hf, stored) - expected).max() > 0.5
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data)
    assert_close(preprocess(path), expected)
    assert_close(preprocess(Image.open(io.BytesIO(data))), expected)


def test_sources_give_identical_results(hf, tmp_path):
    image = Image.fromarray(smooth(150, 260))
    data = encode(image)
    path = tmp_path / "img.png"
    path.write_bytes(data)
    pixels = np.asarray(image)
    expected = hf_nhwc(hf, image)
    sources = [
        str(path),
        path,
        data,
        bytearray(data),
        memoryview(data),
        image,
        pixels,
        np.asfortranarray(pixels),  # not C-contiguous
        np.pad(pixels, ((0, 0), (0, 0), (0, 1)))[:, :, :3],  # strided view
    ]
    for source in sources:
        assert_close(preprocess(source), expected)
    batch = preprocess(sources)
    assert batch.shape == (len(sources), 224, 224, 3)
    for row in batch:
        assert_close(row[None], expected)


def test_grayscale_arrays():
    gray = noise(40, 70, 1)
    rgb = np.repeat(gray, 3, axis=2)
    assert_close(preprocess(gray), preprocess(rgb))
    assert_close(preprocess(gray[:, :, 0]), preprocess(rgb))


def test_batch_of_mixed_sizes_and_nchw():
    items = [noise(30, 17), smooth(500, 224), noise(224, 224, 4)]
    nhwc = preprocess(items)
    assert nhwc.shape == (3, 224, 224, 3) and nhwc.dtype == np.float32
    for i, item in enumerate(items):
        assert_close(nhwc[i : i + 1], preprocess(item))
    nchw = preprocess(items, layout="NCHW")
    assert nchw.shape == (3, 3, 224, 224) and nchw.flags.c_contiguous
    np.testing.assert_array_equal(nchw, nhwc.transpose(0, 3, 1, 2))
    assert preprocess(tuple(items)).shape == (3, 224, 224, 3)


def test_load_image_returns_upright_rgb():
    image = load_image(mode_image("CMYK"))
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (97, 61)


def test_config_round_trip_and_checks():
    config = PreprocessConfig(image_size=336, crop_size=336)
    d = json.loads(json.dumps(config.to_dict()))
    assert d == {
        "image_size": 336,
        "crop_size": 336,
        "mean": list(OPENAI_CLIP_MEAN),
        "std": list(OPENAI_CLIP_STD),
        "resample": "bicubic",
    }
    assert PreprocessConfig.from_dict(d) == config
    assert PreprocessConfig() == PreprocessConfig.from_dict({})
    with pytest.raises(InputError, match="unknown preprocessing keys.*'size'"):
        PreprocessConfig.from_dict({"size": 224})
    for bad in [
        {"image_size": 0},
        {"crop_size": 22.5},
        {"image_size": True},
        {"mean": (0.5, 0.5)},
        {"std": (0.5, 0.0, 0.5)},
        {"std": "abc"},
        {"mean": (0.5, float("nan"), 0.5)},
        {"resample": "cubic"},
    ]:
        with pytest.raises(InputError, match=next(iter(bad))):
            PreprocessConfig(**bad)


def test_runtime_import_does_not_load_tensorflow():
    code = "import sys, clipedge.runtime.preprocess; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- bad input: one ImageError (or InputError) that names the item ----------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming width x height pixels (a decompression bomb's header), with one tiny IDAT chunk."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.fixture
def good(tmp_path) -> Path:
    path = tmp_path / "good.png"
    path.write_bytes(encode(Image.fromarray(noise(20, 30))))
    return path


def expect_item_error(items, index: int, *needles: str, exc=ImageError, **kwargs) -> ImageError:
    """preprocess(items) raises `exc`, whose message names item `index` and contains each needle."""
    with pytest.raises(exc) as info:
        preprocess(items, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, ClipEdgeError)
    assert f"image {index} " in message, message
    for needle in needles:
        assert needle in message, message
    return info.value


def test_missing_file(good, tmp_path):
    missing = tmp_path / "missing.jpg"
    expect_item_error([good, missing], 1, str(missing), "no such file")
    with pytest.raises(ImageError, match="missing.jpg.*no such file"):
        load_image(missing)


def test_directory(good, tmp_path):
    expect_item_error([good, tmp_path], 1, str(tmp_path), "directory")


def test_not_an_image(good, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    err = expect_item_error([good, good, text], 2, "notes.jpg", "not an image")
    assert err.__cause__ is not None  # Pillow's error is chained, not shown as the error
    expect_item_error([b"GIF89a garbage", good], 0, "<14 bytes>", "not an image")
    expect_item_error([good, b""], 1, "empty")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(good, tmp_path, fmt):
    data = encode(Image.fromarray(smooth(200, 300)), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    err = expect_item_error([good, path], 1, path.name, "truncated")
    assert err.__cause__ is not None
    expect_item_error([data[: len(data) // 2]], 0, "truncated")


def test_zero_size(good):
    expect_item_error([good, np.zeros((0, 5, 3), np.uint8)], 1, "zero size")
    expect_item_error([Image.new("RGB", (0, 5)), good], 0, "zero size")


def test_too_many_pixels(good, tmp_path):
    # Over max_pixels: refused from the header, before decoding.
    expect_item_error([good, good], 0, "good.png", "max_pixels=100", max_pixels=100)
    expect_item_error([noise(20, 30)], 0, "max_pixels", max_pixels=599)
    # A decompression bomb over Pillow's default limit (warning zone: our check) and over twice it (Pillow's error).
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(10_000, 10_000))
    expect_item_error([good, bomb], 1, "bomb.png", "100000000 pixels")
    big_bomb = tmp_path / "big_bomb.png"
    big_bomb.write_bytes(png_header_only(20_000, 20_000))
    expect_item_error([good, big_bomb], 1, "big_bomb.png", "too large")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint16, np.int64, bool])
def test_wrong_dtype(good, dtype):
    expect_item_error([good, good, np.zeros((8, 8, 3), dtype)], 2, f"dtype={np.dtype(dtype)}", "only uint8")


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (8, 8, 2), (8, 8, 5), (8,), (8, 8, 3, 1)])
def test_wrong_shape(good, shape):
    expect_item_error([good, np.zeros(shape, np.uint8)], 1, f"shape={shape}", "expected HxW")


@pytest.mark.parametrize("item", [42, None, ["nested"], {"a": 1}])
def test_unsupported_type(good, item):
    expect_item_error([good, item], 1, "unsupported type")


def test_single_item_errors_name_the_item(tmp_path):
    with pytest.raises(ImageError, match=r"image '.*nope\.png': no such file"):
        preprocess(tmp_path / "nope.png")
    with pytest.raises(ImageError, match=r"image <array dtype=float32 shape=\(4, 4, 3\)>: dtype float32"):
        preprocess(np.zeros((4, 4, 3), np.float32))


def test_bad_arguments(good):
    with pytest.raises(InputError, match="layout.*'NWHC'"):
        preprocess(good, layout="NWHC")
    with pytest.raises(InputError, match="empty list"):
        preprocess([])
    with pytest.raises(InputError, match="background"):
        preprocess(good, background=(255, 255))
    with pytest.raises(InputError, match="background"):
        load_image(good, background=(0, 0, 300))
    with pytest.raises(InputError, match="PreprocessConfig"):
        preprocess(good, config={"image_size": 224})
