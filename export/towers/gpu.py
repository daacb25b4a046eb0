"""The `gpu` variant: fp32 TFLite files that LiteRT's GPU accelerator runs whole.

GPU delegates plan static shapes and lack 2-D GATHER: the text file takes looked-up token embeddings and a one-hot
EOT mask (`CLIPTextEncoder.encode_gpu`), the token table ships beside it for the runtime to look the tokens up
(`runner.gpu_text_feeds`), and a dynamic batch leaves the file at batch 1. Each finished file is checked by TF's
static analyzer and then on LiteRT's real GPU accelerator.

Both, because the analyzer is static and was wrong: it accepted the demo image tower's constant PAD, which LiteRT's
GPU accelerator left on the CPU ("PAD: Expected 1 runtime input tensor(s), but node has 0 runtime input(s)"), and
`is_fully_accelerated()` said True all the same. The real check reads LiteRT's own placement log, runs the held-out
samples at both GPU compute precisions and compares them with the same file on the CPU; it runs in a child process
(clipedge.runtime.backends.gpu_check), because LiteRT's GPU setup crashes in a process that has TensorFlow
loaded (with Mesa's llvmpipe) and may crash on a model a GPU cannot take.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from clipedge.export.towers.spec import TowerSpec, eot_pool

__all__ = ["GPU_FLOOR", "GpuTowerSpec", "gpu_compatibility", "gpu_accelerator_check"]

# Min cosine of the gpu file on the GPU at fp32 compute to the same file on the CPU (the fp32 files' floor). fp16
# compute is recorded beside it, not held to it: LiteRT's fp16 default measured 0.99933 on the demo's photos.
GPU_FLOOR = 0.9999
# Held-out samples run on the GPU: a software GPU (CI's lavapipe) takes ~70 ms per demo image at each precision,
# and every export with a gpu variant pays it.
GPU_SAMPLES = 16


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
        analysis = gpu_compatibility(path.read_bytes())
        accelerator, flags = gpu_accelerator_check(path, self.signature, self.feeds("tflite", pixels_nhwc, ids))
        return ({"gpu_analyzer": analysis, "gpu_accelerator": accelerator},
                ([] if analysis["compatible"] else ["gpu-incompatible"]) + flags)


def gpu_compatibility(model_bytes: bytes) -> dict[str, object]:
    """tf.lite.experimental.Analyzer's GPU check: {"compatible": bool, "issues": [lines]}."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tf.lite.experimental.Analyzer.analyze(model_content=model_bytes, gpu_compatibility=True)
    text = buffer.getvalue()
    issues = [line.strip() for line in text.splitlines() if "GPU COMPATIBILITY WARNING" in line
              or "Not supported op" in line or "not supported" in line.lower()]
    compatible = "looks compatible with GPU delegate" in text and not issues
    return {"compatible": compatible, "issues": issues}


def gpu_accelerator_check(path: Path, signature: str, feeds: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[str]]:
    """LiteRT's GPU accelerator on the finished file: (the manifest's record, flags). Flags: "gpu-partial" (ops left
    on the CPU), "gpu-below-floor" (fp32 compute under GPU_FLOOR), "gpu-failed" (the check process died). No GPU
    here: recorded as unavailable, no flag. Runs the first GPU_SAMPLES of `feeds`."""
    from clipedge.runtime.backends.gpu_check import gpu_check

    feeds = {name: values[:GPU_SAMPLES] for name, values in feeds.items()}
    result = {**gpu_check(path, feeds, signature), "samples": len(next(iter(feeds.values())))}
    if result["status"] == "ran" and result["ops_on_gpu"] is None:  # LiteRT counts only when it splits a model
        from clipedge.export.formats.tflite.flatbuffer import operators

        result["ops_on_gpu"] = len(operators(path.read_bytes())) - result["ops_on_cpu"]
    flags = []
    if result["status"] == "failed":
        flags.append("gpu-failed")
    elif result["status"] == "ran":
        if not result["fully_delegated"] or result["ops_on_cpu"]:
            flags.append("gpu-partial")
        if result["cosine_to_cpu"]["fp32"]["min"] < GPU_FLOOR:
            flags.append("gpu-below-floor")
    return result, flags
