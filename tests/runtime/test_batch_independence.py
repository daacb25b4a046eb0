"""The same image (and text) gets the same embedding alone or in any batch, in every format and precision (issue #33
case 11): ONNX Runtime's dynamic quantization takes one activation range per call over the whole batch, so the
runtime sends those files one row per call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipedge.runtime.clip_runtime import load

EVAL = Path(__file__).resolve().parents[2] / "calibration_data" / "eval"
IMAGES = sorted(str(p) for p in EVAL.glob("*/00.jpg"))[:8]
TEXTS = ["a dog", "a red star on a blue background, drawn with a thick pen on grey paper"] * 4


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
@pytest.mark.parametrize("precision", ["fp32", "dynamic-int8"])
def test_a_row_gets_the_same_embedding_alone_or_in_a_batch(small_bundle, fmt, precision):
    model = load(small_bundle, precision=precision, format=fmt)
    for encode, items in ((model.encode_images, IMAGES), (model.encode_texts, TEXTS)):
        batch = encode(items)
        alone = np.concatenate([encode(items[i : i + 1]) for i in (0, 1, 5)])
        np.testing.assert_array_equal(alone, batch[[0, 1, 5]], err_msg=f"{fmt} {precision} {encode.__name__}")
    described = model.describe()
    assert all(tower["batch_independent"] for tower in described.values())
    per_call = described["image"]["rows_per_call"]
    assert per_call == (1 if (fmt, precision) == ("onnx", "dynamic-int8") else model.batch_size), described


def test_the_onnx_dynamic_file_fed_as_a_batch_would_differ(small_bundle):
    """The reason for one row per call, measured: the same file given the whole batch in one call changes row 0."""
    model = load(small_bundle, precision="dynamic-int8", format="onnx")
    runner = model.runner("image")
    pixels = model.preprocess(IMAGES, layout="NHWC")
    together = runner.run_feeds(runner._feeds(pixels))  # noqa: SLF001 (around the one-row rule, on purpose)
    alone = runner.run(pixels[:1])
    assert np.abs(together[:1] - alone).max() > 1e-4
