"""Judging an exported file by running it the way the device will (the runtime's backends) on held-out samples,
against the float TF model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipedge.runtime.backends import open_backend
from clipedge.runtime.scoring import l2_normalize

__all__ = ["FLOORS", "WARN_BELOW", "run_artifact", "fidelity", "judge"]

# Minimum cosine an artifact must reach on every held-out sample, per precision (issue #4). Below it the artifact is
# kept but flagged "below-floor" in the manifest and the export table.
FLOORS = {"fp32": 0.9999, "fp16": 0.9999}
WARN_BELOW = 0.99  # int8-family artifacts are reported, and warned about under this


def run_artifact(path: Path, signature: str | None, inputs: np.ndarray, layout: str | None = None,
                 threads: int | None = None, input_specs: list[dict] | None = None,
                 output_quantization: dict | None = None, extra: dict | None = None,
                 token_table: np.ndarray | None = None) -> np.ndarray:
    """Float outputs of one exported file for NHWC pixels or int32 ids, fed exactly as the runtime feeds it
    (NCHW transpose, int8 quantization of inputs, GPU-variant token lookup)."""
    from clipedge.runtime.clip import dequantize, gpu_text_feeds, quantize

    backend = open_backend(path, signature=signature, threads=threads)
    if layout == "NCHW":
        inputs = inputs.transpose(0, 3, 1, 2)
    if token_table is not None:
        feeds = gpu_text_feeds(inputs, token_table, (extra or {})["pool"])
    else:
        feeds = {backend.inputs[0].name: np.ascontiguousarray(inputs)}
    for spec in input_specs or []:
        feeds[spec["name"]] = quantize(feeds[spec["name"]], spec.get("quantization"))
    return dequantize(next(iter(backend.run(feeds).values())), output_quantization)


def fidelity(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Cosine between each row and its float reference: mean, 5th percentile, min."""
    cos = np.sum(l2_normalize(ours) * l2_normalize(reference), axis=-1)
    return {"cosine_mean": float(cos.mean()), "cosine_p5": float(np.percentile(cos, 5)),
            "cosine_min": float(cos.min()), "samples": int(len(cos))}


def judge(precision: str, stats: dict[str, float]) -> list[str]:
    floor = FLOORS.get(precision)
    if floor is not None and stats["cosine_min"] < floor:
        return ["below-floor"]
    if floor is None and stats["cosine_min"] < WARN_BELOW:
        return ["low-fidelity"]
    return []
