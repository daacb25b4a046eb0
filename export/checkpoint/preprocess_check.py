"""The export's check of its preprocessing against the checkpoint's own library: the held-out images prepared by
`CLIPImageProcessor` (HF directories) or open_clip's `image_transform_v2` (OpenCLIP repos), each built from the
checkpoint's own file by that library, against the runtime's pixels for the same images.

Why: a field read wrongly (OpenAI's mean where an OpenCLIP repo said 0.5) shipped a bundle whose image embeddings
were at min cosine 0.9686 to open_clip's, and nothing in the export noticed: every file was verified against the
float model on the runtime's own pixels. Here the float model also sees the reference's pixels; a bundle whose
pixels are more than `PIXEL_TOLERANCE` off, or whose embeddings fall under the fp32 floor, is not written.

The references are optional imports (transformers; open_clip with torchvision): without them the check is recorded
as not run, and says which package would run it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.export.checkpoint.files import preprocess_file, read_json
from clipedge.runtime.errors import ExportError
from clipedge.runtime.metrics import cosine_stats
from clipedge.runtime.precisions import precision
from clipedge.runtime.preprocess import load_image
from clipedge.runtime.preprocess_config import PreprocessConfig

__all__ = ["PIXEL_TOLERANCE", "check_preprocess", "reference_transform"]

log = logging.getLogger(__name__)

# Max |diff| on normalized pixels: both sides do Pillow's resize and the same float steps, so the measured diff is 0;
# one uint8 level is 1 / 255 / std (0.0146 for OpenAI's std, 0.0078 for 0.5). A misread mean or filter is far above.
PIXEL_TOLERANCE = 1e-4
_PIL_CODES = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}

Transform = Callable[[Any], np.ndarray]  # RGB PIL image -> float32 HWC pixels


def _hf_reference(directory: Path, overrides: dict[str, Any]) -> tuple[str, Transform] | str:
    if preprocess_file(directory, "hf") is None:
        return "the checkpoint has no preprocessor_config.json (OpenAI CLIP's defaults at the model's size)"
    if overrides.get("resize_mode") is not None:
        return "--resize-mode has no CLIPImageProcessor equivalent"
    try:
        import transformers
    except Exception as err:  # noqa: BLE001  (an optional reference: any failure to import means "not here")
        return f"transformers is not importable ({type(err).__name__}); pip install transformers to run it"
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    kwargs = {"image_mean": overrides.get("mean"), "image_std": overrides.get("std")}
    if overrides.get("resample") is not None:
        kwargs["resample"] = _PIL_CODES[overrides["resample"]]
    processor = cls.from_pretrained(str(directory), **{k: v for k, v in kwargs.items() if v is not None})

    def transform(image: Any) -> np.ndarray:
        pixels = processor(image, return_tensors="np")["pixel_values"][0]
        return np.asarray(pixels, np.float32).transpose(1, 2, 0)  # CHW -> HWC

    return f"transformers {transformers.__version__} {cls.__name__}", transform


def _openclip_reference(directory: Path, image_size: int, overrides: dict[str, Any]) -> tuple[str, Transform] | str:
    if overrides.get("resample") not in (None, "bicubic", "bilinear"):
        return f"--resample {overrides['resample']} has no open_clip equivalent (bicubic and bilinear only)"
    try:
        import open_clip
        from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
    except Exception as err:  # noqa: BLE001  (open_clip imports torchvision, whose C extension may fail to load)
        return (f"open_clip is not importable ({type(err).__name__}: {str(err)[:80]}); pip install open_clip_torch "
                "torchvision to run it")
    # open_clip's create_model: the defaults, then the repo's preprocess_cfg, then the model's own image size, then
    # the caller's forced values (factory.py, set_model_preprocess_cfg).
    file = preprocess_file(directory, "openclip")
    raw = (read_json(file).get("preprocess_cfg") if file else None) or {}  # as open_clip reads it, not as we do
    cfg = merge_preprocess_dict(asdict(PreprocessCfg()), raw)
    cfg["size"] = (image_size, image_size)
    forced = {"mean": overrides.get("mean"), "std": overrides.get("std"), "resize_mode": overrides.get("resize_mode"),
              "interpolation": overrides.get("resample")}
    cfg = merge_preprocess_dict(cfg, {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in forced.items()})
    if cfg.get("resize_mode") == "none":
        return "--resize-mode none has no open_clip equivalent"
    pipeline = image_transform_v2(PreprocessCfg(**cfg), is_train=False)

    def transform(image: Any) -> np.ndarray:
        return pipeline(image).numpy().astype(np.float32).transpose(1, 2, 0)  # CHW -> HWC

    return f"open_clip {getattr(open_clip, '__version__', '?')} image_transform_v2", transform


def reference_transform(directory: Path, layout: str, image_size: int,
                        overrides: dict[str, Any] | None = None) -> tuple[str, Transform] | str:
    """(name, transform) of the checkpoint's own preprocessing, or why there is none to run here."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if layout == "openclip":
        return _openclip_reference(directory, image_size, overrides)
    return _hf_reference(directory, overrides)


def check_preprocess(directory: Path, layout: str, config: PreprocessConfig, overrides: dict[str, Any] | None,
                     image_files: list[str], pixels: np.ndarray, encode: Callable[[np.ndarray], np.ndarray],
                     embeddings: np.ndarray) -> dict[str, Any]:
    """Compare the runtime's `pixels` (NHWC, of `image_files`) and the float model's `embeddings` of them with the
    checkpoint's own preprocessing; ExportError when they disagree. Returns the manifest's record of the check."""
    found = reference_transform(directory, layout, config.crop_size, overrides)
    if isinstance(found, str):
        log.info("preprocessing not compared with the checkpoint's own library: %s", found)
        return {"reference": None, "not_run_because": found}
    name, transform = found
    expected = np.stack([transform(load_image(path)) for path in image_files])
    if expected.shape != pixels.shape:
        raise ExportError(f"preprocessing: {name} gives pixels of shape {expected.shape[1:]}, the runtime "
                          f"{pixels.shape[1:]}; export refused")
    diff = np.abs(expected - pixels).max(axis=(1, 2, 3))
    stats = cosine_stats(encode(expected), embeddings)
    floor = precision("fp32").floor
    record = {"reference": name, "images": len(image_files), "max_abs_pixel_diff": float(diff.max()),
              "cosine_min": stats["cosine_min"], "cosine_mean": stats["cosine_mean"]}
    if diff.max() > PIXEL_TOLERANCE or stats["cosine_min"] < floor:
        worst = int(diff.argmax())
        raise ExportError(
            f"preprocessing does not match the checkpoint's own ({name}): max |pixel diff| {diff.max():.4g} "
            f"(on {Path(image_files[worst]).name}), image embeddings min cosine {stats['cosine_min']:.6f} "
            f"(floor {floor}). The bundle would record {config.to_dict()}; export refused. Fix the checkpoint's "
            "preprocessing file or pass --mean/--std/--resample/--resize-mode")
    log.info("preprocessing matches %s on %d held-out images (max |pixel diff| %.3g, min cosine %.7f)", name,
             len(image_files), diff.max(), stats["cosine_min"])
    return record
