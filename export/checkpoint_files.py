"""What a checkpoint directory says besides its weights: the image preprocessing (HF `preprocessor_config.json`) and
the tokenizer files, turned into the runtime's own objects so that export calibrates and verifies on exactly what
the device will compute."""

from __future__ import annotations

import json
from pathlib import Path

from clipedge.runtime.errors import ExportError
from clipedge.runtime.preprocess import PreprocessConfig
from clipedge.runtime.tokenizer import Tokenizer

__all__ = ["preprocess_config", "tokenizer"]


def preprocess_config(directory: Path, image_size: int) -> PreprocessConfig:
    """From the checkpoint's preprocessor_config.json (HF), else OpenAI's values at the model's resolution."""
    config = PreprocessConfig(image_size=image_size, crop_size=image_size)
    file = directory / "preprocessor_config.json"
    if file.is_file():
        data = json.loads(file.read_text())
        size = data.get("size", {})
        shortest = size.get("shortest_edge", image_size) if isinstance(size, dict) else int(size)
        crop = data.get("crop_size", image_size)
        crop = crop.get("height", image_size) if isinstance(crop, dict) else int(crop)
        config = PreprocessConfig(image_size=int(shortest), crop_size=int(crop),
                                  mean=tuple(data.get("image_mean", config.mean)),
                                  std=tuple(data.get("image_std", config.std)))
    if config.crop_size != image_size:
        raise ExportError(f"preprocessor crop_size {config.crop_size} does not match the model's image_size "
                          f"{image_size}")
    return config


def tokenizer(directory: Path, context: int) -> Tokenizer:
    """The checkpoint's own BPE files when it has them, else OpenAI's (every released CLIP uses them)."""
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return Tokenizer.from_files(directory, context_length=context)
    return Tokenizer.default(context_length=context)
