"""Declared export specs, one per tower: what goes in and out of each model file (after optimum's export specs).

TFLite takes NHWC pixels at a fixed batch (mobile interpreters allocate once); ONNX takes NCHW pixels (the ONNX / HF
convention) with a dynamic batch axis. Text ids are int32 [B, context] in both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from clipedge.export.model.clip import CLIPEncoder

__all__ = ["TowerSpec", "tower_spec"]


@dataclass(frozen=True)
class TowerSpec:
    tower: str
    signature: str  # TFLite signature key / ONNX graph name
    input_name: str
    output_name: str
    module: tf.Module
    build: Callable[[str, int | None], tf.types.experimental.GenericFunction]

    def function(self, fmt: str, batch: int | None) -> tf.types.experimental.GenericFunction:
        """A tf.function with the input signature for `fmt` ("tflite": NHWC, "onnx": NCHW); batch None = dynamic."""
        return self.build(fmt, batch)

    def io(self, fmt: str, batch: int | None, embed_dim: int) -> tuple[list[dict], list[dict]]:
        """Manifest descriptions of the inputs and outputs (-1 marks a dynamic axis)."""
        spec = self.function(fmt, batch).input_signature[0]
        shape = [-1 if d is None else int(d) for d in spec.shape]
        inputs = [{"name": self.input_name, "shape": shape, "dtype": spec.dtype.name}]
        if self.tower == "image":
            inputs[0]["layout"] = "NCHW" if fmt == "onnx" else "NHWC"
        outputs = [{"name": self.output_name, "shape": [shape[0], embed_dim], "dtype": "float32"}]
        return inputs, outputs


def tower_spec(model: CLIPEncoder, tower: str) -> TowerSpec:
    if tower == "image":
        vision = model.vision_model
        size = vision.config.image_size

        def build_image(fmt: str, batch: int | None):
            if fmt == "onnx":
                signature = tf.TensorSpec([batch, 3, size, size], tf.float32, name="pixel_values")

                @tf.function(input_signature=[signature])
                def encode_image(pixel_values):
                    return {"image_embeds": vision(tf.transpose(pixel_values, [0, 2, 3, 1]))}  # NCHW -> NHWC
            else:
                signature = tf.TensorSpec([batch, size, size, 3], tf.float32, name="pixel_values")

                @tf.function(input_signature=[signature])
                def encode_image(pixel_values):
                    return {"image_embeds": vision(pixel_values)}
            return encode_image

        return TowerSpec("image", "encode_image", "pixel_values", "image_embeds", vision, build_image)
    if tower == "text":
        text = model.text_model
        context = text.config.max_position_embeddings

        def build_text(fmt: str, batch: int | None):
            @tf.function(input_signature=[tf.TensorSpec([batch, context], tf.int32, name="input_ids")])
            def encode_text(input_ids):
                return {"text_embeds": text(input_ids)}

            return encode_text

        return TowerSpec("text", "encode_text", "input_ids", "text_embeds", text, build_text)
    raise ValueError(f"unknown tower {tower!r}")
