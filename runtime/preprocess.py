"""Image preprocessing for CLIP, numpy + Pillow only: load, resize, center crop, normalize.

Loading is here; the pixel steps, one per option of `PreprocessConfig` (clipedge.runtime.preprocess_config: HF
`CLIPImageProcessor`'s fields and OpenCLIP's `preprocess_cfg`), are in clipedge.runtime.resize_modes.
With the default config the result equals HF `transformers.CLIPImageProcessor` bit for bit (its Pillow backend,
`CLIPImageProcessorPil`, which is what `CLIPImageProcessor()` gives without torchvision): the same integer rule for
the resized size, Pillow's bicubic filter on the uint8 RGB image, the same center-crop offsets (and zero padding when
the resized image is smaller than the crop), then `x / 255`, `(x - mean) / std` in float32.
OpenAI CLIP's own `_transform` and OpenCLIP's (torchvision Resize / CenterCrop / ToTensor / Normalize on a PIL image)
resize the same way but put the crop at `round((size - crop) / 2)` (round half to even) where HF uses
`(size - crop) // 2`: when the long side exceeds the crop by 3 (mod 4) pixels the crop window sits one pixel further
right/down there (`crop_rule="torchvision"`, what an OpenCLIP checkpoint's bundle records).

Two things are done on purpose that `CLIPImageProcessor` does not do when handed a `PIL.Image`:
- EXIF orientation is applied (`ImageOps.exif_transpose`), for files, bytes and PIL images alike, so a phone photo
  is seen upright. HF applies it only in its own `load_image`, not in the processor.
- Transparency is dropped by default, as Pillow's `convert("RGB")` does and as OpenAI CLIP and OpenCLIP do (the
  transform the models were trained with). transformers 5.x instead composites every image with an alpha band or
  a `transparency` entry in `info` (RGBA, LA, PA, palette or RGB PNGs with a tRNS key) onto white; pass
  `background=(255, 255, 255)` to get exactly that (`PIL.Image.alpha_composite` onto the colour, as HF does).
  Images without transparency give the same result either way.
- 16-bit grayscale (a 16-bit PNG opens as mode I;16) is scaled to 8 bits (v / 257, rounded). Pillow's
  `convert("RGB")`, which HF uses, clips it instead: every pixel above 255 becomes white, which is not the picture.
  Floating-point images (mode F) are refused with a word on what to do.

Memory: an image much longer than wide (or the reverse) is resized only where the crop will be
(clipedge.runtime.resample), bit for bit as Pillow's full resize, so a 20000x1 PNG takes a few MB instead of 9.6 GB.
A file is decoded only once its estimated working set fits the process-wide decode budget
(clipedge.runtime.decode.DECODE_BUDGET), so decode threads never hold more than that at once (issue #33); 16-bit pixels
become 8-bit a strip at a time, with no full-size 32-bit copy.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps

from clipedge.runtime.decode import DECODE_BUDGET, Shrink, check_decode, decoded_bytes
from clipedge.runtime.errors import ImageError, InputError
from clipedge.runtime.heif import heif_hint, register_heif
from clipedge.runtime.preprocess_config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PreprocessConfig
from clipedge.runtime.resize_modes import resized_size, to_pixel_values

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "DEFAULT_MAX_PIXELS",
    "LAYOUTS",
    "ImageSource",
    "PreprocessConfig",
    "load_image",
    "preprocess",
    "resized_size",
    "uint8_pixels",
]

log = logging.getLogger(__name__)

# Pillow's own default `Image.MAX_IMAGE_PIXELS` (~ 1024 * 1024 * 1024 // 4 // 3): a decompression-bomb guard.
DEFAULT_MAX_PIXELS = 89_478_485
_ORIENTATION = 0x0112  # the EXIF tag ImageOps.exif_transpose reads
# 16-bit value -> 8-bit, round(v / 257): 65535 -> 255, 128 -> 0; and 8-bit values kept (mode I data in 0..255).
_TO_8BIT = ((np.arange(65536, dtype=np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
_KEEP_8BIT = np.arange(256, dtype=np.uint8)
_STRIP_BYTES = 4 * 1024 * 1024  # what one strip of a 16- or 32-bit image holds while it becomes 8-bit

LAYOUTS = ("NHWC", "NCHW")

# What Pillow raises for a file it cannot identify or fully decode: UnidentifiedImageError and "image file is
# truncated" are OSErrors, and its plugins raise whatever the damaged bytes lead them to (SyntaxError, ValueError,
# EOFError, struct.error; the fuzz test found a TypeError in the TIFF plugin), so any Exception is a bad image.
_PIL_DECODE_ERRORS = (Exception,)

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Image.Image, np.ndarray]


def _describe(source: Any) -> str:
    """A short name for an input in error messages: the path, or the kind and size of the object."""
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL image mode={source.mode} size={source.width}x{source.height}>"
    if isinstance(source, np.ndarray):
        return f"<array dtype={source.dtype} shape={source.shape}>"
    return f"<{type(source).__name__}>"


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"zero size ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise ImageError(
            f"{width}x{height} = {width * height} pixels, more than max_pixels={max_pixels} "
            "(decompression-bomb guard); downscale it first or pass a larger max_pixels"
        )


def _open_encoded(fp: Any, max_pixels: int, shrink: Shrink | None = None, held: ExitStack | None = None) -> Image.Image:
    """Open a file object or path with Pillow, check its size from the header, then decode it fully (at a reduced
    scale where `shrink`, the fast path of clipedge.runtime.decode, asks for one). With `held`, the decode first
    waits for its share of the decode budget, held until `held` closes."""
    register_heif()  # HEIC/HEIF through pillow-heif when installed (clipedge.runtime.heif): once, then a flag read
    try:
        with warnings.catch_warnings():  # our own max_pixels check below replaces Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fp)
    except Image.DecompressionBombError as err:
        raise ImageError(f"too large, over Pillow's decompression-bomb limit ({err})") from err
    except _PIL_DECODE_ERRORS as err:
        raise ImageError(f"not an image Pillow can read ({type(err).__name__}: {err}){heif_hint(fp)}") from err
    _check_pixels(image.width, image.height, max_pixels)  # before decoding: header only so far
    if shrink is not None:
        shrink.before_decode(image)
    if held is not None:  # the size and mode after the draft: what the decode will really hold
        held.enter_context(DECODE_BUDGET.hold(decoded_bytes(image.mode, image.width, image.height)))
    try:
        image.load()  # decode every byte now, so a truncated file fails here and not later
    except _PIL_DECODE_ERRORS as err:
        raise ImageError(f"cannot be decoded, truncated or corrupt ({type(err).__name__}: {err})") from err
    return image


def _from_array(array: np.ndarray) -> Image.Image:
    """uint8 HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA) -> PIL image (L, RGB or RGBA)."""
    if array.dtype != np.uint8:
        raise ImageError(
            f"dtype {array.dtype}; only uint8 (0..255) is accepted, convert first "
            "(e.g. (x * 255).round().clip(0, 255).astype(np.uint8) for floats in [0, 1])"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        mode = "L"
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        mode = "RGB" if array.shape[2] == 3 else "RGBA"
    else:
        hint = "; pass a batch as a list of HxWxC arrays" if array.ndim == 4 else ""
        raise ImageError(f"shape {array.shape}; expected HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA), channels last{hint}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageError(f"zero size (array shape {array.shape})")
    return Image.fromarray(np.ascontiguousarray(array), mode=mode)


def _check_background(background: Sequence[int] | None) -> tuple[int, int, int] | None:
    if background is None:
        return None
    try:
        rgb = tuple(int(c) for c in background)
    except (TypeError, ValueError) as err:
        raise InputError(f"background must be None or 3 ints 0..255 (R, G, B), got {background!r}") from err
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise InputError(f"background must be None or 3 ints 0..255 (R, G, B), got {background!r}")
    return rgb  # type: ignore[return-value]


def _is_deep(mode: str) -> bool:
    """16- or 32-bit integer pixels: what `_to_8bit` maps to mode L."""
    return mode == "I" or mode.startswith("I;16")


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale scaled to 8 bits; Pillow's convert would clip it to white above 255. Mode I (32-bit ints)
    with values 0..255 is 8-bit data and kept as such (what HF gives too), 0..65535 is 16-bit data; other values
    have no range to map from and are refused, not clipped."""
    if image.mode == "F":
        raise ImageError("floating-point pixels (mode F) have no fixed range; convert the image to 8 or 16 bits "
                         "per channel first")
    if not _is_deep(image.mode):
        return image
    low, high = image.getextrema() if image.mode == "I" else (0, 65535)
    if image.mode == "I" and (low < 0 or high > 65535):
        raise ImageError(f"32-bit integer pixels in [{low}, {high}] have no known range; convert the image to 8 or "
                         "16 bits per channel first")
    return _mapped(image, _KEEP_8BIT if image.mode == "I" and high <= 255 else _TO_8BIT)


