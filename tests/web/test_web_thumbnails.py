"""`clipedge web --gallery DIR` puts thumbnails into the site, not the photos (issue #34): a phone photo of megabytes
becomes a JPEG of tens of kB, upright (EXIF orientation applied, as the runtime reads it), never smaller than the
model's input; small images go in unchanged."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipedge.runtime.errors import ImageError
from clipedge.runtime.preprocess import load_image
from clipedge.runtime.web import (
    AS_IS_BYTES,
    THUMBNAIL_SIDE,
    GalleryItem,
    build_site,
    thumbnail_size,
    write_gallery,
)
from tests.web.conftest import EVAL_DIR, fake_mediapipe

PHOTOS = sorted((Path(__file__).resolve().parents[2] / "calibration_data" / "photos").glob("*.webp"))
MAX_THUMBNAIL_BYTES = 200_000


def phone_photo(path: Path, seed: int, orientation: int | None = None) -> Path:
    """A 3000x2000 JPEG at quality 92 like a phone's: a shipped photo scaled up, with sensor-like noise (a plain
    upscale compresses far better than a real photo), optionally with an EXIF orientation tag."""
    base = Image.open(PHOTOS[seed % len(PHOTOS)]).convert("RGB").resize((3000, 2000), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(seed).normal(0, 6, (2000, 3000, 3))
    pixels = np.clip(np.asarray(base, np.float32) + noise, 0, 255).astype(np.uint8)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, "JPEG", quality=92, exif=exif.tobytes())
    return path


@pytest.mark.slow
def test_five_phone_photos_make_a_small_gallery(tmp_path, capsys):
    photos = [phone_photo(tmp_path / f"IMG_{i:04d}.jpg", i) for i in range(5)]
    site = tmp_path / "site"
    rows, written = write_gallery(site, [GalleryItem(p) for p in photos], image_size=112)
    files = [site / row["file"] for row in rows]
    assert [f.suffix for f in files] == [".jpg"] * 5
    assert [row["source"] for row in rows] == [f"{tmp_path.name}/{p.name}" for p in photos]
    for file in files:
        with Image.open(file) as image:
            assert image.size == (THUMBNAIL_SIDE, 341) and image.format == "JPEG"
        assert file.stat().st_size <= MAX_THUMBNAIL_BYTES, file
    assert written == sum(f.stat().st_size for f in files)
    originals = sum(p.stat().st_size for p in photos)
    with capsys.disabled():
        print(f"\n5 phone photos (3000x2000): {originals / 1e6:.2f} MB -> site gallery {written / 1e6:.3f} MB",
              file=sys.stderr)
    assert originals > 5_000_000 and written < 500_000


def test_thumbnails_keep_the_model_s_input_resolution():
    assert thumbnail_size(3000, 2000, 112) == (512, 341)
    assert thumbnail_size(2000, 3000, 224) == (341, 512)
    assert thumbnail_size(3000, 2000, 336) == (672, 448)  # twice the input when that is larger than 512
    assert thumbnail_size(6000, 500, 224) == (2688, 224)  # a panorama: its short side stays the model's input
    assert thumbnail_size(400, 300, 224) == (400, 300)  # never enlarged


def test_exif_orientation_is_applied(tmp_path):
    """A portrait photo stored landscape with orientation 6 (rotate 90 clockwise) is a portrait thumbnail, the image
    the runtime reads from the original, downscaled."""
    photo = phone_photo(tmp_path / "portrait.jpg", 3, orientation=6)
    rows, _ = write_gallery(tmp_path / "site", [GalleryItem(photo)], image_size=112)
    with Image.open(tmp_path / "site" / rows[0]["file"]) as stored:
        assert stored.size == (341, 512)
        assert stored.getexif().get(0x0112) in (None, 1)  # nothing left for a browser to rotate again
        thumbnail = np.asarray(stored.convert("RGB"), np.float32)
    upright = np.asarray(load_image(photo).resize((341, 512), Image.Resampling.BOX), np.float32)
    assert np.abs(thumbnail - upright).mean() < 4  # JPEG at 85 and another filter, the same picture
    rotated_wrong = np.asarray(load_image(photo).transpose(Image.Transpose.ROTATE_180).resize((341, 512)),
                               np.float32)
    assert np.abs(thumbnail - rotated_wrong).mean() > 10


def test_small_images_go_in_unchanged(tmp_path):
    """The demo's 112 px eval images (and any image already no larger than its thumbnail, and light) are copied
    byte for byte: re-encoding would only lose quality."""
    small = EVAL_DIR / "blue_star" / "00.jpg"
    large_png = tmp_path / "drawing.png"  # small in pixels, not in bytes: re-encoded
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(large_png)
    assert large_png.stat().st_size > AS_IS_BYTES
    rows, _ = write_gallery(tmp_path / "site", [GalleryItem(small, "blue star"), GalleryItem(large_png)], 112)
    assert rows[0] == {"file": "gallery/000.jpg", "caption": "blue star", "source": "blue_star/00.jpg"}
    assert (tmp_path / "site" / rows[0]["file"]).read_bytes() == small.read_bytes()
    assert rows[1]["file"] == "gallery/001.jpg"
    with Image.open(tmp_path / "site" / rows[1]["file"]) as image:
        assert image.size == (400, 400) and image.format == "JPEG"


def test_an_image_that_does_not_decode_is_named(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        write_gallery(tmp_path / "site", [GalleryItem(broken)], 112)


@pytest.mark.slow
def test_site_from_a_photo_gallery_is_small_and_readable(web_bundle, tmp_path, capsys):
    """End to end: `build_site` with a folder of phone photos; the site's gallery part is thumbnails, and the site
    has the umask's modes (0755 directories under umask 022), not mkdtemp's 0700."""
    gallery = tmp_path / "photos"
    gallery.mkdir()
    photos = [phone_photo(gallery / f"IMG_{i:04d}.jpg", i) for i in range(5)]
    old = os.umask(0o022)
    try:
        site = build_site(web_bundle, tmp_path / "site", mediapipe=fake_mediapipe(tmp_path / "npm"), gallery=gallery)
    finally:
        os.umask(old)
    assert site.gallery == 5 and site.sizes["gallery"] <= 5 * MAX_THUMBNAIL_BYTES
    assert oct(site.path.stat().st_mode & 0o777) == "0o755"
    assert {oct(p.stat().st_mode & 0o777) for p in site.path.rglob("*") if p.is_file()} == {"0o644"}
    with capsys.disabled():
        print(f"\nsite with 5 phone photos: gallery {site.sizes['gallery'] / 1e6:.3f} MB (photos "
              f"{sum(p.stat().st_size for p in photos) / 1e6:.2f} MB), site {site.bytes / 1e6:.2f} MB",
              file=sys.stderr)

