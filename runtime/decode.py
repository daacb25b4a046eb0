"""The fast way to read a large photo for CLIP: decode and shrink it near the model's size before the exact resize.

Why: CLIP looks at 224 x 224 pixels, and a 12-megapixel phone photo is 240 times that. The exact path
(`decode="exact"`, clipedge.runtime.preprocess, bit for bit `CLIPImageProcessor`) decodes every pixel and then runs
a bicubic filter whose support spans 13 source pixels per output pixel on both axes: 125 ms per photo against a 10 ms
model (issue #18). The fast path (`decode="fast"`) does what Pillow's own `Image.thumbnail` does:

1. JPEG: `Image.draft` asks libjpeg for a DCT-domain downscale by 1/2, 1/4 or 1/8 while decoding, so the inverse DCT
   and colour conversion run on 1/64 of the pixels (the Huffman decoding still reads every byte: it is what is left).
2. Any format (WebP, PNG, a PIL image, an array) and whatever the draft left: `Image.reduce`, a box average by an
   integer factor, in C.
3. Then the exact path's own shortest-side bicubic resize, center crop and normalization, from the smaller image.

Both shrinks keep at least `margin` (default 2) times the resized size, so the final bicubic filter still spans
several source pixels and does the anti-aliasing: the pixels differ from the exact path's by a few levels, and the
embeddings by less than the model's own quantization (docs/speed.md, "Real photos", has the measured cosines).
Images that are already small (up to twice the resized size per axis) are not touched: the fast path gives exactly
the exact path's pixels for them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from clipedge.runtime.errors import InputError

if TYPE_CHECKING:  # Pillow is imported by the caller that hands the images over: `import clip` stays light
    from PIL import Image

__all__ = ["DECODES", "DEFAULT_DECODE", "Shrink", "check_decode"]

DECODES = ("exact", "fast")
# The default, chosen by measurement (tests/scripts/speed_photos.py; docs/speed.md "Real photos").
DEFAULT_DECODE = "fast"
DEFAULT_MARGIN = 2


def check_decode(decode: str) -> str:
    """The decode mode, or InputError naming the choices."""
    if decode not in DECODES:
        raise InputError(f"decode must be one of {DECODES}, got {decode!r}")
    return decode


class Shrink:
    """The two shrink steps of the fast path for one preprocessing size; `preprocess._load` calls
    `before_decode` on a file Pillow has opened but not decoded, and `after_decode` on the upright RGB image."""

    def __init__(self, image_size: int, crop_size: int, margin: int = DEFAULT_MARGIN) -> None:
        if margin < 1:
            raise InputError(f"margin must be >= 1, got {margin}")
        self.size = max(image_size, crop_size)
        self.margin = margin

    def _floor(self, width: int, height: int) -> tuple[int, int]:
        """The smallest (width, height) to keep: `margin` times the shortest-side resize of a width x height image
        (of the crop's size when crop_size > image_size, so the crop never comes from fewer pixels), rounded up.
        Computed here, not with preprocess.resized_size, so that this module stays a leaf that preprocess imports."""
        scale = self.size / min(width, height)
        return math.ceil(width * scale) * self.margin, math.ceil(height * scale) * self.margin

    def before_decode(self, image: Image.Image) -> None:
        """JPEG: decode at 1/2, 1/4 or 1/8 scale where that still leaves the floor (libjpeg's scaled IDCT). Other
        formats have no such option and are left alone. The size is the file's own frame, before EXIF rotation:
        the shortest-side rule is the same for both orientations."""
        if image.format != "JPEG":
            return
        image.draft(None, self._floor(image.width, image.height))

    def after_decode(self, image: Image.Image) -> Image.Image:
        """Box-average by the largest integer factor that keeps the floor on both axes; the image itself when that
        factor is 1 (a small image keeps the exact path's pixels)."""
        floor_w, floor_h = self._floor(image.width, image.height)
        factor = min(image.width // floor_w, image.height // floor_h)
        if factor < 2:
            return image
        return image.reduce(factor)
