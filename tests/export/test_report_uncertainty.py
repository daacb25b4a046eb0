"""`clipedge report` says how sure each accuracy is and draws labels that can be read (issue #20): Wilson intervals,
frontiers that do not crown one-image differences, and point labels placed without overlaps where points cluster."""

from __future__ import annotations

import itertools

import pytest

from clipedge.runtime.report.analysis import pareto, pareto_front, top1_interval, wilson_interval
from clipedge.runtime.report.render import _pareto, _pct_interval


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)  # never the empty interval [0, 0]
    assert wilson_interval(106, 120) == pytest.approx((0.81367, 0.92922), abs=1e-5)
    low, high = wilson_interval(60, 120)
    assert low == pytest.approx(1 - high) and high - low < 0.18
    assert top1_interval({"top1": 106 / 120, "images": 120}) == pytest.approx(wilson_interval(106, 120))
    assert _pct_interval({"top1": 106 / 120, "images": 120}) == "88.3% (81.4–92.9)"


def pair(precision: str, mb: float, correct: int, images: int = 120, ms: float = 10.0) -> dict:
    top1 = correct / images
    return {"format": "tflite", "precision": precision, "variant": "default", "files": ["i", "t"],
            "bytes": int(mb * 1e6), "latency_batch_1_ms": {"image": ms, "text": ms},
            "min_cosine_p5_vs_fp32": 0.99,
            "zero_shot": {"top1": top1, "images": images, "top1_interval": list(wilson_interval(correct, images))}}


def test_a_one_image_difference_is_no_win():
    fp16, int8 = pair("fp16", 20, 106), pair("int8", 10, 105)  # 88.3% vs 87.5% on 120 images
    interval = lambda p: top1_interval(p["zero_shot"])  # noqa: E731
    quality = lambda p: p["zero_shot"]["top1"]  # noqa: E731
    assert pareto_front([fp16, int8], lambda p: p["bytes"], quality) == [int8, fp16]  # exact: both "win"
    assert pareto_front([fp16, int8], lambda p: p["bytes"], quality, interval) == [int8]
    int4 = pair("int4", 5, 60)  # 50%: really worse, so it keeps its place as the smallest
    assert pareto_front([fp16, int8, int4], lambda p: p["bytes"], quality, interval) == [int4, int8]
    data = {"pairs": [fp16, int8, int4]}
    data["pareto"] = pareto(data)
    assert data["pareto"]["size"] == ["tflite int4", "tflite int8"]
    text = "\n".join(_pareto(data))
    assert "intervals overlap are ties" in text and "no win" in text and "87.5% (80.4–92.3)" in text


def clustered_report() -> dict:
    """Eight image+text pairs and sixteen models crowded into a few pixels, as fp32/fp16/gpu and the int8 family
    are in a real bundle."""
    pairs, artifacts = [], []
    for i, (fmt, precision) in enumerate(itertools.product(("tflite", "onnx"), ("fp32", "fp16", "dynamic-int8",
                                                                                 "int8"))):
        p = pair(precision, 10 + 0.05 * i, 100 + i % 2, ms=5 + 0.01 * i)
        p["format"] = fmt
        pairs.append(p)
        for tower in ("image", "text"):
            artifacts.append({"file": f"{tower}_{precision}.{fmt}", "tower": tower, "format": fmt,
                              "precision": precision, "variant": "default", "bytes": int(5e6 + 1e4 * i),
                              "latency": {"batch_1": {"median_ms": 5 + 0.01 * i}}, "flags": []})
    gpu = dict(pairs[0], variant="gpu")
    data = {"model": {"name": "clustered"}, "bundle": "b", "machine": {"cpu": "test cpu"},
            "settings": {"threads": 1}, "pairs": [*pairs, gpu], "artifacts": artifacts,
            "baseline": {"status": "skipped"}}
    data["pareto"] = pareto(data)
    return data


def test_labels_do_not_overlap_where_points_cluster():
    pytest.importorskip("matplotlib")
    from clipedge.runtime.report.labels import label_text_boxes
    from clipedge.runtime.report.render import report_figure

    fig, annotations = report_figure(clustered_report())
    assert len(annotations) == 9 + 9 + 16
    boxes = label_text_boxes(fig, annotations)
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        overlap_x = min(a[2], b[2]) - max(a[0], b[0])
        overlap_y = min(a[3], b[3]) - max(a[1], b[1])
        assert overlap_x <= 0 or overlap_y <= 0, (annotations[i].get_text(), annotations[j].get_text(), a, b)
