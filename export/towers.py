"""Declared export specs, one per tower and variant: what goes in and out of each model file (after optimum's
export specs).

TFLite takes NHWC pixels at a fixed batch (mobile interpreters allocate once); ONNX takes NCHW pixels (the ONNX / HF
convention) with a dynamic batch axis. Text ids are int32 [B, context] in both. The TFLite `gpu` text variant takes
looked-up token embeddings and a one-hot EOT mask instead of ids (see CLIPTextEncoder.encode_gpu).
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from clipedge.export.model.clip import CLIPEncoder

__all__ = ["TowerSpec", "tower_spec", "VARIANTS"]

VARIANTS = ("default", "gpu")


@dataclass(frozen=True)
class TowerSpec:
    tower: str  # "image" | "text"
    variant: str
    signature: str  # TFLite signature key / ONNX graph name
    output_name: str
    model: CLIPEncoder

    @property
    def module(self) -> tf.Module:
        return self.model.vision_model if self.tower == "image" else self.model.text_model

    def input_specs(self, fmt: str, batch: int | None) -> list[tf.TensorSpec]:
        if self.tower == "image":
            size = self.model.config.vision.image_size
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
        if self.tower == "image" and fmt == "onnx":
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

    def io(self, fmt: str, batch: int | None) -> tuple[list[dict], list[dict]]:
        """Manifest descriptions of the inputs and outputs (-1 marks a dynamic axis)."""
        inputs = []
        for spec in self.input_specs(fmt, batch):
            entry = {"name": spec.name, "shape": [-1 if d is None else int(d) for d in spec.shape],
                     "dtype": spec.dtype.name}
            if spec.name == "pixel_values":
                entry["layout"] = "NCHW" if fmt == "onnx" else "NHWC"
            inputs.append(entry)
        batch_dim = -1 if batch is None else batch
        outputs = [{"name": self.output_name, "shape": [batch_dim, self.model.config.projection_dim],
                    "dtype": "float32"}]
        return inputs, outputs


def tower_spec(model: CLIPEncoder, tower: str, variant: str = "default") -> TowerSpec:
    if tower not in ("image", "text"):
        raise ValueError(f"unknown tower {tower!r}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    signature = "encode_image" if tower == "image" else "encode_text"
    output = "image_embeds" if tower == "image" else "text_embeds"
    return TowerSpec(tower, variant, signature, output, model)
