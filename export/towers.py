"""Declared export specs, one per tower and variant: what goes in and out of each model file (after optimum's
export specs).

TFLite takes NHWC pixels at a fixed batch or a dynamic one (`--batch dynamic`, resized at load; the gpu and mobile
variants stay static); ONNX takes NCHW pixels (the ONNX / HF convention) with a dynamic batch axis. Text ids are int32
[B, context] in both. The TFLite `gpu` text variant takes looked-up token embeddings and a one-hot EOT mask instead of
ids (see CLIPTextEncoder.encode_gpu). The TFLite `mobile` variant of the image and classifier towers takes uint8 RGB
NHWC `image` (0..255, already resized and cropped) and normalizes it with CLIP's mean/std inside the graph, the input
MediaPipe Tasks feed (see clipedge.export.mobile).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from clipedge.export.model.clip import CLIPEncoder
from clipedge.runtime.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

__all__ = ["TowerSpec", "tower_spec", "normalize_uint8", "eot_pool", "VARIANTS"]

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
    """One model file's contract and the variant's rules: inputs, the traced function, how calibration and
    verification samples are fed, what the manifest records beside it. The export's main loop asks the spec and
    never branches on the variant itself."""

    tower: str  # "image" | "text" | "classifier"
    variant: str
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
            text = self.model.text_model
            return text.encode_gpu if self.variant == "gpu" else text
        encode = self._classifier() if self.tower == "classifier" else self.model.vision_model
        if self.variant == "mobile":
            return lambda image: encode(normalize_uint8(image, self.mean, self.std))
        if fmt == "onnx":
            return lambda pixel_values: encode(tf.transpose(pixel_values, [0, 2, 3, 1]))  # NCHW -> NHWC
        return encode

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
        """The TFLite file's batch axis for the export's `batch` (None = dynamic): MediaPipe Tasks feed one image,
        so the mobile variant is batch 1; GPU delegates plan static shapes, so a dynamic batch leaves the gpu
        variant at 1 (a fixed N stays N: static)."""
        if self.variant == "mobile" or (self.variant == "gpu" and batch is None):
            return 1
        return batch

    def runner_inputs(self, pixels_nhwc: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Samples as `ArtifactRunner.run` takes them for this file: ids for text, uint8 pixels (the runtime's
        resize and crop) for the mobile variant, else normalized NHWC pixels."""
        if self.tower == "text":
            return ids
        if self.variant == "mobile":
            from clipedge.export.mobile import uint8_pixels

            return uint8_pixels(pixels_nhwc, self.mean, self.std)
        return pixels_nhwc

    def feeds(self, fmt: str, pixels_nhwc: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Calibration samples by input name, in the file's own input form (the quantizers feed them as they
        are)."""
        if self.tower == "text" and self.variant == "gpu":
            from clipedge.runtime.runner import gpu_text_feeds

            return gpu_text_feeds(ids, self.token_table(), eot_pool(self.model.config.text))
        inputs = self.runner_inputs(pixels_nhwc, ids)
        if fmt == "onnx" and self.tower != "text":
            inputs = np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))
        return {self.input_specs(fmt, None)[0].name: inputs}

    def token_table(self) -> np.ndarray:
        return self.model.text_model.token_embedding.numpy()

    def companions(self) -> dict[str, tuple[str, np.ndarray]]:
        """Files the device needs beside the model, by manifest key: the gpu text variant's token table (LiteRT's
        GPU accelerator has no 2-D GATHER, so the runtime looks the tokens up)."""
        if self.tower == "text" and self.variant == "gpu":
            return {"token_table": ("text_gpu_token_embedding.npy", self.token_table())}
        return {}

    def extra(self) -> dict[str, Any]:
        """What the manifest records beside the file for this tower and variant (companions are added by the
        caller)."""
        out: dict[str, Any] = {}
        if self.tower == "text" and self.variant == "gpu":
            out["pool"] = eot_pool(self.model.config.text)
        if self.tower == "classifier":
            out.update(labels=list(self.labels or ()), template=self.template, labels_file="labels.txt")
        if self.variant == "mobile":
            out["mediapipe"] = {
                "task": "ImageClassifier" if self.tower == "classifier" else "ImageEmbedder",
                "input": "uint8 RGB NHWC 0..255; CLIP normalization inside the graph", "metadata": True,
                **({"labels_file": "labels.txt (inside the .tflite)"} if self.tower == "classifier" else {})}
        return out

    def finish(self, data: bytes, precision: str, model_name: str) -> bytes:
        """The converted file as shipped: the mobile variant carries MediaPipe's metadata."""
        if self.variant != "mobile":
            return data
        from clipedge.export.mobile import add_metadata

        task = "image classifier over baked-in labels" if self.tower == "classifier" else "image embedder"
        return add_metadata(data, self.tower, name=f"{model_name} CLIP {task} ({precision})",
                            description=f"clipedge export of {model_name}: CLIP {task} for MediaPipe Tasks, "
                                        f"{precision}.",
                            image_size=self.model.config.vision.image_size, mean=self.mean, std=self.std,
                            output_width=(len(self.labels or ()) if self.tower == "classifier"
                                          else self.model.config.projection_dim),
                            labels=list(self.labels) if self.tower == "classifier" else None)

    def check(self, path: Path, pixels_nhwc: np.ndarray, ids: np.ndarray) -> tuple[dict[str, Any], list[str]]:
        """The variant's own check of a finished file (manifest extras and flags). The gpu variant: TF's static GPU
        analyzer ("gpu-incompatible"), then LiteRT's real GPU accelerator when there is one, on the held-out samples
        in the file's input form: ops left on the CPU, fidelity to the CPU at fp32 and fp16 compute. Other variants
        have no check, and no feeds are built for them."""
        if self.variant != "gpu":
            return {}, []
        from clipedge.export.gpu import gpu_accelerator_check, gpu_compatibility

        analysis = gpu_compatibility(path.read_bytes())
        feeds = self.feeds("tflite", pixels_nhwc, ids)
        accelerator, flags = gpu_accelerator_check(path, self.signature, feeds)
        return ({"gpu_analyzer": analysis, "gpu_accelerator": accelerator},
                ([] if analysis["compatible"] else ["gpu-incompatible"]) + flags)


def eot_pool(text_config) -> dict[str, Any]:
    """Where the text tower pools, as the manifest and the gpu feeds state it: HF's first EOT position, or the
    argmax of the ids for configs with eos_token_id == 2 (HF's legacy rule)."""
    if text_config.eos_token_id == 2:
        return {"rule": "argmax"}
    return {"rule": "first", "eot_token_id": int(text_config.eos_token_id)}


_NAMES = {"image": ("encode_image", "image_embeds"), "text": ("encode_text", "text_embeds"),
          "classifier": ("classify", "probabilities")}


def tower_spec(model: CLIPEncoder, tower: str, variant: str = "default",
               label_embeddings: np.ndarray | None = None, mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
               std: tuple[float, float, float] = OPENAI_CLIP_STD, labels: Sequence[str] | None = None,
               template: str | None = None) -> TowerSpec:
    if tower not in _NAMES:
        raise ValueError(f"unknown tower {tower!r}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    if (tower == "classifier") != (label_embeddings is not None):
        raise ValueError("label_embeddings are given for, and only for, the classifier")
    if variant == "mobile" and tower == "text":
        raise ValueError("the mobile variant is an image input (image and classifier towers only)")
    signature, output = _NAMES[tower]
    return TowerSpec(tower, variant, signature, output, model, label_embeddings, tuple(mean), tuple(std),
                     tuple(labels) if labels is not None else None, template)
