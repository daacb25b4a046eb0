"""The `clipedge web` site in a real browser: Debian's Chromium, headless, driven through the page's UI by
tests/web/drive_page.mjs (playwright-core, the system browser, nothing downloaded). The page classifies the 120
shipped eval images with MediaPipe's ImageClassifier and embeds them with its ImageEmbedder, both in MediaPipe's
WebAssembly runtime; the answers must agree with clipedge's Python runtime at the same precision. It embeds free
texts with the bundle's text model on LiteRT.js (tokenized by the JavaScript port with the bundle's tokenizer
files): the embeddings must equal the runtime's, and so must its ranking of the gallery for them. A bundle without
MediaPipe models (README's quick start) runs its plain image model on LiteRT.js, resized and cropped in a canvas:
tests/web/test_web_page_plain.py.

The eval images are 112 px, the model's size, so neither side resizes them. A quarter of the shipped photos (other
sizes and aspect ratios, WebP) checks the page's region of interest too: their embeddings must match MediaPipe's
Python API given `clip_crop`, the same window computed in Python. docs/web.md has the measured figures; this test
prints them. Set CLIPEDGE_UPDATE_SCREENSHOT=1 to copy the run's screenshot to docs/web-demo.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipedge.runtime.clip_runtime import load
from clipedge.runtime.datasets import list_images, read_eval_folder
from clipedge.runtime.scoring import l2_normalize
from clipedge.runtime.web import build_site
from tests.web.conftest import EVAL_DIR, MEDIAPIPE_NPM, NODE_MODULES, REPO, serve

DRIVER = Path(__file__).with_name("drive_page.mjs")
SCREENSHOT = REPO / "docs" / "web-demo.png"
PHOTOS = list_images(REPO / "calibration_data" / "photos")[::4]
QUERY = "a photo of a red circle."
FREE_QUERY = "a dog"  # no label, caption or --queries text: embedded in the page, as anything typed
# Texts the page has never seen, for its text model against the runtime's: plain, odd case and punctuation,
# accents and HTML entities (the tokenizer's cleaning), emoji, and one over the 77-token context (truncated).
FREE_TEXTS = ["a dog", "a red star on a white background", "A BLUE TRIANGLE!!", "two green squares, side by side",
              "caf\u00e9 cr\u00e8me &amp; a yellow circle", "\U0001f436 \U0001f534", "nothing at all", "",
              "a photo of a red circle.", "black cross", " ".join(["a very long caption about a purple star"] * 12)]
SHOWCASE = ("blue_star/00.jpg", "red_circle/01.jpg", "yellow_triangle/02.jpg")
DRIVER_TIMEOUT_S = 150


def image_name(path: Path) -> str:
    """Unique in the page: the eval files are 00.jpg ... in every class folder."""
    return f"{path.parent.name}-{path.name}"


def drive(tools, url: str, files: list[Path], tmp_path: Path) -> dict:
    config = {
        "url": url, "chromium": str(tools.chromium), "nodeModules": str(NODE_MODULES),
        "images": [{"name": image_name(f), "path": str(f)} for f in files],
        "showcase": [{"name": image_name(EVAL_DIR / s), "path": str(EVAL_DIR / s)} for s in SHOWCASE],
        "query": QUERY, "freeQuery": FREE_QUERY, "texts": FREE_TEXTS,
        "screenshot": str(tmp_path / "page.png"), "out": str(tmp_path / "page.json"),
        "timeoutMs": DRIVER_TIMEOUT_S * 1000,
    }
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    done = subprocess.run([str(tools.node), str(DRIVER), str(tmp_path / "config.json")], capture_output=True,
                          text=True, timeout=DRIVER_TIMEOUT_S + 30)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return json.loads((tmp_path / "page.json").read_text(encoding="utf-8"))


def report(precision: str, numbers: dict, capsys) -> None:
    """The closing note's figures, on the terminal (pytest -s not needed)."""
    text = ", ".join(f"{k} {v}" for k, v in numbers.items())
    with capsys.disabled():
        print(f"\nclipedge web in headless Chromium, {precision}: {text}", file=sys.stderr)


