"""`PreprocessConfig`: how pixels become a model's `pixel_values`, as the bundle manifest stores it.

One frozen value holds every step a checkpoint's own preprocessing can ask for (docs/preprocessing.md): HF
`CLIPImageProcessor`'s resize / center crop / rescale / normalize, and OpenCLIP's `preprocess_cfg` (its
`resize_mode` "shortest" / "longest" / "squash", `fill_color` and torchvision's crop rounding). The steps themselves
are in `clipedge.runtime.resize_modes`; loading images in `clipedge.runtime.preprocess`.

The manifest always carries the five original keys (image_size, crop_size, mean, std, resample); the later ones only
when they differ from their defaults, so a bundle that needs nothing new still reads in a runtime that predates them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from clipedge.runtime.errors import InputError

__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "RESAMPLE_NAMES",
    "RESIZE_MODES",
    "CROP_RULES",
    "DEFAULT_RESCALE",
    "PreprocessConfig",
]

# Per-channel RGB mean and std of OpenAI CLIP's training images, from openai/CLIP `clip/clip.py` `_transform`
# (Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))); the same values are
# `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD` in transformers `image_utils.py` and open_clip `constants.py`.
OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

RESAMPLE_NAMES = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")  # Pillow's filters
# shortest: short side to image_size, long side int(image_size * long / short) (transformers, torchvision Resize(int))
# longest: long side to image_size keeping the ratio, each side round(side / ratio) (open_clip / timm ResizeKeepRatio)
# squash: image_size x image_size, the ratio not kept; none: no resize (HF do_resize false)
RESIZE_MODES = ("shortest", "longest", "squash", "none")
# How the center crop places its window and splits padding when a side is shorter than the crop:
# transformers: offset (size - crop) // 2, padding's odd pixel at the top / left (image_transforms.center_crop);
# torchvision: offset round((size - crop) / 2) half to even, odd padding pixel at the bottom / right (F.center_crop).
CROP_RULES = ("transformers", "torchvision")
DEFAULT_RESCALE = 1 / 255  # HF's rescale_factor and ToTensor's / 255 (equal in float32 for every uint8 value)

# The fields a manifest always carries (what runtimes before issue #22 know); the rest only when not default.
_ALWAYS = ("image_size", "crop_size", "mean", "std", "resample")


def _triple(name: str, value: Any) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise InputError(f"PreprocessConfig.{name} must be 3 floats (R, G, B), got {value!r}") from err
    if len(triple) != 3 or not all(np.isfinite(triple)):
        raise InputError(f"PreprocessConfig.{name} must be 3 finite floats (R, G, B), got {value!r}")
    return triple  # type: ignore[return-value]


def _fill(value: Any) -> tuple[int, int, int]:
    try:
        rgb = tuple(value)
    except TypeError as err:
        raise InputError(f"PreprocessConfig.fill must be 3 ints 0..255 (R, G, B), got {value!r}") from err
    if len(rgb) != 3 or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255
                                for c in rgb):
        raise InputError(f"PreprocessConfig.fill must be 3 ints 0..255 (R, G, B), got {value!r}")
    return tuple(int(c) for c in rgb)  # type: ignore[return-value]


@dataclass(frozen=True)
class PreprocessConfig:
    """How pixels become `pixel_values`; stored whole in the bundle manifest (`to_dict` / `from_dict`).

    The defaults are OpenAI CLIP's (ViT-B/32, B/16, L/14) as HF `CLIPImageProcessor` computes them; L/14-336 uses
    `image_size=crop_size=336`. Steps: resize (`resize_mode` to `image_size`, Pillow `resample`), center crop to
    `crop_size` (`crop_rule`; sides shorter than the crop padded with `fill`), `x * rescale_factor`,
    `(x - mean) / std`. HF's `do_normalize: false` is mean 0, std 1 (the same values, bit for bit).
    """

    image_size: int = 224  # the resize target: see resize_mode
    crop_size: int = 224  # square center crop: the model's input size
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    resample: str = "bicubic"  # a Pillow filter name: nearest, box, bilinear, hamming, bicubic, lanczos
    resize_mode: str = "shortest"
    crop_rule: str = "transformers"
    fill: tuple[int, int, int] = (0, 0, 0)  # uint8 RGB of the padding
    rescale_factor: float = DEFAULT_RESCALE

    def __post_init__(self) -> None:
        for name in ("image_size", "crop_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InputError(f"PreprocessConfig.{name} must be a positive int, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("mean", "std"):
            object.__setattr__(self, name, _triple(name, getattr(self, name)))
        if min(self.std) <= 0:
            raise InputError(f"PreprocessConfig.std must be > 0, got {self.std!r}")
        for name, allowed in (("resample", RESAMPLE_NAMES), ("resize_mode", RESIZE_MODES), ("crop_rule", CROP_RULES)):
            if getattr(self, name) not in allowed:
                raise InputError(f"PreprocessConfig.{name} must be one of {sorted(allowed)}, "
                                 f"got {getattr(self, name)!r}")
        object.__setattr__(self, "fill", _fill(self.fill))
        factor = self.rescale_factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float, np.floating)) \
                or not math.isfinite(factor) or factor <= 0:
            raise InputError(f"PreprocessConfig.rescale_factor must be a finite number > 0, got {factor!r}")
        object.__setattr__(self, "rescale_factor", float(factor))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        """Inverse of `to_dict`; unknown keys are refused (named) rather than silently ignored."""
        if not isinstance(d, dict):
            raise InputError(f"PreprocessConfig.from_dict needs a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown preprocessing keys {unknown}; expected some of {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the original five keys always, the others where they are not the default."""
        default = PreprocessConfig()
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _ALWAYS or value != getattr(default, f.name):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out
