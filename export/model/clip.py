"""Both towers and the learned temperature: CLIP's contrastive scoring (Radford et al. 2021, figure 3)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import tensorflow as tf

from clipedge.export.model.activations import traced_for
from clipedge.export.model.config import CLIPConfig
from clipedge.export.model.layers import VariableMap, int8_layer_norms
from clipedge.export.model.text import CLIPTextEncoder
from clipedge.export.model.vision import CLIPImageEncoder

__all__ = ["CLIPEncoder"]


class CLIPEncoder(tf.Module):
    """`logit_scale` is stored as the log temperature (as in every checkpoint) and used as exp(logit_scale),
    unclamped: the clamp at 100 is a training-time guard, and released checkpoints already sit at it."""

    def __init__(self, config: CLIPConfig, seed: int = 0) -> None:
        super().__init__(name="clip")
        self.config = config
        self.vision_model = CLIPImageEncoder(config.vision, seed=seed)
        self.text_model = CLIPTextEncoder(config.text, seed=seed + 1)
        self.logit_scale = tf.Variable(config.logit_scale_init_value, dtype=tf.float32, name="logit_scale")

    @contextmanager
    def int8_graph(self) -> Iterator[None]:
        """Trace the towers in their full-int8 formulation inside this block (export.tflite sets it for precision
        "int8" only): the image tower's class row skips the int8 LayerNorm (CLIPImageEncoder._int8_embeddings),
        the text tower's causal mask is INT8_CAUSAL_MASK_VALUE and LayerNorms square with MUL (layers.LayerNorm.
        _int8_form: XNNPACK's int8 kernels). Float graphs (fp32, fp16, gpu, ONNX) keep the reference formulation."""
        previous = self.vision_model.int8_graph, self.text_model.int8_graph
        self.vision_model.int8_graph = self.text_model.int8_graph = True
        try:
            with int8_layer_norms():
                yield
        finally:
            self.vision_model.int8_graph, self.text_model.int8_graph = previous

    @contextmanager
    def export_graph(self, fmt: str) -> Iterator[None]:
        """Trace a file of format `fmt` inside this block (TowerSpec.function does): image-independent sums of
        variables enter the graph as one constant each (CLIPImageEncoder._token_offsets), which the converters
        would otherwise leave as ops on frozen weights, and activations take the format's formulation
        (model/activations.py: exact GELU through Erf for ONNX). Training and the float reference trace outside
        it."""
        previous = self.vision_model.fold_constants
        self.vision_model.fold_constants = True
        try:
            with traced_for(fmt):
                yield
        finally:
            self.vision_model.fold_constants = previous

    def encode_image(self, pixel_values: tf.Tensor) -> tf.Tensor:
        """NHWC float32 [B, S, S, 3] -> unnormalized [B, P]."""
        return self.vision_model(pixel_values)

    def encode_text(self, input_ids: tf.Tensor) -> tf.Tensor:
        """int32 [B, N] -> unnormalized [B, P]."""
        return self.text_model(input_ids)

    def __call__(self, pixel_values: tf.Tensor, input_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        image_embeds = tf.math.l2_normalize(self.encode_image(pixel_values), axis=-1)
        text_embeds = tf.math.l2_normalize(self.encode_text(input_ids), axis=-1)
        logits_per_text = tf.exp(self.logit_scale) * tf.matmul(text_embeds, image_embeds, transpose_b=True)
        return {
            "logits_per_image": tf.transpose(logits_per_text),
            "logits_per_text": logits_per_text,
            "image_embeds": image_embeds,
            "text_embeds": text_embeds,
        }

    def variables_by_key(self) -> VariableMap:
        return {
            **self.vision_model.variables_by_key(),
            **self.text_model.variables_by_key(),
            "logit_scale": (self.logit_scale, "as_is"),
        }