def embeddings(results: list[dict]) -> np.ndarray:
    out = np.array([r["embedding"] for r in results], dtype=np.float32)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)  # l2Normalize was on
    return out


def check_search(page: dict, site: Path, runtime, query: str = QUERY, key: str = "search") -> None:
    """The search box ranks the gallery as the runtime does for the same text (embedded in the page)."""
    data = json.loads((site / "site.json").read_text(encoding="utf-8"))
    python_scores = runtime.encode_images([site / g["file"] for g in data["gallery"]]) @ runtime.encode_texts(query)[0]
    page_scores = {g["file"]: g["cosine"] for g in page[key]["ranking"]}
    assert page[key]["text"] == query
    assert page[key]["ranking"][0]["file"] == data["gallery"][int(np.argmax(python_scores))]["file"]
    assert max(abs(page_scores[g["file"]] - s) for g, s in zip(data["gallery"], python_scores, strict=True)) < 0.01


def check_texts(page: dict, site: Path, runtime) -> dict[str, str]:
    """The page's embeddings of FREE_TEXTS against the runtime's, and its ranking of the gallery for each text (its
    own gallery embeddings) against the runtime's (the runtime's image and text embeddings). The figures."""
    data = json.loads((site / "site.json").read_text(encoding="utf-8"))
    page_texts = np.array(page["texts"], dtype=np.float64)
    python_texts = runtime.encode_texts(FREE_TEXTS).astype(np.float64)
    cosines = np.sum(page_texts * python_texts, axis=1)
    by_file = {g["file"]: g["embedding"] for g in page["gallery"]}
    page_gallery = np.array([by_file[g["file"]] for g in data["gallery"]], dtype=np.float64)
    python_gallery = runtime.encode_images([site / g["file"] for g in data["gallery"]]).astype(np.float64)
    page_rank, python_rank = page_texts @ page_gallery.T, python_texts @ python_gallery.T
    top1 = np.mean(np.argmax(page_rank, axis=1) == np.argmax(python_rank, axis=1))
    top5 = np.mean([len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) / 5
                    for a, b in zip(page_rank, python_rank, strict=True)])
    ms = np.array(page["textTimings"])
    return {"text cosine mean/min": f"{cosines.mean():.6f}/{cosines.min():.6f}",
            "gallery top-1 agreement": f"{top1:.1%}", "top-5 overlap": f"{top5:.1%}",
            "max |score diff|": f"{np.abs(page_rank - python_rank).max():.4f}",
            "text median ms": f"{np.median(ms):.1f}", "text max ms": f"{ms.max():.1f}",
            "_cosine_min": cosines.min(), "_top1": top1}


def photo_cosines(page_embeds: np.ndarray, bundle: Path, precision: str, runtime) -> tuple[np.ndarray, np.ndarray]:
    """(cosine to MediaPipe's Python API with clip_crop, cosine to the runtime) per photo."""
    from clipedge.export.formats.tflite.mediapipe_metadata import mediapipe_embed
    from clipedge.runtime.manifest import Manifest
    from clipedge.runtime.preprocess import load_image

    manifest = Manifest.read(bundle)
    model = manifest.verified_path(manifest.find("image", "tflite", precision, "mobile"))
    python_mediapipe = l2_normalize(mediapipe_embed(model, [load_image(p) for p in PHOTOS], "clip-crop"))
    return np.sum(page_embeds * python_mediapipe, axis=1), np.sum(page_embeds * runtime.encode_images(PHOTOS), axis=1)


