"""The gpu variant's checks: TF's static GPU compatibility analyzer, then LiteRT's real GPU accelerator when this
machine has one (a Vulkan, OpenCL or Metal adapter; CI has Mesa's software Vulkan).

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
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["GPU_FLOOR", "gpu_compatibility", "gpu_accelerator_check"]

# Min cosine of the gpu file on the GPU at fp32 compute to the same file on the CPU (the fp32 files' floor). fp16
# compute is recorded beside it, not held to it: LiteRT's fp16 default measured 0.99933 on the demo's photos.
GPU_FLOOR = 0.9999
# Held-out samples run on the GPU: a software GPU (CI's lavapipe) takes ~70 ms per demo image at each precision,
# and every export with a gpu variant pays it.
GPU_SAMPLES = 16


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