def _mapped(image: Image.Image, table: np.ndarray) -> Image.Image:
    """A 16- or 32-bit image through a lookup table to mode L, a strip of rows at a time (issue #33): the 8-bit
    result and one strip are all it adds to the decoded image, not full-size int copies."""
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _STRIP_BYTES // (4 * width))
    for top in range(0, height, rows):
        strip = np.asarray(image.crop((0, top, width, min(height, top + rows))))
        np.take(table, strip, out=out[top : top + strip.shape[0]])
    return Image.fromarray(out, mode="L")


def _to_rgb(image: Image.Image, background: tuple[int, int, int] | None) -> Image.Image:
    image = _to_8bit(image)
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if image.mode == "RGB" and not has_alpha:
        return image  # already RGB: no copy of a possibly large decoded image
    if background is None or not has_alpha:
        return image.convert("RGB")  # alpha, if any, is dropped (OpenAI CLIP's `_convert_image_to_rgb`)
    # transformers 5.x `convert_to_rgb`, with a chosen colour instead of white.
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (*background, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def _special_file(mode: int) -> str | None:
    """What a stat mode is when it is not a regular file (a FIFO, socket or device), else None."""
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), None if stat.S_ISREG(mode) else "not a regular file")


def _open_regular(path: str) -> io.BufferedReader:
    """Open an image file for reading, refusing anything but a regular file BEFORE opening it (issue #33): opening a
    FIFO named x.jpg waits forever for a writer, /dev/zero never ends. Checked again on the opened descriptor
    (opened non-blocking, so a FIFO swapped in between the two checks cannot hang it either)."""
    kind = _special_file(os.stat(path).st_mode)
    if kind is None:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        kind = _special_file(os.fstat(fd).st_mode)
        if kind is None:
            return os.fdopen(fd, "rb")
        os.close(fd)
    raise ImageError(f"{kind}, not an image file; only regular files are read")


