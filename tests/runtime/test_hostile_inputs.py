"""Hostile images and texts (issue #17): bounded memory with the reference's pixels, 16-bit images seen as they are,
a tokenizer linear in the text's length with OpenCLIP's ids, unpaired surrogates refused in words."""

from __future__ import annotations

import io
import json
import random
import string
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipedge.runtime.errors import ImageError
from clipedge.runtime.preprocess import PreprocessConfig, preprocess, resized_size
from clipedge.runtime.resample import resize_window
from clipedge.runtime.tokenizer import Tokenizer

FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "box": Image.Resampling.BOX,
           "hamming": Image.Resampling.HAMMING, "lanczos": Image.Resampling.LANCZOS,
           "nearest": Image.Resampling.NEAREST}


def png(width: int, height: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


# ---- 3. a 20000x1 PNG ---------------------------------------------------------------------------------------------
MEMORY_CHILD = textwrap.dedent("""
    import io, resource, sys
    import numpy as np
    from PIL import Image
    from clipedge.runtime.preprocess import preprocess

    def peak_kib():
        # VmHWM: this process's own peak. getrusage's ru_maxrss would also count the pytest process it was forked
        # from (Linux keeps ru_maxrss across exec); run alone, the two agree.
        try:
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # the unbounded resize wanted 9.6 GB
    out = {}
    for w, h in ((20000, 1), (1, 20000), (5000, 1)):
        pixels = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        buf = io.BytesIO(); Image.fromarray(pixels).save(buf, "PNG")
        before = peak_kib()
        x = preprocess(buf.getvalue())
        peak = peak_kib()
        out[f"{w}x{h}"] = {"peak_mib": round(peak / 1024, 1), "growth_mib": round((peak - before) / 1024, 1),
                           "shape": list(x.shape)}
    print(out)
""")


def test_a_20000x1_png_takes_megabytes_not_gigabytes():
    result = subprocess.run([sys.executable, "-c", MEMORY_CHILD], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    measured = eval(result.stdout.strip())  # noqa: S307 - our own child's dict literal
    print("peak RSS of preprocess (child process):", measured)
    for size, m in measured.items():
        assert m["shape"] == [1, 224, 224, 3], size
        assert m["growth_mib"] < 64, (size, m)  # was 9.6 GB (20000x1) and 2.4 GB (5000x1)


@pytest.mark.parametrize(("height", "width"), [(1, 1000), (1000, 1), (2, 1500), (1500, 3), (7, 2000)])
def test_extreme_aspect_ratios_match_clip_image_processor(height, width):
    transformers = pytest.importorskip("transformers")
    pixels = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    hf = transformers.CLIPImageProcessorPil()(Image.fromarray(pixels), return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(preprocess(pixels), hf.transpose(0, 2, 3, 1))
    config = PreprocessConfig(image_size=200, crop_size=224)  # crop larger than the short side: zero padding
    processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 200},
                                                   crop_size={"height": 224, "width": 224})
    hf = processor(Image.fromarray(pixels), return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(preprocess(pixels, config), hf.transpose(0, 2, 3, 1))


def test_resize_window_is_pillows_resize_bit_for_bit():
    """Every filter, upsampling and downsampling, wide and tall (Pillow 13 runs the vertical pass first for the
    latter: each pass rounds to 8 bits, so the order shows in the last bit), random windows."""
    rng = np.random.default_rng(0)
    shapes = [(1, 600), (600, 1), (3, 500), (500, 7), (225, 300), (640, 480), (1000, 37), (37, 1000), (97, 1301),
              (2, 2), (1, 1), (300, 301)]
    windows = 0
    for width, height in shapes:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for short in (224, 17):
            out_h, out_w = resized_size(height, width, short)
            for name, pillow_filter in FILTERS.items():
                full = np.asarray(image.resize((out_w, out_h), pillow_filter))
                r0, c0 = int(rng.integers(0, out_h)), int(rng.integers(0, out_w))
                r1 = int(rng.integers(r0 + 1, min(out_h, r0 + 230) + 1))
                c1 = int(rng.integers(c0 + 1, min(out_w, c0 + 230) + 1))
                window = resize_window(image, (out_w, out_h), (r0, r1), (c0, c1), name)
                assert np.array_equal(window, full[r0:r1, c0:c1]), (width, height, short, name, (r0, r1, c0, c1))
                windows += 1
    assert windows == len(shapes) * 2 * len(FILTERS)


# ---- 11. 16-bit grayscale ---------------------------------------------------------------------------------------
def test_16_bit_grayscale_is_scaled_not_clipped_to_white():
    values = np.random.default_rng(3).integers(0, 65536, (61, 97), dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "I;16"
    eight_bit = np.round(values / 257).astype(np.uint8)
    np.testing.assert_array_equal(preprocess(buf.getvalue()), preprocess(eight_bit))
    white = preprocess(np.full((61, 97), 255, np.uint8))
    assert np.abs(preprocess(buf.getvalue()) - white).max() > 1  # what Pillow's convert("RGB") gave: all white


def test_images_without_a_range_are_refused_with_a_word():
    with pytest.raises(ImageError, match="floating-point pixels"):
        preprocess(Image.fromarray(np.random.default_rng(0).random((8, 8)).astype(np.float32)))
    with pytest.raises(ImageError, match=r"32-bit integer pixels in \[-50, 400\]"):
        preprocess(Image.fromarray(np.array([[-50, 400]], np.int32)))


# ---- 7. the tokenizer --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    from tests.runtime.test_tokenizer import load_reference_module

    return load_reference_module().SimpleTokenizer()


def test_a_30000_letter_word_is_fast_and_gives_the_reference_ids(reference):
    tokenizer = Tokenizer.default()
    rng = random.Random(0)
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(30000))
    start = time.perf_counter()
    ids = tokenizer(word)
    seconds = time.perf_counter() - start
    print(f"30,000-letter word: {seconds:.3f} s")
    assert seconds < 2.0  # quadratic BPE took 13 s
    start = time.perf_counter()
    tokenizer.encode(word + " " + word[::-1])  # no truncation: every merge of 60,000 letters
    assert time.perf_counter() - start < 4.0
    assert ids[0, 1:76].tolist() == tokenizer.encode(word)[:75]  # stopping at 75 ids changes none of them
    for length in (60, 300, 1500):  # the heap BPE against OpenCLIP's loop on whole long words
        for alphabet in ("ab", "aeiou", string.ascii_lowercase, "thé日本"):
            text = "".join(rng.choice(alphabet) for _ in range(length))
            assert tokenizer.encode(text) == reference.encode(text), (length, alphabet)


def test_unpaired_surrogates_are_replaced_as_the_reference_does(reference):
    """ftfy turns a lone surrogate into U+FFFD before BPE (a str that cannot be UTF-8 encoded would be a TextError)."""
    tokenizer = Tokenizer.default()
    texts = ["bad \udc80 text", "\ud800", "a\udfffb", "\ud83d\ude00"]
    np.testing.assert_array_equal(tokenizer(texts), reference(texts).numpy())


# ---- 11. CLI details: --top, -o without .npy, a query that is a file's name ----------------------------------------
def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


PHOTO = sorted((Path(__file__).parents[2] / "calibration_data" / "photos").glob("*.webp"))[0]


@pytest.mark.parametrize("top", ["0", "-1"])
def test_top_must_be_positive(small_bundle, top):
    result = run_cli("classify", str(PHOTO), "--labels", "a,b,c", "--top", top, "--bundle", str(small_bundle))
    assert result.returncode == 2 and "--top: must be a positive integer" in result.stderr


def test_embed_reports_the_file_it_wrote(small_bundle, tmp_path):
    result = run_cli("embed", "--text", "a dog", "-o", str(tmp_path / "out" / "noext"), "--json",
                     "--bundle", str(small_bundle))
    assert result.returncode == 0, result.stderr
    written = Path(json.loads(result.stdout)["output"])
    assert written.is_file() and np.load(written).shape == (1, 32)


def test_a_text_query_that_is_also_a_file_name_is_a_text(small_bundle, tmp_path):
    index = tmp_path / "idx"
    assert run_cli("index", "build", str(PHOTO.parent), "-o", str(index), "--bundle", str(small_bundle)).returncode == 0
    (tmp_path / "dog").write_bytes(b"not an image")  # `search idx dog` run where a file is called dog
    text = run_cli("search", str(index), "dog", "--json", "--bundle", str(small_bundle), cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    direct = run_cli("search", str(index), "dog", "--json", "--bundle", str(small_bundle))
    assert json.loads(text.stdout) == json.loads(direct.stdout)
    image = run_cli("search", str(index), "--image", str(PHOTO), "--json", "--bundle", str(small_bundle))
    assert image.returncode == 0 and json.loads(image.stdout)[0]["item"].endswith(PHOTO.name)
