"""The TF CLIP model: two towers built from plain tf.Variables, readable bottom-up (layers -> towers -> clip)."""

from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.model.config import PRESETS, CLIPConfig, CLIPImageConfig, CLIPTextConfig
from clipedge.export.model.text import CLIPTextEncoder
from clipedge.export.model.vision import CLIPImageEncoder

__all__ = ["CLIPConfig", "CLIPEncoder", "CLIPImageConfig", "CLIPImageEncoder", "CLIPTextConfig", "CLIPTextEncoder",
           "PRESETS"]