def _decoded(source: Any, max_pixels: int, shrink: Shrink | None, held: ExitStack | None) -> Image.Image:
    """The source as a decoded PIL image in whatever mode it has (files and bytes: see `_open_encoded`)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ImageError("no such file")
        if os.path.isdir(path):
            raise ImageError("a directory, not an image file")
        try:
            with _open_regular(path) as f:
                image = _open_encoded(f, max_pixels, shrink, held)
        except OSError as err:  # permissions, or the file went away since the check above
            raise ImageError(f"cannot be read ({err.strerror or err})") from err
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("empty (0 bytes)")
        image = _open_encoded(io.BytesIO(bytes(source)), max_pixels, shrink, held)
    elif isinstance(source, Image.Image):
        image = source
        _check_pixels(image.width, image.height, max_pixels)
        try:
            image.load()
        except _PIL_DECODE_ERRORS as err:
            raise ImageError(f"cannot be decoded ({type(err).__name__}: {err})") from err
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
        _check_pixels(image.width, image.height, max_pixels)
    else:
        raise ImageError(
            f"unsupported type {type(source).__name__}; "
            "pass a path, bytes, a PIL image or a uint8 HxWx{1,3,4} numpy array"
        )
    return image


def _load(source: Any, max_pixels: int, background: tuple[int, int, int] | None,
          shrink: Shrink | None = None, held: ExitStack | None = None) -> Image.Image:
    """`load_image` without the item naming: raises ImageError with a message that starts after the item's name.
    `held`: where a file's share of the decode budget is held (see `_open_encoded`)."""
    image = _upright(_decoded(source, max_pixels, shrink, held), owned=not isinstance(source, Image.Image))
    try:
        deep = _is_deep(image.mode)
        image = _to_8bit(image)  # a 16-bit decode is let go here, before the RGB copy is made
        if deep and shrink is not None:  # grey without transparency: shrunk before RGB, the same pixels as after
            image = shrink.after_decode(image)
        image = _to_rgb(image, background)
    except ImageError:
        raise
    except _PIL_DECODE_ERRORS as err:
        raise ImageError(f"cannot be converted to RGB ({type(err).__name__}: {err})") from err
    return image if shrink is None or deep else shrink.after_decode(image)


