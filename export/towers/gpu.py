"""The `gpu` variant: fp32 TFLite files that LiteRT's GPU accelerator runs whole.

GPU delegates plan static shapes and lack 2-D GATHER: the text file takes looked-up token embeddings and a one-hot
EOT mask (`CLIPTextEncoder.encode_gpu`), the token table ships beside it for the runtime to look the tokens up
(`runner.gpu_text_feeds`), and a dynamic batch leaves the file at batch 1. Each finished file is checked by TF's
static analyzer and then on LiteRT's real GPU accelerator (towers/gpu_checks.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from clipedge.export.towers.spec import TowerSpec, eot_pool

__all__ = ["GpuTowerSpec"]


@dataclass(frozen=True)
class GpuTowerSpec(TowerSpec):
    variant = "gpu"

    def input_specs(self, fmt: str, batch: int | None) -> list[tf.TensorSpec]:
        if self.tower != "text":
            return super().input_specs(fmt, batch)
        context, width = self.model.config.text.max_position_embeddings, self.model.config.text.hidden_size
        return [tf.TensorSpec([batch, context, width], tf.float32, name="token_embeddings"),
                tf.TensorSpec([batch, context], tf.float32, name="eot_mask")]

    def _encoder(self, fmt: str) -> Callable[..., tf.Tensor]:
        return self.model.text_model.encode_gpu if self.tower == "text" else super()._encoder(fmt)

    def model_batch(self, batch: int | None) -> int | None:
        """GPU delegates plan static shapes: a dynamic batch leaves the file at 1 (a fixed N stays N)."""
        return 1 if batch is None else batch

    def feeds(self, fmt: str, pixels_nhwc: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
        if self.tower != "text":
            return super().feeds(fmt, pixels_nhwc, ids)
        from clipedge.runtime.runner import gpu_text_feeds

        return gpu_text_feeds(ids, self.token_table(), eot_pool(self.model.config.text))

    def token_table(self) -> np.ndarray:
        return self.model.text_model.token_embedding.numpy()

    def companions(self) -> dict[str, tuple[str, np.ndarray]]:
        """The text file's token table (LiteRT's GPU accelerator has no 2-D GATHER: the runtime looks tokens up)."""
        if self.tower == "text":
            return {"token_table": ("text_gpu_token_embedding.npy", self.token_table())}
        return {}

    def extra(self) -> dict[str, Any]:
        out = super().extra()
        if self.tower == "text":
            out["pool"] = eot_pool(self.model.config.text)
        return out

    def check(self, path: Path, pixels_nhwc: np.ndarray, ids: np.ndarray) -> tuple[dict[str, Any], list[str]]:
        """TF's static GPU analyzer ("gpu-incompatible"), then LiteRT's real GPU accelerator when there is one, on
        the held-out samples in the file's input form: ops left on the CPU, fidelity to the CPU at fp32 and fp16
        compute."""
        from clipedge.export.towers.gpu_checks import gpu_accelerator_check, gpu_compatibility

        analysis = gpu_compatibility(path.read_bytes())
        accelerator, flags = gpu_accelerator_check(path, self.signature, self.feeds("tflite", pixels_nhwc, ids))
        return ({"gpu_analyzer": analysis, "gpu_accelerator": accelerator},
                ([] if analysis["compatible"] else ["gpu-incompatible"]) + flags)
