"""The `mobile` variant: image and classifier TFLite files for MediaPipe Tasks (ImageEmbedder, ImageClassifier).

MediaPipe feeds one uint8 RGB image (0..255, already resized and cropped), so the file takes uint8 NHWC `image` at
batch 1 and normalizes it with the checkpoint's mean/std inside the graph (`normalize_uint8`); the finished file
carries MediaPipe's metadata (formats/tflite/mediapipe_metadata.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from clipedge.export.towers.spec import TowerSpec, normalize_uint8
from clipedge.runtime.preprocess import uint8_pixels

__all__ = ["MobileTowerSpec"]


@dataclass(frozen=True)
class MobileTowerSpec(TowerSpec):
    variant = "mobile"

    def __post_init__(self) -> None:
        if self.tower == "text":
            raise ValueError("the mobile variant is an image input (image and classifier towers only)")

    def input_specs(self, fmt: str, batch: int | None) -> list[tf.TensorSpec]:
        size = self.model.config.vision.image_size
        return [tf.TensorSpec([batch, size, size, 3], tf.uint8, name="image")]

    def _encoder(self, fmt: str) -> Callable[..., tf.Tensor]:
        encode = self._image_encoder()
        return lambda image: encode(normalize_uint8(image, self.mean, self.std))

    def model_batch(self, batch: int | None) -> int | None:
        """MediaPipe Tasks feed one image."""
        return 1

    def runner_inputs(self, pixels_nhwc: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """uint8 pixels: the runtime's resize and crop, before normalization."""
        return uint8_pixels(pixels_nhwc, self.mean, self.std)

    def extra(self) -> dict[str, Any]:
        classifier = self.tower == "classifier"
        return {**super().extra(), "mediapipe": {
            "task": "ImageClassifier" if classifier else "ImageEmbedder",
            "input": "uint8 RGB NHWC 0..255; CLIP normalization inside the graph", "metadata": True,
            **({"labels_file": "labels.txt (inside the .tflite)"} if classifier else {})}}

    def finish(self, data: bytes, precision: str, model_name: str) -> bytes:
        from clipedge.export.formats.tflite.mediapipe_metadata import add_metadata

        classifier = self.tower == "classifier"
        task = "image classifier over baked-in labels" if classifier else "image embedder"
        return add_metadata(data, self.tower, name=f"{model_name} CLIP {task} ({precision})",
                            description=f"clipedge export of {model_name}: CLIP {task} for MediaPipe Tasks, "
                                        f"{precision}.",
                            image_size=self.model.config.vision.image_size, mean=self.mean, std=self.std,
                            output_width=(len(self.labels or ()) if classifier else self.model.config.projection_dim),
                            labels=list(self.labels) if classifier else None)