@pytest.mark.parametrize("precision", ["dynamic-int8", "fp32"])
def test_page_agrees_with_the_python_runtime(precision, browser_tools, web_bundle, tmp_path, capsys):
    site = build_site(web_bundle, tmp_path / "site", precision=precision, mediapipe=MEDIAPIPE_NPM)
    eval_set = read_eval_folder(EVAL_DIR)
    with serve(site.path) as url:
        page = drive(browser_tools, url, [*eval_set.files, *PHOTOS], tmp_path)

    # Only the site itself was fetched: nothing from outside the loopback server (no CDN, no fonts).
    assert [u for u in page["log"]["requests"] if not u.startswith((url, "blob:", "data:"))] == []
    assert page["log"]["pageErrors"] == []
    assert page["cards"] == len(eval_set.files) + len(PHOTOS) and page["info"]["info-precision"] == precision
    assert page["textMsShown"].endswith(f"({len(page['textTimings'])} texts)")  # the page shows its text latency

    by_name = {r["name"]: r for r in page["results"]}
    results = [by_name[image_name(f)] for f in eval_set.files]
    runtime = load(web_bundle, precision=precision, format="tflite")
    labels = json.loads((site.path / "site.json").read_text(encoding="utf-8"))["classifier"]["labels"]
    reference = runtime.classify(eval_set.files, labels)  # the bundle's classifier_<precision>.tflite
    python_top = np.array([labels.index(r.top[0]) for r in reference])
    page_top = np.array([r["top"][0]["index"] for r in results])
    assert [r["top"][0]["label"] for r in results] == [labels[i] for i in page_top]  # names from the model file
    agreement = float(np.mean(page_top == python_top))
    probability_gap = np.abs(np.array([r["probabilities"] for r in results])
                             - np.array([r.probabilities for r in reference])).max()
    cosines = np.sum(embeddings(results) * runtime.encode_images(eval_set.files), axis=1)
    check_search(page, site.path, runtime)
    check_search(page, site.path, runtime, FREE_QUERY, "freeSearch")
    text_numbers = check_texts(page, site.path, runtime)
    photo_mediapipe, photo_runtime = photo_cosines(
        embeddings([by_name[image_name(p)] for p in PHOTOS]), web_bundle, precision, runtime)

    truth = np.array([labels.index(eval_set.classes[t]) for t in eval_set.truth])
    classify_ms, embed_ms = np.median(page["timings"]["classify"]), np.median(page["timings"]["embed"])
    numbers = {"top-1 agreement": f"{agreement:.1%} ({int(np.sum(page_top == python_top))}/{len(results)})",
               "page top-1 vs truth": f"{np.mean(page_top == truth):.1%}",
               "max |prob diff|": f"{probability_gap:.4f}",
               "cosine mean/min": f"{cosines.mean():.6f}/{cosines.min():.6f}",
               f"{len(PHOTOS)} photos cosine to Python MediaPipe mean/min":
                   f"{photo_mediapipe.mean():.6f}/{photo_mediapipe.min():.6f}",
               "to the runtime": f"{photo_runtime.mean():.4f}/{photo_runtime.min():.4f}",
               "classify median ms": f"{classify_ms:.1f}", "embed median ms": f"{embed_ms:.1f}",
               "load ms": f"{page['loadMs']:.0f}", "ready ms": page["ready"]["ms"],
               "images wall ms": page["classifyWallMs"], "site MB": f"{site.bytes / 1e6:.2f}",
               "site parts MB": {k: round(v / 1e6, 2) for k, v in site.sizes.items()},
               **{k: v for k, v in text_numbers.items() if not k.startswith("_")}}
    report(precision, numbers, capsys)
    assert text_numbers["_cosine_min"] >= (0.9999 if precision == "fp32" else 0.999), numbers
    assert text_numbers["_top1"] >= (1.0 if precision == "fp32" else 0.9), numbers
    assert agreement >= 0.95, numbers
    assert cosines.mean() >= 0.99, numbers
    assert photo_mediapipe.mean() >= 0.999, numbers  # the page's region of interest is the Python one
    assert 0 < classify_ms < 1000 and 0 < embed_ms < 1000, numbers

    png = (tmp_path / "page.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    if precision == "dynamic-int8" and os.environ.get("CLIPEDGE_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(tmp_path / "page.png", SCREENSHOT)
