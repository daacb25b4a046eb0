"""The pixel steps of `PreprocessConfig`, on one upright RGB image: resize (each `resize_mode`), center crop or pad
(each `crop_rule`), rescale, normalize.

Each rule is the reference's own integer arithmetic, so the output equals it bit for bit (tests/runtime/
test_preprocess.py against HF `CLIPImageProcessor`; tests/export/test_openclip_preprocess.py against open_clip's
`image_transform_v2`, torchvision's transforms on PIL images):
- shortest: transformers' `get_resize_output_image_size(default_to_square=False)` and torchvision's `Resize(int)`,
  the long side `int(size * long / short)`.
- longest: open_clip's `ResizeKeepRatio(longest=1)` (from timm): `ratio = max(h / size, w / size)`, each side
  `round(side / ratio)` (Python's round, half to even); a side that rounds to 0 is 1 here (open_clip would fail).
- squash: `size x size` (torchvision `Resize((size, size))`, HF `size: {height, width}`).
- none: HF's `do_resize: false`.
Every resize is Pillow's `Image.resize` with the config's filter (torchvision's PIL path calls exactly that), or, for
a resized image far larger than the crop, `clipedge.runtime.resample.resize_window` (the same pixels, computed only
inside the crop). Then `x * rescale_factor` in float64 to float32 (HF `rescale`; equal in float32 to ToTensor's
`/ 255` for every uint8 value) and `(x - mean) / std` in float32 (HF `normalize`, torchvision `Normalize`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from clipedge.runtime.preprocess_config import PreprocessConfig
from clipedge.runtime.resample import resize_window

__all__ = ["resized_size", "longest_size", "output_size", "crop_axis", "to_pixel_values"]

# A resized image up to this many times the crop's area goes through Pillow's own resize (fast C); a longer one
# only where the crop is (a 20000x1 image would be 4,480,000 x 224 pixels before the crop).
_FULL_RESIZE_CROPS = 16

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def resized_size(height: int, width: int, image_size: int) -> tuple[int, int]:
    """(height, width) after resizing the shortest side to `image_size`, keeping the aspect ratio.

    The long side is `int(image_size * long / short)` (truncated, not rounded), exactly as transformers'
    `get_resize_output_image_size(..., default_to_square=False)` (after torchvision's `Resize`).
    """
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = image_size, int(image_size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def longest_size(height: int, width: int, image_size: int) -> tuple[int, int]:
    """(height, width) after resizing the longest side to `image_size`: open_clip `ResizeKeepRatio.get_params` with
    longest=1 (`max(r_h, r_w) * 1.0 + min(r_h, r_w) * 0.0` is the max itself), sides at least 1."""
    ratio = max(height / image_size, width / image_size)
    return max(1, round(height / ratio)), max(1, round(width / ratio))


def output_size(height: int, width: int, config: PreprocessConfig) -> tuple[int, int]:
    """(height, width) of the resized image, before the crop."""
    if config.resize_mode == "shortest":
        return resized_size(height, width, config.image_size)
    if config.resize_mode == "longest":
        return longest_size(height, width, config.image_size)
    if config.resize_mode == "squash":
        return config.image_size, config.image_size
    return height, width  # "none"


def crop_axis(size: int, crop: int, rule: str) -> tuple[int, int, int, int]:
    """Along one axis of the resized image: (first kept, end kept, padding before, padding after).

    transformers (`image_transforms.center_crop`): offset `(size - crop) // 2`; a shorter side is padded with
    `ceil(d / 2)` before. torchvision (`F.center_crop`, open_clip's `center_crop_or_pad`): offset
    `int(round((size - crop) / 2))`, half to even; padding `d // 2` before."""
    if size >= crop:
        offset = (size - crop) // 2 if rule == "transformers" else int(round((size - crop) / 2.0))
        return offset, offset + crop, 0, 0
    missing = crop - size
    before = missing - missing // 2 if rule == "transformers" else missing // 2
    return 0, size, before, missing - before


def _resized_window(image: Image.Image, config: PreprocessConfig, size: tuple[int, int],
                    rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """uint8 HWC: the resized image's rows x cols, without making a huge resized image."""
    height, width = size
    if config.resize_mode == "none":
        return np.asarray(image.crop((cols[0], rows[0], cols[1], rows[1])), dtype=np.uint8)
    if height * width <= _FULL_RESIZE_CROPS * max(config.crop_size, config.image_size) ** 2:
        resized = image.resize((width, height), resample=_PIL_FILTERS[config.resample])
        return np.asarray(resized, dtype=np.uint8)[rows[0] : rows[1], cols[0] : cols[1]]
    return resize_window(image, (width, height), rows, cols, config.resample)


def to_pixel_values(image: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """RGB PIL image -> float32 [crop, crop, 3] (HWC), normalized."""
    height, width = output_size(image.height, image.width, config)
    crop = config.crop_size
    top, bottom, pad_top, pad_bottom = crop_axis(height, crop, config.crop_rule)
    left, right, pad_left, pad_right = crop_axis(width, crop, config.crop_rule)
    pixels = _resized_window(image, config, (height, width), (top, bottom), (left, right))

    if pad_top or pad_bottom or pad_left or pad_right:  # a side shorter than the crop: `fill` around it
        canvas = np.empty((crop, crop, 3), dtype=np.uint8)
        canvas[:] = np.asarray(config.fill, dtype=np.uint8)
        canvas[pad_top : crop - pad_bottom, pad_left : crop - pad_right] = pixels
        pixels = canvas

    # Same float steps as transformers (`rescale` in float64 then float32; `normalize` in float32), so results agree
    # to the last bit, not just to 1e-6.
    x = (pixels.astype(np.float64) * config.rescale_factor).astype(np.float32)
    mean = np.asarray(config.mean, dtype=np.float32)
    std = np.asarray(config.std, dtype=np.float32)
    return (x - mean) / std
