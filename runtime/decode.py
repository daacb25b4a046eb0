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

Memory (issue #33): `DECODE_BUDGET` bounds the decoded pixels that all decode threads of the process hold at once.
Each file's working set is estimated from its header (`decoded_bytes`) and waited for before it is decoded; one image
larger than the whole budget decodes alone.
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from clipedge.runtime.errors import InputError

if TYPE_CHECKING:  # Pillow is imported by the caller that hands the images over: `import clip` stays light
    from PIL import Image

__all__ = ["DECODES", "DECODE_BUDGET", "DEFAULT_DECODE", "DEFAULT_DECODE_BUDGET", "DecodeBudget", "Shrink",
           "check_decode", "decoded_bytes"]

DECODES = ("exact", "fast")
# The default, chosen by measurement (tests/scripts/speed_photos.py; docs/speed.md "Real photos").
DEFAULT_DECODE = "fast"
DEFAULT_MARGIN = 2
# 256 MiB of decoded pixels at once, whatever the number of decode threads: four 12 MP JPEGs decoded whole (48 MB
# each as Pillow stores RGB) still decode side by side, and a 1 GB board keeps room for the model and the system.
DEFAULT_DECODE_BUDGET = 256 * 1024 * 1024
# A hold this large hands the freed memory back to the system when it ends (`_give_back_memory`).
_TRIM_BYTES = 64 * 1024 * 1024


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


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """What decoding an image of this mode and size holds at most, from its header: Pillow's pixels (1 byte per pixel
    for 1, L and P, 2 for I;16, 4 for every other mode, RGB included) plus, unless it is RGB already, the RGB copy
    made from it (4 bytes per pixel)."""
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return width * height * (per_pixel + (0 if mode == "RGB" else 4))


class DecodeBudget:
    """A process-wide count of the bytes that decodes in progress hold, at most `limit` (settable). `hold(n)` waits,
    first come first served, until n more bytes fit, and gives them back when its block ends; a request for more
    than the whole limit waits until nothing else is held and then runs alone."""

    def __init__(self, limit: int = DEFAULT_DECODE_BUDGET) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0  # the most held at once since this budget was made (tests read it)
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    def _fits(self, ticket: object, nbytes: int) -> bool:
        return self._queue[0] is ticket and self.used + min(nbytes, max(self.limit, 1)) <= max(self.limit, 1)

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[int]:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                self._cond.wait_for(lambda: self._fits(ticket, nbytes))
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()  # the next in line may fit too
            taken = min(nbytes, max(self.limit, 1))
            self.used += taken
            self.peak = max(self.peak, self.used)
        try:
            yield taken
        finally:
            if nbytes >= _TRIM_BYTES:
                _give_back_memory()
            with self._cond:
                self.used -= taken
                self._cond.notify_all()


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only; musl, macOS and Windows have none
    except (AttributeError, OSError, TypeError):
        return None


_TRIM = _malloc_trim()


def _give_back_memory() -> None:
    """glibc keeps what a thread frees in that thread's own malloc arena: without this, a large image decoded by
    each of four threads in turn, one at a time, still leaves four images' worth of memory in the process."""
    if _TRIM is not None:
        _TRIM(0)


DECODE_BUDGET = DecodeBudget()
