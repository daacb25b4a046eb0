"""`clipedge web`'s Python side, no browser: the site's files, its search texts' embeddings against the runtime,
the choices it refuses with one-line errors, and that a failure leaves nothing on disk. MediaPipe's and LiteRT.js's
npm packages are replaced by stand-ins with the same file names (the browser tests use the real ones)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipedge.runtime.clip_runtime import load
from clipedge.runtime.manifest import Manifest, sha256_file
from clipedge.runtime.web import MEDIAPIPE_FILES, PAGE_FILES, build_site, find_litert, find_mediapipe
from clipedge.runtime.web_npm import LITERT_FILES
from tests.web.conftest import EVAL_DIR, demo_labels, fake_litert, fake_mediapipe


@pytest.fixture
def mediapipe_dir(tmp_path_factory) -> Path:
    return fake_mediapipe(tmp_path_factory.mktemp("npm"))


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """In a child process, as a user runs it: the command must not import TensorFlow (a runtime command)."""
    code = ("import sys; from clipedge.runtime.cli.main import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'clipedge web imported tensorflow'; sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.slow
def test_site_has_the_models_page_and_text_embeddings(web_bundle, mediapipe_dir, tmp_path):
    site = tmp_path / "site"
    code, out, err = run_cli(["web", str(web_bundle), "--out", str(site), "--mediapipe", str(mediapipe_dir),
                              "--json"])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["precision"] == "dynamic-int8"  # the default: docs/mobile.md's pick for apps
    assert summary["bytes"] == sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # the temporary directory was renamed, not left
    data = json.loads((site / "site.json").read_text(encoding="utf-8"))
    manifest = Manifest.read(web_bundle)
    for key, file in (("classifier", "classifier_mobile_dynamic-int8.tflite"),
                      ("embedder", "image_mobile_dynamic-int8.tflite")):
        assert data[key]["file"] == f"models/{file}"
        assert sha256_file(site / data[key]["file"]) == next(a.sha256 for a in manifest.artifacts if a.file == file)
    assert data["classifier"]["labels"] == demo_labels() and data["image_size"] == 112
    assert all((site / name).is_file() for name in (*PAGE_FILES, *MEDIAPIPE_FILES.values(), "mediapipe/NOTICE.txt"))
    assert "Apache License 2.0" in (site / "mediapipe" / "NOTICE.txt").read_text(encoding="utf-8")
    # the text model and LiteRT.js, for the page's free text; the bundle's own tokenizer files, byte for byte
    assert data["image_runtime"] == "mediapipe" and data["text_model"]["file"] == "models/text_dynamic-int8.tflite"
    assert sha256_file(site / data["text_model"]["file"]) == manifest.find("text", "tflite", "dynamic-int8").sha256
    assert all((site / name).is_file() for name in (*LITERT_FILES.values(), "litert/wasm_utils.js",
                                                    "litert/NOTICE.txt", "clip_tokenizer.js",
                                                    "clip_tokenizer_tables.js"))
    assert data["tokenizer"] == {"dir": "tokenizer/", "files": ["bpe_simple_vocab_16e6.txt.gz",
                                                                "LICENSE-openai-clip.txt"], "context_length": 77}
    for name in manifest.data["tokenizer"]["files"]:
        assert (site / name).read_bytes() == (web_bundle / name).read_bytes()
    assert "'./clip_tokenizer_tables.js'" in (site / "clip_tokenizer.js").read_text(encoding="utf-8")
    # the default gallery: one shipped eval image per class, captioned with its class
    assert len(data["gallery"]) == 40
    blue_star = next(g for g in data["gallery"] if g["caption"] == "blue star")
    assert blue_star["source"] == "blue_star/00.jpg"
    assert (site / blue_star["file"]).read_bytes() == (EVAL_DIR / "blue_star" / "00.jpg").read_bytes()
    # search texts: the label prompts, then the captions; rows = the runtime's text embeddings at the precision
    texts = [t["text"] for t in data["texts"]["items"]]
    assert texts[:2] == ["a photo of a red circle.", "a photo of a red square."] and "blue star" in texts
    assert len(texts) == len(set(texts)) == 80
    rows = np.fromfile(site / "text_embeds.f32", dtype="<f4").reshape(len(texts), data["embed_dim"])
    reference = load(web_bundle, precision="dynamic-int8", format="tflite").encode_texts(texts)
    np.testing.assert_allclose(rows, reference, atol=1e-6)


@pytest.mark.slow
def test_gallery_tsv_and_extra_queries(web_bundle, mediapipe_dir, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(f"{EVAL_DIR / 'red_circle' / '00.jpg'}\ta red dot\n{EVAL_DIR / 'blue_star' / '01.jpg'}\t"
                     "a blue star on a gradient\n", encoding="utf-8")
    queries = tmp_path / "queries.txt"
    queries.write_text("# comment\nsomething red\na red dot\n", encoding="utf-8")
    site = tmp_path / "site"
    code, out, err = run_cli(["web", str(web_bundle), "--out", str(site), "--precision", "fp32", "--mediapipe",
                              str(mediapipe_dir.parents[1]), "--gallery", str(pairs), "--queries", str(queries)],
                             )
    assert code == 0, err
    assert "python3 -m http.server" in out
    data = json.loads((site / "site.json").read_text(encoding="utf-8"))
    assert data["precision"] == "fp32" and data["classifier"]["file"] == "models/classifier_mobile_fp32.tflite"
    assert [g["caption"] for g in data["gallery"]] == ["a red dot", "a blue star on a gradient"]
    kinds = {t["text"]: t["kind"] for t in data["texts"]["items"]}
    assert kinds["a red dot"] == "caption" and kinds["something red"] == "query" and len(kinds) == 40 + 3


@pytest.mark.parametrize("case, message", [
    ("no-bundle", "bundle directory .* does not exist"),
    ("no-text", "has no TFLite text model at precision 'dynamic-int8': the page embeds texts with it"),
    ("plain-no-text", "has no precision with both a TFLite image and a TFLite text model"),
    ("no-litert", "needs LiteRT.js, the npm package @litertjs/core .*found none in --mediapipe "),
    ("unknown-precision", "unknown precision 'int3'; choose from fp32, "),
    ("absent-precision", "no mobile classifier and image model at precision 'int8'; it has them at: fp32, "
                         "dynamic-int8"),
    ("out-exists", "already exists: give a new directory"),
    ("no-mediapipe", "--mediapipe .*: no @mediapipe/tasks-vision package there"),
    ("bad-gallery", "gallery images browsers cannot show"),
])
@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(case, message, web_bundle, mediapipe_dir, tmp_path):
    bundle, out, extra = str(web_bundle), tmp_path / "site", ["--mediapipe", str(mediapipe_dir)]
    if case == "no-bundle":
        bundle = str(tmp_path / "nothing")
    elif case in ("no-text", "plain-no-text"):
        data = json.loads((web_bundle / "manifest.json").read_text(encoding="utf-8"))
        data["artifacts"] = [a for a in data["artifacts"] if a.get("tower") != "text"
                             and (case == "no-text" or a.get("variant") != "mobile")]
        (tmp_path / "edited").mkdir()
        (tmp_path / "edited" / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
        bundle = str(tmp_path / "edited")
    elif case == "no-litert":
        shutil.rmtree(mediapipe_dir.parents[1] / "@litertjs")
    elif case == "unknown-precision":
        extra += ["--precision", "int3"]
    elif case == "absent-precision":
        extra += ["--precision", "int8"]
    elif case == "out-exists":
        out.mkdir()
    elif case == "no-mediapipe":
        extra = ["--mediapipe", str(tmp_path)]
    elif case == "bad-gallery":
        (tmp_path / "gallery").mkdir()
        (tmp_path / "gallery" / "scan.tif").write_bytes(b"II*\x00")
        extra += ["--gallery", str(tmp_path / "gallery")]
    code, _, err = run_cli(["web", bundle, "--out", str(out), *extra])
    assert code == 2
    assert err.startswith("clipedge: error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not out.exists() or case == "out-exists"


@pytest.mark.slow
def test_failure_leaves_nothing_half_written(web_bundle, mediapipe_dir, tmp_path, monkeypatch):
    import clipedge.runtime.web as web

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(web, "search_texts", broken)  # after the models, MediaPipe and gallery were copied
    with pytest.raises(OSError, match="disk full"):
        build_site(web_bundle, tmp_path / "site", mediapipe=mediapipe_dir)
    assert list(tmp_path.iterdir()) == []


def test_mediapipe_is_found_and_its_version_checked(mediapipe_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(mediapipe_dir.parents[2])  # a folder where `npm install` was run
    assert find_mediapipe() == (mediapipe_dir, "1.1.0")
    other = fake_mediapipe(tmp_path / "old", version="0.10.14")
    with caplog.at_level(logging.WARNING, logger="clipedge.runtime.web"):
        assert find_mediapipe(other) == (other, "0.10.14")
    assert "the page was tested with 1.1.0" in caplog.text
    (other / "wasm" / "vision_wasm_internal.wasm").unlink()
    with pytest.raises(Exception, match="lacks wasm/vision_wasm_internal.wasm"):
        find_mediapipe(other)


def test_litert_is_found_beside_mediapipe(tmp_path, monkeypatch, caplog):
    mediapipe = fake_mediapipe(tmp_path / "a")
    core = mediapipe.parents[1] / "@litertjs" / "core"
    for given in (mediapipe, mediapipe.parents[1], tmp_path / "a"):  # what --mediapipe accepts
        assert [(p.name, p.directory, p.version) for p in find_litert(given)] == [
            ("@litertjs/core", core, "2.5.3"), ("@litertjs/wasm-utils", core.parent / "wasm-utils", "2.5.3")]
    monkeypatch.chdir(tmp_path / "a")
    assert find_litert()[0].directory == core
    other = fake_litert(tmp_path / "old", version="2.0.0")
    with caplog.at_level(logging.WARNING, logger="clipedge.runtime.web"):
        assert find_litert(other.parents[1])[0].version == "2.0.0"
    assert "the page was tested with 2.5.3" in caplog.text
    (other / "wasm" / "litert_wasm_compat_internal.wasm").unlink()
    with pytest.raises(Exception, match="lacks wasm/litert_wasm_compat_internal.wasm"):
        find_litert(other.parents[1])
    shutil.rmtree(core.parent / "wasm-utils")
    with pytest.raises(Exception, match="@litertjs/wasm-utils, which it imports, is not installed"):
        find_litert(mediapipe)


@pytest.mark.slow
def test_site_of_a_bundle_without_mediapipe_models(plain_bundle, tmp_path):
    """README's quick start bundle (no --mobile, no --labels): the plain image and text models, LiteRT.js only,
    and zero-shot labels from the default gallery's captions (the demo's 40 classes)."""
    npm = fake_litert(tmp_path / "npm")  # no MediaPipe installed: not needed
    site = tmp_path / "site"
    code, out, err = run_cli(["web", str(plain_bundle), "--out", str(site), "--mediapipe", str(npm.parents[2]),
                              "--json"])
    assert code == 0, err
    summary = json.loads(out)
    assert summary["mediapipe_version"] == "" and summary["bytes_by_part"]["mediapipe"] == 0
    data = json.loads((site / "site.json").read_text(encoding="utf-8"))
    assert data["image_runtime"] == "litert" and data["mediapipe"] is None
    assert data["embedder"]["file"] == "models/image_dynamic-int8.tflite" and data["classifier"]["file"] is None
    assert sorted(p.name for p in (site / "models").iterdir()) == ["image_dynamic-int8.tflite",
                                                                   "text_dynamic-int8.tflite"]
    assert sorted(data["classifier"]["labels"]) == sorted(demo_labels())
    assert data["classifier"]["template"] == "a photo of a {}." and data["preprocess"]["mean"][0] == 0.48145466
    assert not (site / "mediapipe").exists() and (site / "litert" / "litert_core.js").is_file()
    texts = [t["text"] for t in data["texts"]["items"]]
    assert "a photo of a blue star." in texts and "blue star" in texts
