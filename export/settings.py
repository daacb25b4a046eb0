"""`ExportSettings`: everything one export is asked to do, in one frozen value, and the one place its options are
declared: each field's `option(...)` gives the CLI its flag, choices, help and default (clipedge.export.options).

The CLI builds it from its flags and passes it whole; `export_bundle` reads it; the manifest's `export` section is
its `to_manifest()`, so a bundle says exactly how it was made. Checks that need no model run here, so a bad choice
fails before any slow work.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipedge.export.formats.auto.target import DEFAULT_TARGET_COSINE, Target
from clipedge.export.options import comma_list, non_negative_int, option, positive_int
from clipedge.runtime.errors import ExportError
from clipedge.runtime.manifest import FORMATS, TOWERS
from clipedge.runtime.precisions import DEFAULT_PRECISIONS, PRECISION_NAMES, available
from clipedge.runtime.preprocess_config import RESAMPLE_NAMES, RESIZE_MODES
from clipedge.runtime.prompts import DEFAULT_TEMPLATE

__all__ = ["DYNAMIC_BATCH", "ExportSettings", "batch_option", "isolate_option", "labels_file"]

DYNAMIC_BATCH = "dynamic"  # --batch dynamic; the manifest's export.batch for a dynamic batch axis


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    """"a,b" or ["a", "b"] -> ("a", "b"): the CLI's comma lists and the API's sequences alike."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(item).strip() for item in items if str(item).strip())


def batch_option(text: str) -> int | str:
    """--batch: "dynamic" (the TFLite batch axis resized at load) or a fixed positive batch."""
    if text.strip().lower() == DYNAMIC_BATCH:
        return DYNAMIC_BATCH
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be {DYNAMIC_BATCH!r} or a positive integer, got {text!r}") from None


def isolate_option(text: str) -> bool | None:
    """--isolate auto|yes|no -> None (decided by the model's size), True, False."""
    choices = {"auto": None, "yes": True, "no": False}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"must be one of auto, yes, no, got {text!r}")
    return choices[text]


def labels_file(text: str) -> tuple[str, ...]:
    """--labels FILE: one label per line, blank lines skipped."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"labels file {text} does not exist (one label per line)")
    try:
        return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as err:
        raise argparse.ArgumentTypeError(f"labels file {text} cannot be read as UTF-8 text: {err}") from None


def _triple(name: str, value: str | Sequence[float]) -> tuple[float, float, float]:
    """"0.5,0.5,0.5", "0.5" or three numbers -> (R, G, B): --mean / --std."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        numbers = tuple(float(item) for item in items)
    except (TypeError, ValueError) as err:
        raise ExportError(f"{name} must be 1 or 3 numbers (R,G,B), got {value!r}") from err
    numbers = numbers * 3 if len(numbers) == 1 else numbers
    if len(numbers) != 3 or not all(math.isfinite(n) for n in numbers):
        raise ExportError(f"{name} must be 1 or 3 finite numbers (R,G,B), got {value!r}")
    return numbers  # type: ignore[return-value]


