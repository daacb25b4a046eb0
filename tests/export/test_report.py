"""`clipedge report`: the metric functions on embeddings with known answers, the data readers, and one report of the
small bundle (with a hand-made eval folder and caption pairs) checked against the runtime's public API."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from clipedge.runtime.datasets import list_images, read_captions, read_eval_folder, read_pairs, shipped_data_dir
from clipedge.runtime.errors import InputError
from clipedge.runtime.manifest import Manifest
from clipedge.runtime.metrics import cosine_stats, recall_at_k, top1_accuracy, zero_shot_predictions
from clipedge.runtime.report.analysis import pareto_front
from clipedge.runtime.report.render import PNG_HINT, write_report
from clipedge.runtime.report.run import held_out_data, run_report

PHOTOS = Path(__file__).resolve().parents[2] / "calibration_data" / "photos"
EVAL = {"fish": ["categorization__fish10.webp", "categorization__fish11.webp"],
        "wind_mill": ["categorization__windmill1.webp", "categorization__windmill2.webp"]}
PAIRS = [("categorization__baseball.webp", "a baseball"), ("categorization__bucket.webp", "a bucket"),
         ("categorization__bulb.webp", "a light bulb"), ("categorization__chair.webp", "a chair"),
         ("categorization__chair.webp", "a wooden chair")]


# ---- metrics with known answers ----------------------------------------------------------------------------------
def test_recall_at_k_known_answers():
    images = np.eye(4, dtype=np.float32)
    texts = images.copy()  # every text equals its own image: perfect retrieval
    truth = np.arange(4)
    assert recall_at_k(texts, images, truth) == {"recall@1": 1.0, "recall@5": 1.0}
    texts[0] = [0.6, 0.8, 0, 0]  # text 0 is nearer image 1 than its own image 0: rank 2
    got = recall_at_k(texts, images, truth, ks=(1, 2))
    assert got == {"recall@1": 0.75, "recall@2": 1.0}
    # unnormalized rows give the same answer (cosine, not dot product)
    assert recall_at_k(texts * 7, images * 3, truth, ks=(1, 2)) == got


def test_zero_shot_top1_and_cosine_known_answers():
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    images = np.array([[0.9, 0.1, 0], [0.2, 0.1, 0.9], [0.1, 2.0, 0], [0.5, 0.4, 0]], np.float32)
    predictions = zero_shot_predictions(images, labels)
    assert predictions.tolist() == [0, 2, 1, 0]
    assert top1_accuracy(predictions, np.array([0, 2, 1, 1])) == 0.75
    x = np.random.default_rng(0).normal(size=(5, 8))
    assert cosine_stats(x, 3 * x)["cosine_min"] == pytest.approx(1.0)
    assert cosine_stats(x, -x)["cosine_mean"] == pytest.approx(-1.0)
    assert cosine_stats(x, x)["samples"] == 5


# ---- data readers ---------------------------------------------------------------------------------------------------
def make_eval_folder(root: Path) -> Path:
    for folder, files in EVAL.items():
        (root / folder).mkdir(parents=True)
        for name in files:
            shutil.copy(PHOTOS / name, root / folder / name)
    (root / "empty_class").mkdir()  # no images: not a class
    return root


def make_pairs(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, _ in PAIRS:
        shutil.copy(PHOTOS / name, root / name)
    lines = ["# image\tcaption", ""] + [f"{name}\t{caption}" for name, caption in PAIRS]
    (root / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "pairs.tsv"


def test_read_eval_folder(tmp_path):
    labelled = read_eval_folder(make_eval_folder(tmp_path / "eval"))
    assert labelled.classes == ["fish", "wind mill"]  # folder names, "_" -> " ", sorted; the empty one skipped
    assert labelled.truth.tolist() == [0, 0, 1, 1]
    with pytest.raises(InputError, match="does not exist"):
        read_eval_folder(tmp_path / "missing")
    with pytest.raises(InputError, match="at least 2"):
        read_eval_folder(tmp_path / "eval" / "fish")


def test_read_pairs(tmp_path):
    pairs = read_pairs(make_pairs(tmp_path / "pairs"))
    assert len(pairs.images) == 4 and len(pairs.captions) == 5  # the chair appears twice
    assert pairs.truth.tolist() == [0, 1, 2, 3, 3]
    bad = tmp_path / "bad.tsv"
    bad.write_text("x.webp a caption without a tab\n")
    with pytest.raises(InputError, match="line 1: expected 'image path<TAB>caption'"):
        read_pairs(bad)
    bad.write_text("missing.webp\tcaption\n")
    with pytest.raises(InputError, match="line 1: image .*missing.webp does not exist"):
        read_pairs(bad)


def hand_made_manifest(directory: Path, export: dict) -> Manifest:
    """Only the `export` section matters to held_out_data: no model files needed."""
    return Manifest(directory, {"export": export}, [])


def test_held_out_data_excludes_what_the_manifest_says_export_calibrated_on(tmp_path):
    root = shipped_data_dir()
    photos, captions = list_images(root / "photos"), read_captions(root / "captions.txt")
    calibrated = [photos[0], photos[5], root / "eval" / "fish" / "not-a-photo.webp"]  # the last is not in photos/
    record = {"images_dir": "calibration_data", "captions_file": "calibration_data/captions.txt",
              "calibrated_images": [p.relative_to(root).as_posix() for p in calibrated],
              "held_out_images": [photos[1].relative_to(root).as_posix()],
              "calibrated_captions": captions[:3], "held_out_captions": captions[3:5]}
    held_photos, held_captions, note = held_out_data(hand_made_manifest(tmp_path, {"calibration": record}))
    assert held_photos == [p for p in photos if p not in (photos[0], photos[5])]
    assert held_captions == captions[3:]  # the export's own held-out ones stay: they were never calibrated on
    assert "minus the 2 images and 3 captions" in note

    # an export calibrated on a folder given by absolute path: the same files, named the other way
    absolute = {**record, "images_dir": str(root / "photos"),
                "calibrated_images": [photos[2].relative_to(root / "photos").as_posix()]}
    held_photos, _, _ = held_out_data(hand_made_manifest(tmp_path, {"calibration": absolute}))
    assert held_photos == [p for p in photos if p != photos[2]]


def test_held_out_data_of_a_bundle_without_the_record(tmp_path, caplog):
    """An older clipedge did not record its calibration files: every shipped photo and caption, and it says so."""
    root = shipped_data_dir()
    with caplog.at_level("WARNING", logger="clipedge.runtime.report.run"):
        photos, captions, note = held_out_data(hand_made_manifest(tmp_path, {"samples": 64, "seed": 0}))
    assert photos == list_images(root / "photos") and captions == read_captions(root / "captions.txt")
    assert "does not record" in note
    assert len([r for r in caplog.records if "older clipedge" in r.getMessage()]) == 1


# ---- one report of the small bundle ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report(small_bundle, tmp_path_factory):
    root = tmp_path_factory.mktemp("report-data")
    eval_dir, pairs = make_eval_folder(root / "eval"), make_pairs(root / "pairs")
    out = root / "out"
    result = run_report(small_bundle, out=out, command="clipedge report (test)", eval_dir=eval_dir, pairs=pairs,
                        threads=1, batch=2, repeats=2, warmup=1)
    return result, eval_dir, pairs


@pytest.mark.slow
def test_report_writes_every_artifact(report, small_bundle):
    result, _, _ = report
    manifest = Manifest.read(small_bundle)
    data = json.loads(result.json_path.read_text())
    markdown = result.markdown_path.read_text()
    assert result.png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {r["file"] for r in data["artifacts"]} == {a.file for a in manifest.artifacts}
    for artifact in manifest.artifacts:
        assert f"`{artifact.file}`" in markdown
    for record in data["artifacts"]:
        assert set(record["latency"]) >= {"batch_1", "batch_2"} and record["latency"]["batch_1"]["runs"] == 2
        assert record["memory"]["peak_rss_mb"] > record["memory"]["before_load_rss_mb"] > 0
        assert record["latency_ratio_to_torch"] > 0
    # the GPU text variant ships its token table: counted in its size
    gpu_text = next(r for r in data["artifacts"] if r["tower"] == "text" and r["variant"] == "gpu")
    assert gpu_text["bytes"] > gpu_text["file_bytes"] and gpu_text["companions"]
    machine = data["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["python"]
    assert {"numpy", "ai-edge-litert", "onnxruntime"} <= set(machine["libraries"])
    assert data["command"] == "clipedge report (test)"
    assert data["baseline"]["status"] == "ran"
    assert data["recommendations"]["gpu"]["files"] == ["image_gpu_fp32.tflite", "text_gpu_fp32.tflite"]
    assert "not on a GPU" in markdown
    assert "## Recommended" in markdown and "smallest, within the rule" in markdown
    # the frontier is drawn from the pairs: every pair on it is one of them, and none of them beats another on it
    names = {f"{p['format']} {p['precision']}" for p in data["pairs"] if p["variant"] == "default"}
    assert data["pareto"]["size"] and set(data["pareto"]["size"]) <= names
    assert set(data["pareto"]["latency"]) <= names
    assert "## Pareto frontier" in markdown


def test_pareto_front_keeps_only_the_unbeaten():
    items = [{"n": "a", "mb": 10, "acc": 0.90}, {"n": "b", "mb": 5, "acc": 0.90},  # b beats a (smaller, as good)
             {"n": "c", "mb": 2, "acc": 0.80}, {"n": "d", "mb": 20, "acc": 0.95},
             {"n": "e", "mb": 3, "acc": 0.70}, {"n": "f", "mb": 2, "acc": 0.80}]  # e beaten by c; c, f tie
    front = pareto_front(items, lambda i: i["mb"], lambda i: i["acc"])
    assert [i["n"] for i in front] == ["c", "f", "b", "d"]


@pytest.mark.slow
def test_report_fidelity(report, small_bundle):
    data = json.loads(report[0].json_path.read_text())
    by_file = {r["file"]: r for r in data["artifacts"]}
    for name in ("image_fp32.tflite", "text_fp32.onnx"):  # fp32 against itself
        assert by_file[name]["fidelity_vs_fp32"]["cosine_min"] == pytest.approx(1.0, abs=1e-6)
    for record in data["artifacts"]:
        assert record["fidelity_vs_fp32"]["cosine_min"] > 0.99
        assert record["fidelity_vs_torch"]["cosine_min"] > (0.9999 if record["precision"] == "fp32" else 0.99)
    held = data["data"]["held_out"]
    assert "as its manifest records" in held["what"]  # this export recorded what it calibrated on
    record = Manifest.read(small_bundle).data["export"]["calibration"]
    assert record["images_dir"] == "calibration_data"
    seen = {name for name in record["calibrated_images"] if name.startswith("photos/")}
    assert held["images"] == len(list_images(shipped_data_dir() / "photos")) - len(seen)
    assert by_file["image_fp32.tflite"]["fidelity_vs_fp32"]["samples"] == held["images"] > 0
    assert by_file["text_fp32.tflite"]["fidelity_vs_fp32"]["samples"] == held["captions"] > 0


def test_report_accuracy_matches_the_runtime(report, small_bundle):
    """Zero-shot top-1 and recall@k of the report equal what the runtime's public API gives."""
    from clipedge.runtime import load

    result, eval_dir, pairs_file = report
    data = json.loads(result.json_path.read_text())
    pair = next(p for p in data["pairs"]
                if (p["format"], p["precision"], p["variant"]) == ("tflite", "fp32", "default"))
    runtime = load(small_bundle, precision="fp32", format="tflite")
    labelled = read_eval_folder(eval_dir)
    answers = runtime.classify([str(f) for f in labelled.files], labelled.classes)
    expected = np.mean([a.top[0] == labelled.classes[t] for a, t in zip(answers, labelled.truth, strict=True)])
    assert pair["zero_shot"]["top1"] == pytest.approx(expected)
    assert pair["zero_shot"]["top1_agreement_fp32"] == 1.0

    pairs = read_pairs(pairs_file)
    scores = runtime.encode_texts(pairs.captions) @ runtime.encode_images([str(p) for p in pairs.images]).T
    expected_r1 = np.mean(scores.argmax(1) == pairs.truth)
    assert pair["retrieval"]["recall@1"] == pytest.approx(expected_r1)
    assert pair["retrieval"]["recall@5"] == 1.0  # 4 images: the right one is always in the top 5
    crossed = {(c["format"], c["image"], c["text"]) for c in data["cross_precision"]}
    assert {("tflite", "dynamic-int8", "fp32"), ("tflite", "fp32", "dynamic-int8"),
            ("onnx", "dynamic-int8", "fp32"), ("onnx", "fp32", "dynamic-int8")} <= crossed