def _upright(image: Image.Image, owned: bool) -> Image.Image:
    """EXIF orientation applied, copying only when there is one to apply (a caller's PIL image is never changed).
    An EXIF block too damaged to read counts as no orientation, which is what HF's processor assumes anyway."""
    try:
        orientation = image.getexif().get(_ORIENTATION, 1)
        if orientation in (None, 1):
            return image
        if owned:
            ImageOps.exif_transpose(image, in_place=True)
            return image
        return ImageOps.exif_transpose(image)
    except Exception as err:  # Pillow's EXIF parser raises whatever the damaged bytes lead it to
        log.warning("ignoring an unreadable EXIF block (%s: %s)", type(err).__name__, err)
        return image


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: Sequence[int] | None = None,
) -> Image.Image:
    """Read one image as an upright RGB `PIL.Image`.

    `source`: a path (str / os.PathLike), encoded bytes (any format Pillow reads), a `PIL.Image` (any mode) or a uint8
    numpy array HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA), channels last.
    EXIF orientation is applied. Modes become RGB as Pillow's `convert("RGB")` makes them, which drops alpha
    (OpenAI CLIP's behaviour); with `background=(r, g, b)` images with transparency are composited onto that colour
    instead (`(255, 255, 255)` is transformers 5.x's behaviour).
    Files are fully decoded here, so truncated files fail now. Images with more than `max_pixels` pixels are refused
    before decoding (Pillow's own hard limit, 2 * `Image.MAX_IMAGE_PIXELS`, still applies to files above that).
    Raises `ImageError` naming the source.
    """
    background = _check_background(background)
    try:
        with ExitStack() as held:  # the decode budget is given back once the RGB image is made
            image = _load(source, max_pixels, background, held=held)
    except ImageError as err:
        raise ImageError(f"image {_describe(source)}: {err}") from err.__cause__
    return image.copy() if image is source else image  # the caller's own image is never handed back to change


def preprocess(
    images: ImageSource | Sequence[ImageSource],
    config: PreprocessConfig = PreprocessConfig(),  # noqa: B008  (frozen, so a shared default is safe)
    layout: str = "NHWC",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: Sequence[int] | None = None,
    first_index: int = 0,
    decode: str = "exact",
) -> np.ndarray:
    """Images -> CLIP `pixel_values`: float32 [B, crop, crop, 3] for `layout="NHWC"` (TFLite) or [B, 3, crop, crop]
    for `"NCHW"` (ONNX, HF).

    `images`: one image or a list/tuple of them, each a path, bytes, a PIL image or a uint8 array (see `load_image`,
    which also describes `max_pixels` and `background`). A single image gives B = 1.
    Steps: EXIF orientation, RGB, resize to `config.image_size` (`config.resize_mode`, Pillow `config.resample`),
    center crop to `config.crop_size` (padded with `config.fill`), `* rescale_factor`, `(x - mean) / std`
    (clipedge.runtime.resize_modes; docs/preprocessing.md lists every option).
    Raises `ImageError` naming the bad item (index in the list plus `first_index`, the position of `images[0]` in
    the caller's whole input, and its path) or `InputError` for a bad argument. The error's `index` and `reason`
    attributes hold the two parts, for callers that report them their own way (the CLI's --on-error).
    `decode="exact"` (this function's default) equals `CLIPImageProcessor` bit for bit; `"fast"` first shrinks
    large images (JPEG DCT-domain scaling, integer box reduction: clipedge.runtime.decode), then does the same steps.
    """
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not isinstance(config, PreprocessConfig):
        raise InputError(f"config must be a PreprocessConfig, got {type(config).__name__}")
    # No shrink without a resize: resize_mode "none" crops the decoded pixels themselves (HF do_resize false).
    fast = check_decode(decode) == "fast" and config.resize_mode != "none"
    shrink = Shrink(config.image_size, config.crop_size) if fast else None
    background = _check_background(background)
    single = not isinstance(images, (list, tuple))
    items = [images] if single else list(images)
    if not items:
        raise InputError("no images given (empty list)")

    batch = np.empty((len(items), config.crop_size, config.crop_size, 3), dtype=np.float32)
    for i, source in enumerate(items):
        name = f"image {_describe(source)}" if single else f"image {first_index + i} {_describe(source)}"
        with ExitStack() as held:  # this image's share of the decode budget, until its pixels are made
            try:
                image = _load(source, max_pixels, background, shrink, held)
            except ImageError as err:
                named = ImageError(f"{name}: {err}")
                named.index, named.reason = (None if single else first_index + i), str(err)
                raise named from err.__cause__
            batch[i] = to_pixel_values(image, config)
            del image  # the decoded image goes before the next one is read
    return batch if layout == "NHWC" else np.ascontiguousarray(batch.transpose(0, 3, 1, 2))  # NHWC -> NCHW


def uint8_pixels(pixel_values: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Back from normalized float pixels (the runtime's preprocess, NHWC) to the uint8 RGB they were made from:
    what the mobile tower takes when the app feeds it clipedge's own resize and crop."""
    x = pixel_values * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
