"""Images and captions for calibration and for verifying exported files, split so no sample does both.

Images go through the runtime's preprocessing and captions through the runtime's tokenizer: the exported models are
calibrated and judged on exactly the tensors the device will feed them.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipedge.runtime.datasets import list_images, read_captions, shipped_calibration_images, shipped_data_dir
from clipedge.runtime.errors import ExportError, InputError

__all__ = ["SHIPPED", "SampleSet", "build_samples"]

log = logging.getLogger(__name__)

SHIPPED = "calibration_data"  # how the manifest names the shipped calibration_data, wherever it is installed
EVAL_SAMPLES = 32  # held out for verification (at most a quarter of the data)


@dataclass(frozen=True)
class SampleSet:
    """Preprocessed inputs: `calibration_*` feed quantizers, `eval_*` are held out for fidelity."""

    calibration_pixels: np.ndarray  # NHWC float32
    calibration_ids: np.ndarray  # int32 [N, context]
    eval_pixels: np.ndarray
    eval_ids: np.ndarray
    eval_image_files: list[str]
    eval_captions: list[str]
    calibration_image_files: list[str]
    calibration_captions: list[str]
    images_dir: Path
    captions_file: Path

    def record(self) -> dict[str, object]:
        """The manifest's record of what was calibrated on and what was held out, image paths relative to
        `images_dir` ("calibration_data" for the shipped data): the report measures on what export did not see."""
        shipped = shipped_data_dir()

        def name(path: Path) -> str:
            return SHIPPED if shipped is not None and path.resolve() == shipped.resolve() else str(path.resolve())

        def relative(files: list[str]) -> list[str]:
            return [Path(f).resolve().relative_to(self.images_dir.resolve()).as_posix() for f in files]

        captions = self.captions_file
        captions_name = (f"{SHIPPED}/{captions.name}" if name(captions.parent) == SHIPPED
                         else str(captions.resolve()))
        return {"images_dir": name(self.images_dir), "captions_file": captions_name,
                "calibrated_images": relative(self.calibration_image_files),
                "held_out_images": relative(self.eval_image_files),
                "calibrated_captions": list(self.calibration_captions), "held_out_captions": list(self.eval_captions)}


def _shipped_or(given: Path | None, what: str, hint: str) -> Path:
    """The given path, else `what` in the shipped calibration_data."""
    if given is not None:
        return Path(given)
    shipped = shipped_data_dir()
    if shipped is None or not (shipped / what).exists():
        raise ExportError(hint)
    return (shipped / what).resolve()


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
                  eval_samples: int = EVAL_SAMPLES, seed: int = 0) -> SampleSet:
    from clipedge.runtime.preprocess import preprocess

    shipped = images_dir is None
    images_dir = _shipped_or(images_dir, ".", "no calibration images: pass --calibration DIR (the shipped "
                             "calibration_data/ is not installed)")
    captions_file = _shipped_or(captions_file, "captions.txt", "no captions: pass --captions FILE (one caption per "
                                "line)")
    try:
        images = shipped_calibration_images(images_dir) if shipped else list_images(images_dir)
        captions = read_captions(captions_file)
    except InputError as err:
        raise ExportError(f"calibration data: {err}") from err
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
        calibration_image_files=[str(p) for p in calib_images],
        calibration_captions=calib_captions,
        images_dir=Path(images_dir),
        captions_file=Path(captions_file),
    )
