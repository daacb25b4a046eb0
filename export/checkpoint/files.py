"""What a checkpoint directory says besides its weights: the image preprocessing (HF `preprocessor_config.json`,
OpenCLIP `open_clip_config.json`'s `preprocess_cfg`) and the tokenizer files, turned into the runtime's own objects so
that export calibrates and verifies on exactly what the device will compute.

Every preprocessing field the checkpoint sets is either reproduced (docs/preprocessing.md lists them) or refused with
a `CheckpointError` naming it: a value is never silently replaced by OpenAI's defaults.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from clipedge.runtime.errors import CheckpointError, ExportError, InputError
from clipedge.runtime.preprocess_config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PreprocessConfig
from clipedge.runtime.tokenizer import Tokenizer

__all__ = ["OVERRIDES", "preprocess_config", "preprocess_file", "read_json", "tokenizer"]

log = logging.getLogger(__name__)

OVERRIDES = ("mean", "std", "resample", "resize_mode")  # what `clipedge export` may override (--mean, ...)
# PIL.Image.Resampling's integer codes, as HF image processors save `resample`.
_PIL_CODES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_HF_TYPES = ("CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPImageProcessorPil", "CLIPFeatureExtractor")
_HF_SIZE_KEYS = ({"shortest_edge"}, {"height", "width"})
# open_clip's PreprocessCfg fields (open_clip/transform.py); others are dropped by its merge_preprocess_dict.
_OPENCLIP_KEYS = ("size", "mode", "mean", "std", "interpolation", "resize_mode", "fill_color")


def preprocess_file(directory: Path, layout: str) -> Path | None:
    """The file the checkpoint's preprocessing comes from: open_clip_config.json for OpenCLIP weights,
    preprocessor_config.json for HF ones; None when there is none (the library's defaults apply)."""
    name = "open_clip_config.json" if layout == "openclip" else "preprocessor_config.json"
    return directory / name if (directory / name).is_file() else None


def read_json(file: Path) -> dict[str, Any]:
    """A checkpoint's JSON object, or a CheckpointError saying what is wrong with the file."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{file} is not readable JSON ({err}); fix or remove it") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} holds a JSON {type(data).__name__}, expected an object")
    return data


def preprocess_config(directory: Path, image_size: int, layout: str = "hf", overrides: dict[str, Any] | None = None,
                      mobile: bool = False) -> PreprocessConfig:
    """The checkpoint's own preprocessing at the model's resolution, then `overrides` (the CLI's --mean, --std,
    --resample, --resize-mode; None values are not given). `layout` is the weights' ("hf" | "openclip")."""
    file = preprocess_file(directory, layout)
    if layout == "openclip":
        config = _openclip(file, image_size)
    else:
        config = _hf(file, image_size) if file else PreprocessConfig(image_size=image_size, crop_size=image_size)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(OVERRIDES))
    if unknown:
        raise ExportError(f"preprocessing overrides {unknown} are not supported; these are: {', '.join(OVERRIDES)}")
    try:
        config = replace(config, **given)
    except InputError as err:
        raise ExportError(f"preprocessing override: {err}") from err
    if config.crop_size != image_size:
        raise ExportError(f"preprocessor crop_size {config.crop_size} does not match the model's image_size "
                          f"{image_size}")
    if mobile and config.rescale_factor != 1 / 255:
        raise ExportError(f"--mobile: the mobile models scale uint8 pixels by 1/255 in the graph; this checkpoint's "
                          f"rescale_factor is {config.rescale_factor} (do_rescale / rescale_factor in {file}). "
                          "Export without --mobile")
    return config


# --- HF preprocessor_config.json ------------------------------------------------------------------------------------

def _flag(file: Path, data: dict, key: str) -> bool:
    value = data.get(key, True)
    if not isinstance(value, bool):
        raise CheckpointError(f"{file}: {key} is {value!r}, expected true or false")
    return value