@dataclass(frozen=True)
class ExportSettings:
    """One export. Paths may be given as str; sequences as lists or comma-separated strings."""

    out: Path = option(Path("clipedge-bundle"), "bundle directory to write", metavar="DIR")
    checkpoint: str | None = option(
        None, "HF/OpenCLIP directory, weights file or hub id", default_text="the shipped demo CLIP, if installed")
    architecture: str | None = option(None, "preset name for OpenCLIP files, e.g. ViT-B-32 or ViT-B-32-quickgelu")
    formats: tuple[str, ...] = option(FORMATS, "model formats", parse=comma_list, listing=FORMATS)
    precisions: tuple[str, ...] = option(
        DEFAULT_PRECISIONS, "precisions (docs/precisions.md; auto only when asked for)", parse=comma_list,
        listing=PRECISION_NAMES)
    towers: tuple[str, ...] = option(TOWERS, "towers", parse=comma_list, listing=TOWERS)
    default_precision: str | None = option(
        None, "the precision the runtime runs when none is asked for (recorded in the manifest)",
        choices=PRECISION_NAMES, default_text="the fastest that passes its fidelity floor, timed at export")
    # The plain TFLite files' batch axis: N = fixed at N, None (or "dynamic") = dynamic, resized at load (the
    # gpu and mobile variants stay static: TowerSpec.model_batch). ONNX files always have a dynamic batch.
    batch: int | None = option(
        1, "batch axis of the TFLite models: N fixed, or 'dynamic' (resized at load; the gpu and mobile variants stay "
        "static)", parse=batch_option, metavar="N|dynamic")
    calibration: Path | None = option(None, "directory of calibration images", metavar="DIR",
                                      default_text="the shipped calibration_data")
    captions: Path | None = option(None, "text file, one calibration caption per line", metavar="FILE",
                                   default_text="the shipped captions")
    samples: int = option(64, "calibration samples per tower", parse=positive_int, metavar="N")
    seed: int = option(0, "seed of the calibration / held-out split", parse=non_negative_int)
    force: bool = option(False, "replace an existing bundle (only a bundle or an empty directory)")
    int8_io: bool = option(False, "full-int8 TFLite files take and return int8 tensors")
    gpu: bool = option(True, "skip the fp32 TFLite 'gpu' variant", flag="--no-gpu", negate=True)
    equalize: bool = option(
        True, "quantize the model as it is: no rescaling of outlier channels into the weights first (SmoothQuant-"
        "style, docs/precisions.md)", flag="--no-equalize", negate=True)
    mobile: bool = option(False, "also write MediaPipe Tasks image models (uint8 input, metadata; classifier with "
                                 "--labels)")
    labels: tuple[str, ...] | None = option(
        None, "labels file (one per line): also write image-only classifier models", parse=labels_file,
        metavar="FILE")
    template: str = option(DEFAULT_TEMPLATE, "prompt template for --labels, {} is the label")
    isolate: bool | None = option(
        None, "convert each model file in its own process, so memory is returned after each (auto: for models of "
        "50 M parameters or more, e.g. ViT-B/32)", parse=isolate_option, metavar="auto|yes|no", default_text="auto")
    target_cosine: float | None = option(
        None, "auto precision: minimum cosine to the float model on the calibration samples", parse=float,
        default_text=f"{DEFAULT_TARGET_COSINE} unless --target-top1-drop is given")
    target_top1_drop: float | None = option(
        None, "auto precision: at most this many points of zero-shot top-1 lost on --eval", parse=float,
        metavar="POINTS")
    eval_dir: Path | None = option(
        None, "labelled folder for --target-top1-drop, one subfolder of images per class", flag="--eval",
        metavar="DIR", default_text="the shipped calibration_data/eval")
    # The fixed precisions auto competes against, per format; None = every fixed precision of the format (API only).
    auto_candidates: tuple[str, ...] | None = None
    # Preprocessing overrides; None = the checkpoint's own (docs/preprocessing.md). The bundle's `preprocess` holds
    # the result, `export` what was overridden.
    mean: tuple[float, float, float] | None = option(
        None, "override the checkpoint's normalization mean (0..1 pixels; one number for all channels)",
        metavar="R,G,B")
    std: tuple[float, float, float] | None = option(None, "override the checkpoint's normalization std",
                                                    metavar="R,G,B")
    resample: str | None = option(None, "override the checkpoint's resize filter (Pillow's)", choices=RESAMPLE_NAMES)
    resize_mode: str | None = option(
        None, "override how the image is resized to the model's size before the center crop", choices=RESIZE_MODES)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen: normalize once)
        set_("out", Path(self.out))
        for name in ("formats", "precisions", "towers"):
            set_(name, _names(getattr(self, name)))
        for name in ("calibration", "captions", "eval_dir"):
            if getattr(self, name) is not None:
                set_(name, Path(getattr(self, name)))
        if self.checkpoint is not None:
            set_("checkpoint", str(self.checkpoint))
        if self.labels is not None:
            set_("labels", tuple(self.labels))
        if self.auto_candidates is not None:
            set_("auto_candidates", _names(self.auto_candidates))
        if self.batch == DYNAMIC_BATCH:
            set_("batch", None)
        for name in ("mean", "std"):
            if getattr(self, name) is not None:
                set_(name, _triple(name, getattr(self, name)))
        self._check()

    def _check(self) -> None:
        for fmt in self.formats:
            if fmt not in FORMATS:
                raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
        for tower in self.towers:
            if tower not in TOWERS:
                raise ExportError(f"unknown tower {tower!r}; choose from {', '.join(TOWERS)}")
        if not self.formats or not self.precisions or not self.towers:
            raise ExportError("formats, precisions and towers must each name at least one")
        for name in self.precisions:
            if not any(name in available(fmt) for fmt in self.formats):
                raise ExportError(f"precision {name!r} is not available for {', '.join(self.formats)}; available: "
                                  + "; ".join(f"{f}: {', '.join(available(f))}" for f in self.formats))
        if self.default_precision is not None and self.default_precision not in self.precisions:
            raise ExportError(f"--default-precision {self.default_precision} is not among the precisions exported "
                              f"({', '.join(self.precisions)})")
        for name in self.auto_candidates or ():
            if name not in PRECISION_NAMES or name == "auto":
                raise ExportError(f"auto candidate {name!r} is not a fixed precision")
        if self.batch is not None and (isinstance(self.batch, bool) or not isinstance(self.batch, int)
                                       or self.batch < 1):
            raise ExportError(f"batch must be >= 1 or {DYNAMIC_BATCH!r}, got {self.batch!r}")
        if self.samples < 1:
            raise ExportError(f"samples must be >= 1, got {self.samples}")
        if self.labels is not None and (not self.labels or not all(isinstance(x, str) and x.strip()
                                                                   for x in self.labels)):
            raise ExportError("labels must be a non-empty list of non-empty strings")
        self.target()  # a bad auto target fails here
        self._check_preprocess()
        if self.mobile and ("tflite" not in self.formats or ("image" not in self.towers and self.labels is None)):
            raise ExportError("mobile models are TFLite image models: they need the tflite format and the image "
                              "tower (or --labels)")

    def _check_preprocess(self) -> None:
        if self.std is not None and min(self.std) <= 0:
            raise ExportError(f"std must be 3 numbers > 0, got {list(self.std)}")
        if self.resample is not None and self.resample not in RESAMPLE_NAMES:
            raise ExportError(f"unknown resample {self.resample!r}; choose from {', '.join(RESAMPLE_NAMES)}")
        if self.resize_mode is not None and self.resize_mode not in RESIZE_MODES:
            raise ExportError(f"unknown resize mode {self.resize_mode!r}; choose from {', '.join(RESIZE_MODES)}")

    def preprocess_overrides(self) -> dict[str, Any]:
        """The preprocessing fields given here, to apply over the checkpoint's own."""
        return {name: getattr(self, name) for name in ("mean", "std", "resample", "resize_mode")
                if getattr(self, name) is not None}

    def target(self) -> Target:
        """auto's target: the given cosine and/or top-1 drop, else the default cosine."""
        if self.target_cosine is None and self.target_top1_drop is None:
            return Target(DEFAULT_TARGET_COSINE, None)
        return Target(self.target_cosine, self.target_top1_drop)

    @property
    def has_auto(self) -> bool:
        return "auto" in self.precisions

    def replace(self, **changes: Any) -> ExportSettings:
        return dataclasses.replace(self, **changes)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's record of how the bundle was made (paths as text, tuples as lists)."""
        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, tuple):
                return list(value)
            return value

        out = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {**out, "batch": DYNAMIC_BATCH if self.batch is None else self.batch}
