"""clipedge export: the TF CLIP model, checkpoint loading, converters, calibration and reports (needs TensorFlow).

The names below are imported on first use (PEP 562), so a TensorFlow-free submodule such as
`clipedge.runtime.report.run` (it needs only the runtime, plus matplotlib for its plots) can be imported on an install
without TensorFlow.
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
