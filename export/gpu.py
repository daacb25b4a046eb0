"""The gpu variant's static check: TF's GPU compatibility analyzer over a finished .tflite. Static only: LiteRT's
real GPU accelerator may still refuse an op it accepts (2-D GATHER is), hence the variant's own graph (towers.py)."""

from __future__ import annotations

import contextlib
import io

import tensorflow as tf

__all__ = ["gpu_compatibility"]


def gpu_compatibility(model_bytes: bytes) -> dict[str, object]:
    """tf.lite.experimental.Analyzer's GPU check: {"compatible": bool, "issues": [lines]}. It is static: ops it
    accepts may still be refused by a GPU at run time (2-D GATHER is), hence the GPU variant's own graph."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tf.lite.experimental.Analyzer.analyze(model_content=model_bytes, gpu_compatibility=True)
    text = buffer.getvalue()
    issues = [line.strip() for line in text.splitlines() if "GPU COMPATIBILITY WARNING" in line
              or "Not supported op" in line or "not supported" in line.lower()]
    compatible = "looks compatible with GPU delegate" in text and not issues
    return {"compatible": compatible, "issues": issues}