def test_report_without_matplotlib(report, tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.lines"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError, as on an install without it
    data = json.loads(report[0].json_path.read_text())
    json_path, md_path, png = write_report(data, tmp_path / "out")
    assert png is None and not (tmp_path / "out" / "report.png").exists()
    assert json_path.is_file() and PNG_HINT in md_path.read_text()


def test_report_cli_bad_input(tmp_path):
    def clipedge(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", *args], capture_output=True, text=True,
                              timeout=120)

    done = clipedge("report", str(tmp_path / "missing"))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "does not exist" in done.stderr
    done = clipedge("report", str(tmp_path), "--batch", "1")
    assert done.returncode == 2 and "must be >= 2" in done.stderr


def test_report_imports_without_tensorflow_torch_or_matplotlib():
    """`clipedge report` runs on a runtime install plus matplotlib: its modules import none of the heavy ones."""
    code = textwrap.dedent("""
        import sys
        sys.modules["tensorflow"] = None  # importing it now raises ImportError
        import clipedge.runtime.report.run, clipedge.runtime.report.render, clipedge.runtime.cli.main
        heavy = [m for m in ("tensorflow", "torch", "transformers", "matplotlib") if sys.modules.get(m)]
        print(heavy)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_report_on_an_install_without_onnxruntime(small_bundle, tmp_path, monkeypatch):
    """A LiteRT-only device: the .onnx models are listed as not measured, everything else is reported."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    result = run_report(small_bundle, out=tmp_path, eval_dir=None, threads=1, batch=2, repeats=1, warmup=0,
                        baseline=False, memory=False)
    data = result.data
    assert {s["file"] for s in data["skipped"]} == {a.file for a in Manifest.read(small_bundle).artifacts
                                                    if a.format == "onnx"}
    assert {r["format"] for r in data["artifacts"]} == {"tflite"}
    assert data["recommendations"]["smallest"]["format"] == "tflite"
    assert "Not measured here" in result.markdown_path.read_text()


# ---- issue #34: where it writes, --precisions / --formats ------------------------------------------------------------
def test_report_names_are_checked_as_export_checks_them():
    """`clipedge report --precisions/--formats` say a bad name in export's words (without importing the exporter)."""
    from clipedge.export.settings import ExportSettings
    from clipedge.runtime.errors import ExportError
    from clipedge.runtime.report.selection import check_names

    for precisions, formats in (("fp32,fp8", "tflite,onnx"), ("int16x8", "onnx"), ("fp32", "tflite,coreml")):
        with pytest.raises(ExportError) as export_error:
            ExportSettings(precisions=precisions, formats=formats)
        with pytest.raises(InputError) as report_error:
            check_names(precisions, formats)
        assert str(report_error.value) == str(export_error.value)


def test_report_cli_names_what_the_bundle_has(small_bundle):
    done = subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", "report", str(small_bundle), "--precisions",
                           "int4"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "has no int4 models; its precisions: fp32, dynamic-int8" in done.stderr


@pytest.mark.slow
def test_report_of_some_precisions_beside_the_bundle(small_bundle, tmp_path, monkeypatch):
    """Default output: ./BUNDLENAME-report, the bundle untouched; --precisions dynamic-int8 --formats tflite measures
    those and their fp32 reference, and says so."""
    before = sorted(p.relative_to(small_bundle) for p in small_bundle.rglob("*"))
    monkeypatch.chdir(tmp_path)
    result = run_report(small_bundle, eval_dir=None, threads=1, batch=2, repeats=3, warmup=0, baseline=False,
                        memory=False, precisions="dynamic-int8", formats="tflite")
    assert result.markdown_path.parent == tmp_path / f"{small_bundle.name}-report"
    assert sorted(p.relative_to(small_bundle) for p in small_bundle.rglob("*")) == before
    data = result.data
    assert {(r["format"], r["precision"], r["variant"]) for r in data["artifacts"]} == {
        ("tflite", "dynamic-int8", "default"), ("tflite", "fp32", "default")}
    assert data["selection"]["reference_files"] == ["image_fp32.tflite", "text_fp32.tflite"]
    assert data["recommendations"]["smallest"]["precision"] == "dynamic-int8"
    assert data["recommendations"]["fastest"]["precision"] == "dynamic-int8"
    batch_1 = data["artifacts"][0]["latency"]["batch_1"]
    assert batch_1["median_low_ms"] <= batch_1["median_ms"] <= batch_1["median_high_ms"]
    markdown = result.markdown_path.read_text()
    assert f"Bundle `{small_bundle.resolve()}`" in markdown and Path(data["bundle"]).is_absolute()
    assert "fp32 measured as the reference only" in markdown
    assert "its baseline did not run (disabled (--no-baseline))" in markdown
    assert "ratios to PyTorch (measured in the same run)" not in markdown
