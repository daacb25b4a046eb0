"""Images and captions for calibration and for verifying exported files, split so no sample does both.

Images go through the runtime's preprocessing and captions through the runtime's tokenizer: the exported models are
calibrated and judged on exactly the tensors the device will feed them.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from clipedge.runtime.errors import ExportError

__all__ = ["IMAGE_SUFFIXES", "SampleSet", "default_calibration_dir", "list_images", "read_captions", "build_samples"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass(frozen=True)
class SampleSet:
    """Preprocessed inputs: `calibration_*` feed quantizers, `eval_*` are held out for fidelity."""

    calibration_pixels: np.ndarray  # NHWC float32
    calibration_ids: np.ndarray  # int32 [N, context]
    eval_pixels: np.ndarray
    eval_ids: np.ndarray
    eval_image_files: list[str]
    eval_captions: list[str]


def default_calibration_dir() -> Path | None:
    """The shipped calibration_data/ (installed as the package clipedge.calibration_data), if present."""
    try:
        root = Path(str(resources.files("clipedge.calibration_data")))
    except ModuleNotFoundError:
        return None
    return root if root.is_dir() else None


def list_images(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise ExportError(f"calibration image directory {directory} does not exist")
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_captions(path: Path) -> list[str]:
    if not path.is_file():
        raise ExportError(f"captions file {path} does not exist")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    captions = [line for line in lines if line and not line.startswith("#")]
    if not captions:
        raise ExportError(f"captions file {path} has no captions (one per line)")
    return captions


def _split(items: list, calibration: int, evaluation: int, seed: int, what: str) -> tuple[list, list]:
    if len(items) < 2:
        raise ExportError(f"need at least 2 {what} to calibrate and verify on separate samples, got {len(items)}")
    shuffled = items[:]
    random.Random(seed).shuffle(shuffled)
    n_eval = min(evaluation, max(1, len(shuffled) // 4))  # hold out first: verification must never see calibration
    held_out, rest = shuffled[:n_eval], shuffled[n_eval:]
    return rest[:calibration], held_out


def build_samples(image_size: int, context_length: int, preprocess_config, tokenizer,
                  images_dir: Path | None = None, captions_file: Path | None = None, samples: int = 64,
                  eval_samples: int = 32, seed: int = 0) -> SampleSet:
    from clipedge.runtime.preprocess import preprocess

    shipped = default_calibration_dir()
    if images_dir is None:
        if shipped is None:
            raise ExportError("no calibration images: pass --calibration DIR (the shipped calibration_data/ "
                              "is not installed)")
        images_dir = shipped
    if captions_file is None:
        if shipped is None or not (shipped / "captions.txt").is_file():
            raise ExportError("no captions: pass --captions FILE (one caption per line)")
        captions_file = shipped / "captions.txt"
    images = list_images(Path(images_dir))
    captions = read_captions(Path(captions_file))
    calib_images, eval_images = _split(images, samples, eval_samples, seed, f"images in {images_dir}")
    calib_captions, eval_captions = _split(captions, samples, eval_samples, seed, f"captions in {captions_file}")
    log.info("samples: %d+%d images, %d+%d captions (calibration+held out)", len(calib_images), len(eval_images),
             len(calib_captions), len(eval_captions))
    return SampleSet(
        calibration_pixels=preprocess(calib_images, preprocess_config, layout="NHWC"),
        calibration_ids=tokenizer(calib_captions, context_length=context_length),
        eval_pixels=preprocess(eval_images, preprocess_config, layout="NHWC"),
        eval_ids=tokenizer(eval_captions, context_length=context_length),
        eval_image_files=[str(p) for p in eval_images],
        eval_captions=eval_captions,
    )
