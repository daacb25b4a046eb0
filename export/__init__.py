"""clipedge export: checkpoints to verified bundles (needs TensorFlow). Rooms: `model/` (the TF CLIP), `checkpoint/`
(reading HF and OpenCLIP checkpoints), `pipeline/` (one export, settings to bundle), `towers/` (each file's inputs and
outputs, one class per variant), `formats/` (the .tflite and .onnx writers and quantization recipes, `auto`), `demo/`
(the shipped demo CLIP and its training); `settings.py`, `options.py` and `commands.py` are the CLI's side.

The names below are imported on first use (PEP 562), so the TensorFlow-free modules (`commands`, `settings`,
`options`) can be imported on an install without TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

from clipedge.runtime.logs import native_logs_hidden, quiet_tensorflow

quiet_tensorflow()  # before anything imports TensorFlow: its C++ banner and INFO lines only when logs are asked for

__all__ = [
    "PRESETS",
    "CLIPConfig",
    "CLIPEncoder",
    "CLIPFeatureExtractorTF",
    "CLIPImageConfig",
    "CLIPImageEncoder",
    "CLIPModel",
    "CLIPTextConfig",
    "CLIPTextEncoder",
    "CheckpointInfo",
    "ExportResult",
    "ExportSettings",
    "export_bundle",
    "read_checkpoint",
]

_HOME = {
    "CheckpointInfo": "clipedge.export.checkpoint.loader",
    "CLIPModel": "clipedge.export.checkpoint.loader",
    "read_checkpoint": "clipedge.export.checkpoint.loader",
    "export_bundle": "clipedge.export.pipeline.export_bundle",
    "ExportResult": "clipedge.export.pipeline.export_bundle",
    "ExportSettings": "clipedge.export.settings",
    "CLIPFeatureExtractorTF": "clipedge.export.model.feature_extractor",
    **{name: "clipedge.export.model" for name in ("PRESETS", "CLIPConfig", "CLIPEncoder", "CLIPImageConfig",
                                                  "CLIPImageEncoder", "CLIPTextConfig", "CLIPTextEncoder")},
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        with native_logs_hidden():  # TensorFlow 2.21 logs on import whatever TF_CPP_MIN_LOG_LEVEL says
            value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
