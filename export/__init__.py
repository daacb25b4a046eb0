"""clipedge export: the TF CLIP model, checkpoint loading, converters, calibration and reports (needs TensorFlow)."""

from clipedge.export.checkpoint import CheckpointInfo, CLIPModel, read_checkpoint
from clipedge.export.model import (
    PRESETS,
    CLIPConfig,
    CLIPEncoder,
    CLIPImageConfig,
    CLIPImageEncoder,
    CLIPTextConfig,
    CLIPTextEncoder,
)

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
    "read_checkpoint",
]
