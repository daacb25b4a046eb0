"""Pillow's `Image.resize`, computed only for the window of the output that the center crop keeps.

Why: CLIP resizes the short side to 224 and then crops 224 x 224 from the middle, so the long side grows by 224 / short
before the crop. A 94-byte 5000x1 PNG became a 1,120,000 x 224 image (2.5 GB with Pillow's buffers), a 20000x1 one
9.6 GB, a 1 x 89,000,000 one (within the pixel limit) would need terabytes. Here only the crop's rows and columns
are computed, from the input pixels they depend on: memory is the decoded image plus the crop.

The arithmetic is Pillow's own (libImaging/Resample.c `precompute_coeffs`, `normalize_coeffs_8bpc`, the two 8-bit
passes, and Geometry.c `ImagingScaleAffine` for "nearest"), in float64 and int64 numpy, step for step, so the window
equals the same window of Pillow's full resize bit for bit (tests/runtime/test_hostile_images.py compares them over
many shapes and every filter). The passes run in Pillow's order (which Pillow 13 changed: `horizontal_first`), and an
axis whose size does not change is copied, not filtered, as Pillow does.
"""

from __future__ import annotations

import math

import numpy as np
import PIL
from PIL import Image

__all__ = ["FILTER_SUPPORT", "horizontal_first", "resize_window"]

FILTER_SUPPORT = {"box": 0.5, "bilinear": 1.0, "hamming": 1.0, "bicubic": 2.0, "lanczos": 3.0}
_PRECISION_BITS = 32 - 8 - 2  # Resample.c: 8 bits of result, 2 for overflow of negative lobes
_NEAREST_EXACT_LIMIT = 1 << 31  # Pillow's sizes are C ints: beyond, no reference exists to be exact to
_PILLOW_MAJOR = int(PIL.__version__.split(".")[0])


def _filter(name: str, x: np.ndarray) -> np.ndarray:
    """Resample.c's filters, same operations in the same order (float64, like its doubles)."""
    if name == "box":
        return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)
    ax = np.abs(x)
    if name == "bilinear":
        return np.where(ax < 1.0, 1.0 - ax, 0.0)
    if name == "bicubic":
        a = -0.5
        inner = ((a + 2.0) * ax - (a + 3.0)) * ax * ax + 1
        outer = (((ax - 5) * ax + 8) * ax - 4) * a
        return np.where(ax < 1.0, inner, np.where(ax < 2.0, outer, 0.0))
    # hamming, lanczos: libm's sin/cos one value at a time (numpy's vectorized ones may round differently)
    return np.array([_libm_filter(name, float(v)) for v in x.ravel()], np.float64).reshape(x.shape)


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _libm_filter(name: str, x: float) -> float:
    if name == "hamming":
        x = -x if x < 0.0 else x
        if x == 0.0:
            return 1.0
        if x >= 1.0:
            return 0.0
        x = x * math.pi
        return math.sin(x) / x * (float(np.float32(0.54)) + float(np.float32(0.46)) * math.cos(x))
    if -3.0 <= x < 3.0:  # lanczos: truncated sinc
        return _sinc(x) * _sinc(x / 3)
    return 0.0


