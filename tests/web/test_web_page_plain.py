"""`clipedge web` on a bundle without MediaPipe models (README's quick start: no --mobile, no --labels), in headless
Chromium: the page runs the plain image_<p>.tflite and text_<p>.tflite on LiteRT.js, resizes and crops in a canvas,
and classifies zero-shot among the gallery's captions. The site is built as README's browser commands build it
(`clipedge web BUNDLE --out SITE`, the npm packages found in the clone's runtime/web_page/node_modules).

The eval images are 112 px, the model's size, so no resampling: their embeddings must equal the runtime's. The
photos (other sizes) are resized by the browser's canvas ("high" smoothing), not Pillow's bicubic: their cosine to
the runtime is high, not 1. docs/web.md has the measured figures; this test prints them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from clipedge.runtime.clip_runtime import load
from clipedge.runtime.datasets import read_eval_folder
from tests.web.conftest import EVAL_DIR, REPO, serve
from tests.web.test_web_page import (
    FREE_QUERY,
    PHOTOS,
    check_search,
    check_texts,
    drive,
    embeddings,
    image_name,
    report,
)
from tests.web.test_web_site import run_cli


@pytest.mark.parametrize("precision", ["dynamic-int8", "fp32"])
def test_page_without_mediapipe_models_agrees_with_the_python_runtime(precision, browser_tools, plain_bundle,
                                                                       tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # README's commands run in the clone
    site = tmp_path / "site"
    args = ["web", str(plain_bundle), "--out", str(site), "--json"]
    code, out, err = run_cli([*args, "--precision", precision] if precision != "dynamic-int8" else args)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["precision"] == precision and summary["mediapipe_version"] == ""
    data = json.loads((site / "site.json").read_text(encoding="utf-8"))
    assert data["image_runtime"] == "litert" and data["mediapipe"] is None and not (site / "mediapipe").exists()
    eval_set = read_eval_folder(EVAL_DIR)
    with serve(site) as url:
        page = drive(browser_tools, url, [*eval_set.files, *PHOTOS], tmp_path)

    assert [u for u in page["log"]["requests"] if not u.startswith((url, "blob:", "data:"))] == []
    assert page["log"]["pageErrors"] == []
    assert page["cards"] == len(eval_set.files) + len(PHOTOS) and page["info"]["info-precision"] == precision
    by_name = {r["name"]: r for r in page["results"]}
    results = [by_name[image_name(f)] for f in eval_set.files]
    runtime = load(plain_bundle, precision=precision, format="tflite")
    labels = data["classifier"]["labels"]
    assert len(labels) == 40 and data["classifier"]["template"] == "a photo of a {}."
    reference = runtime.classify(eval_set.files, labels, data["classifier"]["template"])
    python_top = np.array([labels.index(r.top[0]) for r in reference])
    page_top = np.array([r["top"][0]["index"] for r in results])
    agreement = float(np.mean(page_top == python_top))
    probability_gap = np.abs(np.array([r["probabilities"] for r in results])
                             - np.array([r.probabilities for r in reference])).max()
    cosines = np.sum(embeddings(results) * runtime.encode_images(eval_set.files), axis=1)
    photos = np.sum(embeddings([by_name[image_name(p)] for p in PHOTOS]) * runtime.encode_images(PHOTOS), axis=1)
    check_search(page, site, runtime)
    check_search(page, site, runtime, FREE_QUERY, "freeSearch")
    text_numbers = check_texts(page, site, runtime)
    # the dropped images are searched too: the closest to the free query is the runtime's
    python_dropped = runtime.encode_images([*eval_set.files, *PHOTOS]) @ runtime.encode_texts(FREE_QUERY)[0]
    names = [image_name(f) for f in [*eval_set.files, *PHOTOS]]
    page_dropped = {r["name"]: r["cosine"] for r in page["freeSearch"]["results"]}
    assert max(page_dropped, key=page_dropped.get) == names[int(np.argmax(python_dropped))]

    sizes = {k: round(v / 1e6, 2) for k, v in summary["bytes_by_part"].items()}
    numbers = {"top-1 agreement": f"{agreement:.1%}", "max |prob diff|": f"{probability_gap:.4f}",
               "112 px eval cosine mean/min": f"{cosines.mean():.6f}/{cosines.min():.6f}",
               f"{len(PHOTOS)} photos (canvas resize) cosine mean/min": f"{photos.mean():.4f}/{photos.min():.4f}",
               "classify median ms": f"{np.median(page['timings']['classify']):.1f}",
               "embed median ms": f"{np.median(page['timings']['embed']):.1f}", "load ms": f"{page['loadMs']:.0f}",
               "ready ms": page["ready"]["ms"], "site MB": f"{summary['bytes'] / 1e6:.2f}", "parts MB": sizes,
               **{k: v for k, v in text_numbers.items() if not k.startswith("_")}}
    report(f"{precision}, no MediaPipe models", numbers, capsys)
    assert agreement >= 0.95 and cosines.mean() >= 0.999, numbers
    assert photos.mean() >= 0.99, numbers
    assert text_numbers["_cosine_min"] >= (0.9999 if precision == "fp32" else 0.999), numbers
    assert text_numbers["_top1"] >= (1.0 if precision == "fp32" else 0.9), numbers
