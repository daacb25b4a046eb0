"""CLIP image preprocessing as a TensorFlow graph: decode, shortest-side bicubic resize, center crop, normalize.

`CLIPFeatureExtractorTF` is the in-graph twin of `clipedge.runtime.preprocess` (which equals HF `CLIPImageProcessor`
bit for bit), for SavedModels that take encoded images or raw uint8 pixels.
"""

from __future__ import annotations

import tensorflow as tf

from clipedge.runtime.errors import InputError
from clipedge.runtime.preprocess import PreprocessConfig

__all__ = ["CLIPFeatureExtractorTF", "TOLERANCE"]

# Max |diff| on normalized values vs CLIPImageProcessor / clipedge.runtime.preprocess that the tests allow:
# 2 uint8 steps (2 / 255 / 0.2613 = 0.0300) in any channel; measured in the class docstring.
TOLERANCE = 0.031


class CLIPFeatureExtractorTF(tf.Module):
    """Decode + resize + crop + normalize, as `tf.function`s with fixed input signatures.

    Output: float32 NHWC [1, crop, crop, 3] (`from_encoded`, `from_pixels`) or [B, crop, crop, 3] (`from_pixels_batch`).

    Same steps and integer rules as `clipedge.runtime.preprocess`: the short side becomes `image_size` and the long
    one `floor(image_size * long / short)`; center crop at offset `(size - crop) // 2`, zero-padded (in pixel space)
    when the image is smaller than the crop; then `x / 255`, `(x - mean) / std`.

    How close it is to the reference, and why it is built this way (max |diff| on normalized values vs
    `CLIPImageProcessor`; one uint8 step is 1 / 255 / std = 0.0142 to 0.0150):
    - Resize: `tf.image.resize(method="bicubic", antialias=True)` has Pillow's kernel (Keys cubic, a = -0.5, widened
      by the downscale factor, weights renormalized at the borders) but one float 2-D pass gave up to 0.37 on photos
      (0.26 rounded to uint8 after; 0.55 on uniform noise). Pillow rounds to uint8 between its two 1-D passes and
      picks their order by shape; emulating both (`_resize_pass`) brings every category to at most 2 steps:
      smooth gradients 0.015, gradients + noise 0.015, uniform noise 0.015, photos 0.030 (231 photos, 119 px to
      1920 px a side); mean |diff| ~1e-5 (values equal but for rounding ties in float32 vs Pillow's fixed point).
    - Decode: JPEG goes through `decode_jpeg(dct_method="INTEGER_ACCURATE")`, Pillow's IDCT; `decode_image`'s
      default fast IDCT was up to 23 levels off (0.28 after preprocessing). With it, JPEG (4:4:4, 4:2:2, 4:2:0) and
      PNG bytes give the same 0.030.
    So the tests allow `TOLERANCE` = 0.031 (2 uint8 steps, any channel) and a mean |diff| of 2e-4.
    Not handled, unlike the runtime: EXIF orientation (TF has no op for it; pass upright images); CMYK JPEGs;
    16-bit grayscale PNGs (TF scales them to 8 bits; Pillow's `convert("RGB")` clips them at 255, as the reference
    does). Alpha is dropped (`channels=3`), as the runtime does by
    default. Animated GIF / WebP: the first frame. The decode ops are not TFLite builtins: this module is for TF
    serving and for checks, not for the .tflite files.
    """

    def __init__(self, config: PreprocessConfig = PreprocessConfig(), name: str | None = None):  # noqa: B008
        super().__init__(name=name)
        if not isinstance(config, PreprocessConfig):
            raise InputError(f"config must be a PreprocessConfig, got {type(config).__name__}")
        # The graph reproduces the shortest-side bicubic path only; other options are refused by name, never
        # replaced (docs/preprocessing.md). fill and rescale_factor are honoured.
        for field, supported in (("resample", "bicubic"), ("resize_mode", "shortest"), ("crop_rule", "transformers")):
            if getattr(config, field) != supported:
                raise InputError(f"CLIPFeatureExtractorTF supports {field}={supported!r} only, got "
                                 f"{getattr(config, field)!r}")
        self.config = config
        self._fill = tf.constant([float(c) for c in config.fill], tf.float32)
        self._mean = tf.constant(config.mean, tf.float32)
        self._std = tf.constant(config.std, tf.float32)

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([], tf.string, name="image_bytes")])
    def from_encoded(self, image_bytes: tf.Tensor) -> tf.Tensor:
        """Encoded JPEG / PNG / GIF / BMP / WebP bytes (a scalar tf.string) -> float32 [1, crop, crop, 3]."""
        # decode_image decodes JPEG with libjpeg's fast integer IDCT: up to 23 uint8 levels off Pillow's decode
        # (measured, q95 4:4:4). Pillow uses the accurate one (JDCT_ISLOW); so does this.
        pixels = tf.cond(
            tf.io.is_jpeg(image_bytes),
            lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False),
        )
        pixels.set_shape([None, None, 3])
        return self._preprocess(pixels[tf.newaxis])

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="pixels")])
    def from_pixels(self, pixels: tf.Tensor) -> tf.Tensor:
        """uint8 RGB [H, W, 3] -> float32 [1, crop, crop, 3]."""
        return self._preprocess(pixels[tf.newaxis])

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="pixels")])
    def from_pixels_batch(self, pixels: tf.Tensor) -> tf.Tensor:
        """uint8 RGB [B, H, W, 3] (images of one size) -> float32 [B, crop, crop, 3]."""
        return self._preprocess(pixels)

    def _preprocess(self, pixels: tf.Tensor) -> tf.Tensor:
        """uint8 [B, H, W, 3] -> float32 [B, crop, crop, 3]."""
        # An explicit control dependency: in a graph the assert is otherwise not ordered before the division
        # below, and a zero-size image then fails as "Integer division by zero" instead (seen in CI).
        check = tf.debugging.assert_positive(tf.size(pixels), message="image has zero size")
        with tf.control_dependencies([check]):
            height = tf.shape(pixels, out_type=tf.int64)[1]
            width = tf.shape(pixels, out_type=tf.int64)[2]

        # Shortest side -> image_size, long side floor(image_size * long / short). Integer floor division equals the
        # reference's int(size * long / short) in float64: the exact quotient is at least 1 / short away from the
        # next integer, far more than a float64 rounding step at these magnitudes.
        size = tf.constant(self.config.image_size, tf.int64)
        short = tf.minimum(height, width)
        new_long = size * tf.maximum(height, width) // short
        new_height = tf.where(width <= height, new_long, size)
        new_width = tf.where(width <= height, size, new_long)

        # Pillow resizes in two 1-D passes and rounds to uint8 after each; doing the same here (rather than one 2-D
        # tf.image.resize in float) cuts the max error vs the reference from ~17 uint8 steps to 1-2 on photos.
        # Pillow 13 (src/libImaging/Resample.c, `horizontal_first`) runs the vertical pass first when the height
        # shrinks by more than twice what the width does; Pillow <= 11.0 always ran the horizontal pass first.
        vertical_first = tf.logical_and(height > new_height, height - new_height > 2 * (width - new_width))
        x = tf.cast(pixels, tf.float32)
        x = tf.cond(
            vertical_first,
            lambda: _resize_pass(_resize_pass(x, new_height, width), new_height, new_width),
            lambda: _resize_pass(_resize_pass(x, height, new_width), new_height, new_width),
        )

        # Center crop; pad first where the image is smaller than the crop (reference: HF `center_crop`).
        crop = tf.constant(self.config.crop_size, tf.int64)
        pad_h = tf.maximum(crop - new_height, 0)
        pad_w = tf.maximum(crop - new_width, 0)
        paddings = tf.stack([[0, 0], [pad_h - pad_h // 2, pad_h // 2], [pad_w - pad_w // 2, pad_w // 2], [0, 0]])
        x = tf.pad(x - self._fill, paddings) + self._fill  # padding of colour `fill` (0 for HF)
        top = (new_height + pad_h - crop) // 2
        left = (new_width + pad_w - crop) // 2
        x = x[:, top : top + crop, left : left + crop, :]
        x = tf.ensure_shape(x, [None, self.config.crop_size, self.config.crop_size, 3])

        scaled = x / 255.0 if self.config.rescale_factor == 1 / 255 else x * self.config.rescale_factor
        return (scaled - self._mean) / self._std


def _resize_pass(x: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """float32 [B, H, W, 3] -> [B, height, width, 3] bicubic (Keys, a = -0.5, widened when downscaling), then rounded
    half up and clipped to 0..255 as Pillow's `clip8` does. Called with one of the two sizes unchanged: a 1-D pass
    (at scale 1 the kernel's weights are 1, 0, 0, so the other axis is untouched)."""
    x = tf.image.resize(x, tf.cast(tf.stack([height, width]), tf.int32), method="bicubic", antialias=True)
    return tf.clip_by_value(tf.floor(x + 0.5), 0.0, 255.0)