def _coefficients(in_size: int, out_size: int, lo: int, hi: int,
                  name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First input index, number of inputs and fixed-point weights [hi - lo, ksize] of outputs lo..hi-1:
    precompute_coeffs with the box (0, in_size) as C floats, then normalize_coeffs_8bpc. Weights past an output's
    inputs are 0."""
    scale = float(np.float32(in_size)) / out_size
    filterscale = max(scale, 1.0)
    support = FILTER_SUPPORT[name] * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = 0.0 + (np.arange(lo, hi, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize, dtype=np.int64)
    arg = ((taps[None, :] + xmin[:, None]).astype(np.float64) - center[:, None] + 0.5) * (1.0 / filterscale)
    weights = np.where(taps[None, :] < xmax[:, None], _filter(name, arg), 0.0)
    total = np.cumsum(weights, axis=1)[:, -1]  # sequential, as the C loop adds (np.sum would pair them)
    safe = np.where(total != 0.0, total, 1.0)
    weights = np.where(total[:, None] != 0.0, weights / safe[:, None], weights)
    scaled = weights * (1 << _PRECISION_BITS)
    fixed = np.where(weights < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled)).astype(np.int64)
    return xmin, xmax, fixed


def _pass(pixels: np.ndarray, first: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """One 8-bit pass along `axis` (1: horizontal, 0: vertical): each output is (2^21 + sum(pixel * weight)) >> 22,
    clipped to 0..255, as Resample.c's clip8 does."""
    span = pixels.shape[axis]
    acc = np.full((len(first), pixels.shape[1 - axis], pixels.shape[2]), 1 << (_PRECISION_BITS - 1), np.int64)
    for tap in range(weights.shape[1]):
        if not weights[:, tap].any():
            continue
        index = np.minimum(first + tap, span - 1)  # past the support the weight is 0: any index will do
        taken = pixels[:, index] if axis == 1 else pixels[index]
        taken = taken.transpose(1, 0, 2) if axis == 1 else taken
        acc += taken.astype(np.int64) * weights[:, tap][:, None, None]
    out = np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    return out.transpose(1, 0, 2) if axis == 1 else out


def _nearest_index(in_size: int, out_size: int, lo: int, hi: int) -> np.ndarray:
    """ImagingScaleAffine's source index of outputs lo..hi-1: a position that starts at half a step and grows by
    one step per output, added up one at a time (so the rounding is Pillow's); -1 where it falls outside."""
    step = float(np.float32(in_size)) / out_size
    if hi > _NEAREST_EXACT_LIMIT:  # no Pillow can make this image; the closed form is as good as any
        position = (np.arange(lo, hi, dtype=np.float64) + 0.5) * step
    else:
        position = np.empty(hi - lo, np.float64)
        carry, start, chunk = 0.0 + step * 0.5, 0, 1 << 20
        while start < hi:
            count = min(chunk, hi - start)
            run = np.cumsum(np.concatenate([[carry], np.full(count, step)]))
            a, b = max(lo, start), min(hi, start + count)
            if a < b:
                position[a - lo : b - lo] = run[a - start : b - start]
            carry, start = run[count], start + count
    index = np.where(position < 0.0, -1, np.trunc(position)).astype(np.int64)
    return np.where(index < in_size, index, -1)


def _nearest(image: Image.Image, size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    width, height = image.size
    xs = _nearest_index(width, size[0], *cols)
    ys = _nearest_index(height, size[1], *rows)
    out = np.zeros((len(ys), len(xs), 3), np.uint8)
    inside_x, inside_y = xs >= 0, ys >= 0
    if inside_x.any() and inside_y.any():
        x0, x1 = int(xs[inside_x].min()), int(xs[inside_x].max()) + 1
        y0, y1 = int(ys[inside_y].min()), int(ys[inside_y].max()) + 1
        region = np.asarray(image.crop((x0, y0, x1, y1)), np.uint8)
        picked = region[(ys[inside_y] - y0)[:, None], (xs[inside_x] - x0)[None, :]]
        out[np.ix_(inside_y, inside_x)] = picked
    return out


def resize_window(image: Image.Image, size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int],
                  resample: str) -> np.ndarray:
    """`np.asarray(image.resize(size, filter))[rows[0]:rows[1], cols[0]:cols[1]]` for an RGB image, without making
    the whole resized image. `size` is (width, height) as Pillow takes it; `resample` a Pillow filter name."""
    if image.mode != "RGB":
        raise ValueError(f"resize_window takes RGB images, got mode {image.mode}")
    if resample == "nearest":
        return _nearest(image, size, rows, cols)
    width, height = image.size
    out_w, out_h = size
    (y0, y1), vertical = _span(height, out_h, rows, resample)
    (x0, x1), horizontal = _span(width, out_w, cols, resample)
    region = np.asarray(image.crop((x0, y0, x1, y1)), np.uint8)  # the only input pixels the window reads
    # Each pass rounds to 8 bits, so the order changes the last bit: Pillow's order, whichever it is.
    passes = [(horizontal, x0, 1), (vertical, y0, 0)]
    if not horizontal_first(width, height, out_w, out_h):
        passes.reverse()
    for coefficients, offset, axis in passes:
        if coefficients is not None:
            region = _pass(region, coefficients[0] - offset, coefficients[1], axis=axis)
    return np.ascontiguousarray(region)


def horizontal_first(in_w: int, in_h: int, out_w: int, out_h: int) -> bool:
    """Which pass Pillow runs first. Up to Pillow 12 always the horizontal one; Pillow 13 (Resample.c
    `ImagingResampleInner`) runs the vertical one first when the height shrinks more than twice as much as the
    width."""
    if _PILLOW_MAJOR < 13:
        return True
    return not (in_h - out_h > 0 and in_h - out_h > (in_w - out_w) * 2)


def _span(in_size: int, out_size: int, window: tuple[int, int],
          name: str) -> tuple[tuple[int, int], tuple[np.ndarray, np.ndarray] | None]:
    """The input range the window's outputs read, and their (first input, weights); None when the axis keeps its
    size (Pillow copies it, with no filter)."""
    if out_size == in_size:
        return window, None
    first, count, weights = _coefficients(in_size, out_size, *window, name)
    return (int(first.min()), int((first + count).max())), (first, weights)
