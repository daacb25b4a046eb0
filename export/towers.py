"""Declared export specs, one per tower and variant: what goes in and out of each model file (after optimum's
export specs).

TFLite takes NHWC pixels at a fixed batch (mobile interpreters allocate once); ONNX takes NCHW pixels (the ONNX / HF
convention) with a dynamic batch axis. Text ids are int32 [B, context] in both. The TFLite `gpu` text variant takes
looked-up token embeddings and a one-hot EOT mask instead of ids (see CLIPTextEncoder.encode_gpu). The TFLite `mobile`
variant of the image and classifier towers takes uint8 RGB NHWC `image` (0..255, already resized and cropped) and
normalizes it with CLIP's mean/std inside the graph, the input MediaPipe Tasks feed (see clipedge.export.mobile).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from clipedge.export.model.clip import CLIPEncoder
from clipedge.runtime.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

__all__ = ["TowerSpec", "tower_spec", "normalize_uint8", "VARIANTS"]

VARIANTS = ("default", "gpu", "mobile")


def normalize_uint8(image: tf.Tensor, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                    std: Sequence[float] = OPENAI_CLIP_STD) -> tf.Tensor:
    """uint8 RGB [B, H, W, 3] -> CLIP's pixel_values inside a graph (the mobile towers; the demo's training step):
    (x / 255 - mean) / std folded into one multiply-add (x * a + b, a = 1 / (255 std), b = -mean / std), the
    runtime's preprocessing up to float32 rounding."""
    mean64, std64 = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    a, b = (1.0 / (255.0 * std64)).astype(np.float32), (-mean64 / std64).astype(np.float32)
    return tf.cast(image, tf.float32) * tf.constant(a) + tf.constant(b)


@dataclass(frozen=True)
class TowerSpec:
    tower: str  # "image" | "text" | "classifier"
    variant: str
    signature: str  # TFLite signature key / ONNX graph name
    output_name: str
    model: CLIPEncoder
    label_embeddings: np.ndarray | None = None  # classifier only: [L, D] unit text embeddings, folded in
    # mobile variant only: the per-channel RGB mean/std (of 0..1 pixels) applied inside the graph
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD

    @property
    def module(self) -> tf.Module:
        return self.model.text_model if self.tower == "text" else self.model.vision_model

    def input_specs(self, fmt: str, batch: int | None) -> list[tf.TensorSpec]:
        if self.tower in ("image", "classifier"):
            size = self.model.config.vision.image_size
            if self.variant == "mobile":
                return [tf.TensorSpec([batch, size, size, 3], tf.uint8, name="image")]
            shape = [batch, 3, size, size] if fmt == "onnx" else [batch, size, size, 3]
            return [tf.TensorSpec(shape, tf.float32, name="pixel_values")]
        context, width = self.model.config.text.max_position_embeddings, self.model.config.text.hidden_size
        if self.variant == "gpu":
            return [tf.TensorSpec([batch, context, width], tf.float32, name="token_embeddings"),
                    tf.TensorSpec([batch, context], tf.float32, name="eot_mask")]
        return [tf.TensorSpec([batch, context], tf.int32, name="input_ids")]

    def function(self, fmt: str, batch: int | None) -> tf.types.experimental.GenericFunction:
        """A tf.function with the input signature for `fmt` ("tflite" | "onnx"); batch None = dynamic."""
        specs = self.input_specs(fmt, batch)
        vision, text, name = self.model.vision_model, self.model.text_model, self.output_name
        if self.variant == "mobile":
            encode = self._classifier() if self.tower == "classifier" else vision

            def body(image):
                return {name: encode(normalize_uint8(image, self.mean, self.std))}
        elif self.tower == "classifier":
            classify = self._classifier()
            if fmt == "onnx":
                def body(pixel_values):
                    return {name: classify(tf.transpose(pixel_values, [0, 2, 3, 1]))}
            else:
                def body(pixel_values):
                    return {name: classify(pixel_values)}
        elif self.tower == "image" and fmt == "onnx":
            def body(pixel_values):
                return {name: vision(tf.transpose(pixel_values, [0, 2, 3, 1]))}  # NCHW -> NHWC
        elif self.tower == "image":
            def body(pixel_values):
                return {name: vision(pixel_values)}
        elif self.variant == "gpu":
            def body(token_embeddings, eot_mask):
                return {name: text.encode_gpu(token_embeddings, eot_mask)}
        else:
            def body(input_ids):
                return {name: text(input_ids)}
        body.__name__ = self.signature
        return tf.function(body, input_signature=specs)

    def _classifier(self):
        """Image tower -> class probabilities, with the label text embeddings as a constant: a phone app that only
        classifies needs no tokenizer or text model. Normalization is written as x * rsqrt(sum x^2) so it stays
        MUL/RSQRT/SUM (no L2_NORMALIZATION, which GPU delegates lack)."""
        vision = self.model.vision_model
        labels = np.ascontiguousarray(self.label_embeddings.T.astype(np.float32))  # D x L
        scale = float(np.exp(self.model.logit_scale.numpy()))

        def classify(pixels_nhwc):
            x = vision(pixels_nhwc)
            x = x * tf.math.rsqrt(tf.reduce_sum(x * x, axis=-1, keepdims=True) + 1e-12)
            # tf.constant inside the traced function: a graph constant, not a captured input (tf2onnx would
            # otherwise make it a model input)
            return tf.nn.softmax(scale * tf.matmul(x, tf.constant(labels)), axis=-1)

        return classify

    def io(self, fmt: str, batch: int | None) -> tuple[list[dict], list[dict]]:
        """Manifest descriptions of the inputs and outputs (-1 marks a dynamic axis)."""
        inputs = []
        for spec in self.input_specs(fmt, batch):
            entry = {"name": spec.name, "shape": [-1 if d is None else int(d) for d in spec.shape],
                     "dtype": spec.dtype.name}
            if spec.name in ("pixel_values", "image"):
                entry["layout"] = "NCHW" if fmt == "onnx" else "NHWC"
            inputs.append(entry)
        batch_dim = -1 if batch is None else batch
        width = len(self.label_embeddings) if self.tower == "classifier" else self.model.config.projection_dim
        outputs = [{"name": self.output_name, "shape": [batch_dim, width], "dtype": "float32"}]
        return inputs, outputs


_NAMES = {"image": ("encode_image", "image_embeds"), "text": ("encode_text", "text_embeds"),
          "classifier": ("classify", "probabilities")}


def tower_spec(model: CLIPEncoder, tower: str, variant: str = "default",
               label_embeddings: np.ndarray | None = None, mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
               std: tuple[float, float, float] = OPENAI_CLIP_STD) -> TowerSpec:
    if tower not in _NAMES:
        raise ValueError(f"unknown tower {tower!r}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    if (tower == "classifier") != (label_embeddings is not None):
        raise ValueError("label_embeddings are given for, and only for, the classifier")
    if variant == "mobile" and tower == "text":
        raise ValueError("the mobile variant is an image input (image and classifier towers only)")
    signature, output = _NAMES[tower]
    return TowerSpec(tower, variant, signature, output, model, label_embeddings, tuple(mean), tuple(std))
