"""What a checkpoint directory says besides its weights: the image preprocessing (HF `preprocessor_config.json`) and
the tokenizer files, turned into the runtime's own objects so that export calibrates and verifies on exactly what
the device will compute."""

from __future__ import annotations

import json
import math
from pathlib import Path

from clipedge.runtime.errors import CheckpointError, ExportError, InputError
from clipedge.runtime.preprocess import PreprocessConfig
from clipedge.runtime.tokenizer import Tokenizer

__all__ = ["preprocess_config", "tokenizer"]


def preprocess_config(directory: Path, image_size: int) -> PreprocessConfig:
    """From the checkpoint's preprocessor_config.json (HF), else OpenAI's values at the model's resolution."""
    config = PreprocessConfig(image_size=image_size, crop_size=image_size)
    file = directory / "preprocessor_config.json"
    if file.is_file():
        config = _read_preprocessor_config(file, image_size, config)
    if config.crop_size != image_size:
        raise ExportError(f"preprocessor crop_size {config.crop_size} does not match the model's image_size "
                          f"{image_size}")
    return config


def _read_preprocessor_config(file: Path, image_size: int, default: PreprocessConfig) -> PreprocessConfig:
    """HF's fields (`size.shortest_edge` or an int, `crop_size.height` or an int, `image_mean`, `image_std`), each
    checked: a damaged or hand-edited file is a CheckpointError naming the field, not a traceback."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{file} is not readable JSON ({err}); fix or remove it") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} holds a JSON {type(data).__name__}, expected an object with size, crop_size, "
                              "image_mean and image_std")

    def side(key: str, inner: str) -> int:
        value = data.get(key, image_size)
        value = value.get(inner, image_size) if isinstance(value, dict) else value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value != int(value) or value < 1:
            raise CheckpointError(f"{file}: {key} is {data.get(key)!r}, expected a positive integer or "
                                  f"{{{inner!r}: integer}}")
        return int(value)

    try:
        return PreprocessConfig(image_size=side("size", "shortest_edge"), crop_size=side("crop_size", "height"),
                                mean=data.get("image_mean", default.mean), std=data.get("image_std", default.std))
    except InputError as err:
        raise CheckpointError(f"{file}: {err}") from err


def tokenizer(directory: Path, context: int) -> Tokenizer:
    """The checkpoint's own BPE files when it has them, else OpenAI's (every released CLIP uses them)."""
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return Tokenizer.from_files(directory, context_length=context)
    return Tokenizer.default(context_length=context)
