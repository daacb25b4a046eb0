"""`auto` precision: the smallest, fastest model that meets a fidelity target, chosen layer by layer.

Full-int8 CLIP loses accuracy in a few places (a layer whose activations have outlier channels; LayerNorm arithmetic
in int8, measured on the demo CLIP: int8 of its pre-LayerNorm alone gives min cosine 0.79); quantizing the rest costs
almost nothing. So, per tower and format:

1. Groups are the model's layers (name scopes: `embeddings`, `pre_layrnorm`, `layer_N`, ...); a format's
   `GroupQuantizer` (auto.tflite: ai-edge-quantizer scope recipes; auto.onnx: ONNX Runtime's nodes_to_exclude)
   builds a file for any mix of group levels, calibrated once.
2. Sensitivity: per group, the cosine to the float model when only that group is int8 (a table in the bundle).
3. Search (auto.search): from everything int8, keep the most sensitive group float until the target is met; prune
   back to int8 what the target does not need; then try lower levels (`int8-matmul`, `int16`) for the kept groups.
4. Choice: the mixes compete with the fixed precisions (clipedge.runtime.precisions.auto_candidates) on the same
   samples: among those meeting the target, the lowest measured latency wins, then the smallest. The recipe records
   how to rebuild the file.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AutoResult", "Candidate", "DEFAULT_TARGET_COSINE", "GROUP_RULE", "GroupQuantizer", "LEVELS", "Target",
           "ZeroShotReference", "run_auto"]

# Imported on first use (PEP 562): the export settings read `auto.target` before TensorFlow is needed.
_HOME = {"ZeroShotReference": "run", "run_auto": "run", "DEFAULT_TARGET_COSINE": "target", "Target": "target",
         **{name: "search" for name in ("GROUP_RULE", "LEVELS", "AutoResult", "Candidate", "GroupQuantizer")}}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"clipedge.export.formats.auto.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
