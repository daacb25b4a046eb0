"""The default variant's tower spec, which the gpu and mobile variants extend (towers/gpu.py, towers/mobile.py):
what goes in and out of each model file (after optimum's export specs).

TFLite takes NHWC pixels at a fixed batch or a dynamic one (`--batch dynamic`, resized at load; the gpu and mobile
variants stay static); ONNX takes NCHW pixels (the ONNX / HF convention) with a dynamic batch axis. Text ids are int32
[B, context] in both. The TFLite `gpu` text variant takes looked-up token embeddings and a one-hot EOT mask instead of
ids (see CLIPTextEncoder.encode_gpu). The TFLite `mobile` variant of the image and classifier towers takes uint8 RGB
NHWC `image` (0..255, already resized and cropped) and normalizes it with CLIP's mean/std inside the graph, the input
MediaPipe Tasks feed (see clipedge.export.formats.tflite.mediapipe_metadata).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from clipedge.export.model.clip import CLIPEncoder
from clipedge.runtime.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

__all__ = ["TowerSpec", "normalize_uint8", "eot_pool", "TOWER_NAMES"]


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
    """One model file's contract and the variant's rules: inputs, the traced function, how calibration and
    verification samples are fed, what the manifest records beside it. The export's main loop asks the spec and
    never branches on the variant itself. This class is the default variant; a variant is a subclass that
    overrides the hooks it changes (`VARIANT_SPECS` in clipedge.export.towers)."""

    variant: ClassVar[str] = "default"

    tower: str  # "image" | "text" | "classifier"
    signature: str  # TFLite signature key / ONNX graph name
    output_name: str
    model: CLIPEncoder
    label_embeddings: np.ndarray | None = None  # classifier only: [L, D] unit text embeddings, folded in
    # mobile variant only: the per-channel RGB mean/std (of 0..1 pixels) applied inside the graph
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    labels: tuple[str, ...] | None = None  # classifier only: recorded in the manifest
    template: str | None = None

    @property
    def module(self) -> tf.Module:
        return self.model.text_model if self.tower == "text" else self.model.vision_model

    def input_specs(self, fmt: str, batch: int | None) -> list[tf.TensorSpec]:
        if self.tower in ("image", "classifier"):
            size = self.model.config.vision.image_size
            shape = [batch, 3, size, size] if fmt == "onnx" else [batch, size, size, 3]
            return [tf.TensorSpec(shape, tf.float32, name="pixel_values")]
        return [tf.TensorSpec([batch, self.model.config.text.max_position_embeddings], tf.int32, name="input_ids")]

    def function(self, fmt: str, batch: int | None) -> tf.types.experimental.GenericFunction:
        """A tf.function with the input signature for `fmt` ("tflite" | "onnx"); batch None = dynamic. The inputs
        take their names from the TensorSpecs."""
        encode, name = self._encoder(fmt), self.output_name

        def body(*inputs):  # runs only while tracing
            with self.model.export_graph(fmt):
                return {name: encode(*inputs)}

        body.__name__ = self.signature
        return tf.function(body, input_signature=self.input_specs(fmt, batch))

    def _encoder(self, fmt: str) -> Callable[..., tf.Tensor]:
        """The file's inputs -> its output: the tower (or the classifier) after the variant's input adapter."""
        if self.tower == "text":
            return self.model.text_model
        encode = self._image_encoder()
        if fmt == "onnx":
            return lambda pixel_values: encode(tf.transpose(pixel_values, [0, 2, 3, 1]))  # NCHW -> NHWC
        return encode

    def _image_encoder(self) -> Callable[[tf.Tensor], tf.Tensor]:
        """NHWC pixels -> the image tower's output: the embedding, or the classifier's probabilities."""
        return self._classifier() if self.tower == "classifier" else self.model.vision_model

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

    # ---- the variant's rules, asked by the export ---------------------------------------------------------------
    def model_batch(self, batch: int | None) -> int | None:
        """The TFLite file's batch axis for the export's `batch` (None = dynamic)."""
        return batch

    def runner_inputs(self, pixels_nhwc: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Samples as `ArtifactRunner.run` takes them for this file: ids for text, else normalized NHWC pixels."""
        return ids if self.tower == "text" else pixels_nhwc

    def feeds(self, fmt: str, pixels_nhwc: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Calibration samples by input name, in the file's own input form (the quantizers feed them as they
        are)."""
        inputs = self.runner_inputs(pixels_nhwc, ids)
        if fmt == "onnx" and self.tower != "text":
            inputs = np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))
        return {self.input_specs(fmt, None)[0].name: inputs}

    def companions(self) -> dict[str, tuple[str, np.ndarray]]:
        """Files the device needs beside the model, by manifest key: none for the default variant."""
        return {}

    def extra(self) -> dict[str, Any]:
        """What the manifest records beside the file for this tower and variant (companions are added by the
        caller)."""
        if self.tower == "classifier":
            return {"labels": list(self.labels or ()), "template": self.template, "labels_file": "labels.txt"}
        return {}

    def finish(self, data: bytes, precision: str, model_name: str) -> bytes:
        """The converted file as shipped (the mobile variant adds MediaPipe's metadata)."""
        return data

    def check(self, path: Path, pixels_nhwc: np.ndarray, ids: np.ndarray) -> tuple[dict[str, Any], list[str]]:
        """The variant's own check of a finished file: (manifest extras, flags). None for the default variant."""
        return {}, []


def eot_pool(text_config) -> dict[str, Any]:
    """Where the text tower pools, as the manifest and the gpu feeds state it: HF's first EOT position, or the
    argmax of the ids for configs with eos_token_id == 2 (HF's legacy rule)."""
    if text_config.eos_token_id == 2:
        return {"rule": "argmax"}
    return {"rule": "first", "eot_token_id": int(text_config.eos_token_id)}


# tower -> (the TFLite signature key / ONNX graph name, the output's name)
TOWER_NAMES = {"image": ("encode_image", "image_embeds"), "text": ("encode_text", "text_embeds"),
               "classifier": ("classify", "probabilities")}
