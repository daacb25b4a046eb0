"""The second renderer's evaluation set, `calibration_data/drawn/`: complete, spread over the sizes it claims, drawn
by its own script, and never calibrated on by `clipedge export`."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipedge.calibration_data.make_drawn_eval import read_sizes
from clipedge.export.demo.data import CLASSES, read_eval_set

DATA = Path(__file__).resolve().parents[2] / "calibration_data"
DRAWN = DATA / "drawn"


def _sizes() -> dict[str, tuple[float, bool, str]]:
    return read_sizes(DRAWN)


def test_every_class_ten_times_and_every_file_described():
    files, labels = read_eval_set(DRAWN)
    assert len(files) == 400 and np.bincount(labels, minlength=len(CLASSES)).tolist() == [10] * 40
    assert {f.relative_to(DRAWN).as_posix() for f in files} == set(_sizes())


def test_sizes_fills_and_backgrounds_span_what_the_docs_say():
    rows = list(_sizes().values())
    sizes = np.array([size for size, _, _ in rows])
    assert sizes.min() >= 0.10 and sizes.max() <= 0.80
    assert sizes.min() < 0.12 and sizes.max() > 0.78  # uniform over the range: both ends are reached
    for low in np.arange(0.1, 0.8, 0.1):  # no empty tenth
        assert ((sizes >= low) & (sizes < low + 0.1)).sum() >= 30, low
    filled = np.mean([f for _, f, _ in rows])
    assert 0.4 <= filled <= 0.6
    assert {b for _, _, b in rows} == {"paper", "solid", "radial", "noise", "photo"}


def test_images_vary_in_pixel_size_and_are_jpeg():
    sizes = set()
    for path in sorted(DRAWN.glob("*/0[0-4].jpg")):
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.width == image.height
            sizes.add(image.width)
    assert min(sizes) >= 128 and max(sizes) <= 224 and len(sizes) > 20


def test_the_script_draws_the_shipped_files():
    """Regenerate a few files with the script: the same pixels up to the JPEG codec of this OpenCV build."""
    pytest.importorskip("cv2")
    spec = importlib.util.spec_from_file_location("make_drawn_eval", DATA / "make_drawn_eval.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    per_class = 10
    for k in (0, 13, 27, 39):  # red circle, blue star, purple triangle, black cross
        colour, shape = CLASSES[k]
        for i in (0, 7):
            jpeg, info = script.draw(0, k * per_class + i, colour, shape)
            name = f"{colour}_{shape}/{i:02d}.jpg"
            assert info["size"] == _sizes()[name][0]
            ours = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), np.float32)
            shipped = np.asarray(Image.open(DRAWN / name).convert("RGB"), np.float32)
            assert ours.shape == shipped.shape and np.abs(ours - shipped).mean() < 2.0, name


def test_export_never_calibrates_on_the_drawn_set():
    from clipedge.export.pipeline.samples import build_samples
    from clipedge.runtime.preprocess_config import PreprocessConfig
    from clipedge.runtime.tokenizer import Tokenizer

    samples = build_samples(224, 77, PreprocessConfig(), Tokenizer.default(), samples=10_000, eval_samples=32)
    used = [Path(f).resolve() for f in samples.calibration_image_files + samples.eval_image_files]
    assert used and not any(DRAWN.resolve() in p.parents for p in used)
    assert any((DATA / "eval").resolve() in p.parents for p in used)  # the rest of calibration_data still is