def _positive_int(file: Path, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or value < 1:
        raise CheckpointError(f"{file}: {field} is {value!r}, expected a positive integer")
    return int(value)


def _hf_size(file: Path, data: dict, image_size: int) -> tuple[str, int]:
    """(resize_mode, target) from `size`: an int or {shortest_edge} resizes the short side, {height, width} both."""
    size = data.get("size", {"shortest_edge": image_size})
    if not isinstance(size, dict):
        return "shortest", _positive_int(file, "size", size)
    keys = {k for k, v in size.items() if v is not None}
    if keys not in _HF_SIZE_KEYS:
        raise CheckpointError(f"{file}: size is {size!r}; clipedge reproduces {{'shortest_edge': n}} and "
                              "{'height': n, 'width': n} (longest_edge, max_height / max_width are not supported)")
    if keys == {"shortest_edge"}:
        return "shortest", _positive_int(file, "size.shortest_edge", size["shortest_edge"])
    height, width = (_positive_int(file, f"size.{k}", size[k]) for k in ("height", "width"))
    if height != width:
        raise CheckpointError(f"{file}: size is {size!r}; a non-square resize is not supported (the model's input is "
                              "square)")
    return "squash", height


def _hf_crop(file: Path, data: dict, image_size: int) -> int:
    crop = data.get("crop_size", image_size)
    if not isinstance(crop, dict):
        return _positive_int(file, "crop_size", crop)
    height, width = (_positive_int(file, f"crop_size.{k}", crop.get(k)) for k in ("height", "width"))
    if height != width:
        raise CheckpointError(f"{file}: crop_size is {crop!r}; a non-square crop is not supported")
    return height


def _hf_triple(file: Path, data: dict, key: str, default: tuple[float, float, float]) -> Any:
    value = data.get(key, default)
    return (value,) * 3 if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _hf(file: Path, image_size: int) -> PreprocessConfig:
    """Every CLIPImageProcessor field of `file`, each checked: a damaged, hand-edited or foreign file is a
    CheckpointError naming the field, not a traceback or a silent default."""
    data = read_json(file)
    kind = data.get("image_processor_type") or data.get("feature_extractor_type")
    if kind is not None and kind not in _HF_TYPES:
        raise CheckpointError(f"{file}: image_processor_type is {kind!r}; clipedge reproduces {', '.join(_HF_TYPES)} "
                              "(another processor's defaults and steps differ)")
    if data.get("do_pad"):
        raise CheckpointError(f"{file}: do_pad is {data['do_pad']!r}; padding to a batch size is not supported")
    mode, size = _hf_size(file, data, image_size)
    if not _flag(file, data, "do_resize"):
        mode = "none"
    resample = data.get("resample", 3)
    if resample not in _PIL_CODES or isinstance(resample, bool):
        raise CheckpointError(f"{file}: resample is {resample!r}, expected a PIL code 0..5 ({_PIL_CODES})")
    crop = _hf_crop(file, data, image_size)
    if not _flag(file, data, "do_center_crop"):
        if mode != "squash":  # the short-side resize of a non-square image, or no resize: no fixed size
            raise CheckpointError(f"{file}: do_center_crop is false with size {data.get('size')!r} and do_resize "
                                  f"{data.get('do_resize', True)!r}: the images would not all come out "
                                  f"{image_size} x {image_size}, the model's input")
        crop = size
    _flag(file, data, "do_convert_rgb")  # checked; the runtime converts to RGB either way (docs/preprocessing.md)
    rescale = data.get("rescale_factor", 1 / 255) if _flag(file, data, "do_rescale") else 1.0
    normalize = _flag(file, data, "do_normalize")
    try:
        return PreprocessConfig(
            image_size=size if mode != "none" else crop, crop_size=crop, resample=_PIL_CODES[resample],
            resize_mode=mode, rescale_factor=rescale,
            mean=_hf_triple(file, data, "image_mean", OPENAI_CLIP_MEAN) if normalize else (0.0, 0.0, 0.0),
            std=_hf_triple(file, data, "image_std", OPENAI_CLIP_STD) if normalize else (1.0, 1.0, 1.0))
    except InputError as err:
        raise CheckpointError(f"{file}: {err}") from err


# --- OpenCLIP open_clip_config.json ---------------------------------------------------------------------------------

def openclip_preprocess_cfg(file: Path | None) -> dict[str, Any]:
    """`preprocess_cfg` as open_clip merges it: its keys only, None values dropped (merge_preprocess_dict)."""
    if file is None:
        return {}
    cfg = read_json(file).get("preprocess_cfg", {})
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{file}: preprocess_cfg is a JSON {type(cfg).__name__}, expected an object")
    ignored = sorted(set(cfg) - set(_OPENCLIP_KEYS))
    if ignored:
        log.warning("%s: preprocess_cfg keys %s are not open_clip's and are ignored, as open_clip ignores them",
                    file, ignored)
    return {k: v for k, v in cfg.items() if k in _OPENCLIP_KEYS and v is not None}


def _openclip(file: Path | None, image_size: int) -> PreprocessConfig:
    """open_clip's `image_transform_v2(PreprocessCfg(...), is_train=False)` as a PreprocessConfig: torchvision's crop
    rule, the model's own image size (open_clip replaces `size` with the model's), its interpolation rule."""
    cfg = openclip_preprocess_cfg(file)
    where = f"{file}: preprocess_cfg" if file else "OpenCLIP defaults"
    if cfg.get("mode", "RGB") != "RGB":
        raise CheckpointError(f"{where}.mode is {cfg['mode']!r}; open_clip and clipedge take 'RGB' only")
    if "size" in cfg and cfg["size"] not in (image_size, [image_size, image_size]):
        log.warning("%s.size is %r; open_clip uses the model's image size %d, and so does clipedge", where,
                    cfg["size"], image_size)
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in ("bicubic", "bilinear", "random"):
        raise CheckpointError(f"{where}.interpolation is {interpolation!r}; open_clip takes bicubic, bilinear or "
                              "random (bicubic at inference)")
    resize_mode = cfg.get("resize_mode", "shortest")
    if resize_mode not in ("shortest", "longest", "squash"):
        raise CheckpointError(f"{where}.resize_mode is {resize_mode!r}; open_clip takes shortest, longest or squash")
    fill = cfg.get("fill_color", 0)
    fill = (fill,) * 3 if isinstance(fill, (int, float)) and not isinstance(fill, bool) else fill
    try:
        fill = tuple(int(c) if float(c) == int(c) else c for c in fill)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}.fill_color is {cfg.get('fill_color')!r}, expected an int 0..255") from err

    def triple(key: str, default: tuple[float, float, float]) -> Any:
        # open_clip's image_transform: `mean = mean or OPENAI_DATASET_MEAN`, then a number becomes 3 of it; so a
        # scalar 0 (or []) means OpenAI's values there, and here.
        value = cfg.get(key) or default
        return (value,) * 3 if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    try:
        return PreprocessConfig(
            image_size=image_size, crop_size=image_size, mean=triple("mean", OPENAI_CLIP_MEAN),
            std=triple("std", OPENAI_CLIP_STD), resample="bilinear" if interpolation == "bilinear" else "bicubic",
            resize_mode=resize_mode, crop_rule="torchvision", fill=fill)
    except InputError as err:
        raise CheckpointError(f"{where}: {err}") from err


def tokenizer(directory: Path, context: int) -> Tokenizer:
    """The checkpoint's own BPE files when it has them, else OpenAI's (every released CLIP uses them)."""
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return Tokenizer.from_files(directory, context_length=context)
    return Tokenizer.default(context_length=context)
