"""How faithful a candidate ONNX model is on the calibration samples: what the recipes that choose between
candidates (int4's kept layers, dynamic-int8's weight type) score them by. Held-out samples stay for verification."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["onnx_outputs", "scorer"]


def onnx_outputs(model_bytes: bytes, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
    """The model's first output on `feeds` (ONNX Runtime, CPU, 2 threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(feeds))[0]


def scorer(reference_model: bytes, feeds: Mapping[str, np.ndarray]) -> Callable[[bytes], float]:
    """A function: candidate model bytes -> its min cosine to `reference_model` on `feeds`."""
    from clipedge.runtime.metrics import cosine_stats

    reference = onnx_outputs(reference_model, feeds)
    return lambda candidate: cosine_stats(onnx_outputs(candidate, feeds), reference)["cosine_min"]
