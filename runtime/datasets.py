"""Reading the image folders and caption files clipedge measures on, one reader per kind, shared by export (calibration
and held-out samples), `clipedge report` (eval folders, caption pairs) and the CLI (directories of images).

Only paths and labels are read here; pixels come from `clipedge.runtime.preprocess`, so every reader feeds models
exactly what the device feeds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from clipedge.runtime.errors import InputError
from clipedge.runtime.heif import optional_suffixes

__all__ = [
    "IMAGE_SUFFIXES",
    "LabelledImages",
    "Pairs",
    "list_images",
    "read_captions",
    "read_eval_folder",
    "read_pairs",
    "image_suffixes",
    "shipped_data_dir",
    "shipped_calibration_images",
    "SHIPPED_EVAL_ONLY",
]

# What Pillow opens on every platform clipedge runs on; anything else in a folder (READMEs, .DS_Store) is skipped.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def image_suffixes() -> frozenset[str]:
    """IMAGE_SUFFIXES plus what optional decoders read on this install (clipedge.runtime.heif): .heic/.heif/.hif
    with pillow-heif, .avif where Pillow has libavif. Asked each time, not frozen at import: cheap (no import)."""
    return IMAGE_SUFFIXES | optional_suffixes()


def list_images(directory: str | Path) -> list[Path]:
    """Image files under `directory`, recursively, sorted: a stable order, so a seeded split picks the same files
    on every machine."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"image directory {directory} does not exist")
    suffixes = image_suffixes()
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def read_captions(path: str | Path) -> list[str]:
    """One caption per line; blank lines and `#` comments are skipped so a captions file can say where it came
    from."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"captions file {path} does not exist")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    captions = [line for line in lines if line and not line.startswith("#")]
    if not captions:
        raise InputError(f"captions file {path} has no captions (one per line)")
    return captions


# calibration_data/drawn/ is the demo CLIP's second-renderer evaluation set: never calibrated on, so that a quantized
# demo's accuracy on it is measured on images its export never saw.
SHIPPED_EVAL_ONLY = "drawn"


def shipped_calibration_images(root: Path) -> list[Path]:
    """The shipped images export may calibrate on: everything under calibration_data/ but SHIPPED_EVAL_ONLY."""
    return [p for p in list_images(root) if p.relative_to(root).parts[0] != SHIPPED_EVAL_ONLY]


def shipped_data_dir() -> Path | None:
    """The calibration_data/ shipped as the package `clipedge.calibration_data`, or None on an install without it.
    Found through importlib.resources, not export's samples module, so the runtime side never imports export."""
    try:
        root = Path(str(resources.files("clipedge.calibration_data")))
    except ModuleNotFoundError:
        return None
    return root if root.is_dir() else None


@dataclass(frozen=True)
class LabelledImages:
    """An eval folder: `root/<label_with_underscores>/*.jpg`; class k's label is its folder name, `_` -> space."""

    root: Path
    files: list[Path]
    truth: np.ndarray  # class index per file
    classes: list[str]


@dataclass(frozen=True)
class Pairs:
    """Image-caption pairs from a TSV: each caption's own image is `images[truth[i]]` (images deduplicated)."""

    file: Path
    images: list[Path]
    captions: list[str]
    truth: np.ndarray


def read_eval_folder(root: str | Path) -> LabelledImages:
    """Folder names are the labels, so a user labels images by moving them; empty and hidden folders are not
    classes (a half-made folder must not become a class nothing can be predicted right in)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"eval folder {root} does not exist (expected one subfolder of images per class)")
    classes, files, truth = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = list_images(folder)
        if not found:
            continue
        truth += [len(classes)] * len(found)
        files += found
        classes.append(folder.name.replace("_", " "))
    if len(classes) < 2:
        raise InputError(f"eval folder {root} has {len(classes)} class subfolder(s) with images; zero-shot top-1 "
                         "needs at least 2 (one subfolder per class, named after the label, e.g. red_circle/)")
    return LabelledImages(root, files, np.asarray(truth), classes)


def read_pairs(file: str | Path) -> Pairs:
    """TSV lines `image path<TAB>caption`; relative paths are relative to the TSV (so the folder can move); blank and
    # lines are skipped. An image listed twice is one image with two captions, as in COCO-style captions."""
    file = Path(file)
    if not file.is_file():
        raise InputError(f"pairs file {file} does not exist (TSV: image path, tab, caption per line)")
    images: dict[Path, int] = {}
    captions, truth = [], []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        path_text, tab, caption = line.partition("\t")
        if not tab or not caption.strip() or not path_text.strip():
            raise InputError(f"{file} line {number}: expected 'image path<TAB>caption', got {line!r}")
        path = Path(path_text.strip())
        path = path if path.is_absolute() else file.parent / path
        if not path.is_file():
            raise InputError(f"{file} line {number}: image {path} does not exist")
        truth.append(images.setdefault(path, len(images)))
        captions.append(caption.strip())
    if len(images) < 2:
        raise InputError(f"{file} has {len(images)} distinct image(s); retrieval needs at least 2")
    return Pairs(file, list(images), captions, np.asarray(truth))
