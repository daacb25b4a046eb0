"""HEIC/HEIF through pillow-heif (issue #35): a `.heic` file decodes through clipedge.runtime.preprocess like any
other image, close to the PNG of the same picture, with its rotation applied once; without the plugin the error
says what to install."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clipedge.runtime import heif
from clipedge.runtime.datasets import IMAGE_SUFFIXES, image_suffixes, list_images
from clipedge.runtime.errors import ImageError
from clipedge.runtime.preprocess import load_image, preprocess
from tests.runtime.heic_files import save_heic

pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif is not installed (pip install 'clipedge[heif]')")

_ORIENTATION = 0x0112


def picture(width: int = 96, height: int = 48) -> Image.Image:
    """Smooth colours (what lossy HEVC keeps well) with four different corners, so a rotation or mirror shows."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([255 * x / (width - 1), 255 * y / (height - 1), 128 + 0 * x], axis=-1)
    return Image.fromarray(rgb.round().astype(np.uint8), "RGB")


def close(a: Image.Image, b: Image.Image, mean: float = 3.0, worst: int = 24) -> None:
    assert a.size == b.size
    diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16))
    assert diff.mean() < mean and diff.max() <= worst, (diff.mean(), diff.max())


@pytest.fixture
def unregistered(monkeypatch):
    """Pillow as a fresh process has it: no HEIF opener yet, so the decode itself must register it. Pillow's own
    plugins are loaded first: loaded into the patched list, they would be lost with it."""
    Image.init()
    monkeypatch.setattr(heif, "_registered", None)
    monkeypatch.setattr(Image, "ID", [name for name in Image.ID if name != "HEIF"])
    if "HEIF" in Image.OPEN:
        monkeypatch.delitem(Image.OPEN, "HEIF")


def test_register_heif_is_idempotent_and_cheap():
    assert heif.register_heif() is True and heif.register_heif() is True
    assert "HEIF" in Image.OPEN and heif.heif_available()
    assert {".heic", ".heif"} <= heif.HEIF_SUFFIXES <= image_suffixes()
    assert IMAGE_SUFFIXES < image_suffixes()


def test_a_heic_decodes_through_preprocess_like_its_png(tmp_path, unregistered):
    image = picture()
    save_heic(image, tmp_path / "a.heic")
    image.save(tmp_path / "a.png")
    from_heic = load_image(tmp_path / "a.heic")
    assert from_heic.mode == "RGB"
    close(from_heic, image)
    pixels = preprocess([str(tmp_path / "a.heic"), str(tmp_path / "a.png")])
    assert np.abs(pixels[0] - pixels[1]).mean() < 0.05  # normalized units (1/255/std ~ 0.015 per level)
    fast = preprocess(str(tmp_path / "a.heic"), decode="fast")
    assert np.abs(fast[0] - pixels[1]).mean() < 0.05
    # read from bytes too, and found by the folder readers
    close(load_image((tmp_path / "a.heic").read_bytes()), image)
    assert tmp_path / "a.heic" in list_images(tmp_path)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_rotated_heic_is_turned_once(tmp_path, orientation, unregistered):
    """A phone's sideways HEIC: the same upright picture as a JPEG-style EXIF tag on a PNG gives; turned twice it
    would be the wrong size (6, 8) or upside down (3)."""
    image = picture()
    save_heic(image, tmp_path / "r.heic", orientation)
    exif = Image.Exif()
    exif[_ORIENTATION] = orientation
    image.save(tmp_path / "r.png", exif=exif.tobytes())
    upright = load_image(tmp_path / "r.png")
    assert upright.size == ((48, 96) if orientation in (6, 8) else (96, 48))
    close(load_image(tmp_path / "r.heic"), upright)


@pytest.mark.skipif(not heif.avif_available(), reason="this Pillow has no AVIF support (built without libavif)")
def test_avif_is_listed_and_decodes_where_pillow_reads_it(tmp_path):
    image = picture()
    image.save(tmp_path / "a.avif", quality=95)
    assert ".avif" in image_suffixes() and list_images(tmp_path) == [tmp_path / "a.avif"]
    close(load_image(tmp_path / "a.avif"), image)


def test_without_the_plugin_the_error_says_what_to_install(tmp_path, monkeypatch):
    save_heic(picture(), tmp_path / "a.heic")
    Image.init()
    monkeypatch.setattr(heif, "_registered", False)
    monkeypatch.setattr(Image, "ID", [name for name in Image.ID if name != "HEIF"])
    with pytest.raises(ImageError, match=r"HEIF/HEIC image: pip install 'clipedge\[heif\]'"):
        load_image(tmp_path / "a.heic")
    (tmp_path / "b.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageError) as err:
        load_image(tmp_path / "b.jpg")
    assert "heif" not in str(err.value)


def test_absent_pillow_heif_is_no_error_and_nothing_is_imported_early():
    code = (
        "import sys\n"
        "import clipedge.runtime.preprocess, clipedge.runtime.datasets\n"
        "assert 'pillow_heif' not in sys.modules, 'imported before any image was opened'\n"
        "sys.modules['pillow_heif'] = None  # what an install without the extra looks like to import\n"
        "from clipedge.runtime import heif\n"
        "from clipedge.runtime.datasets import image_suffixes\n"
        "heif._registered = None\n"
        "assert heif.register_heif() is False and heif.register_heif() is False\n"
        "assert not heif.HEIF_SUFFIXES & image_suffixes(), image_suffixes()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
