"""What a new user of `clipedge` expects from a command line (issue #20): labels taken as meant, embeddings that say
which row is which, `| head` without a traceback, an index that finds its photos from anywhere and says when it is
searched by another model, and -v / -q wherever they are typed. Runtime only: a runtime-only install runs these."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipedge.runtime.library.catalogue import Catalogue

PHOTOS = sorted((Path(__file__).parents[2] / "calibration_data" / "photos").glob("*.webp"))[:3]


def run_cli(*args: str, cwd: Path | None = None, stdout=subprocess.PIPE, prelude: str = "",
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    code = (f"import sys\n{prelude}\nfrom clipedge.runtime.cli.main import main; rc = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'runtime CLI imported tensorflow'; sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=300, cwd=cwd, env=env)


def test_duplicate_labels_are_refused_and_named(small_bundle):
    b = ["--bundle", str(small_bundle)]
    result = run_cli("classify", str(PHOTOS[0]), "--labels", "red star", "Red  Star", "cat", *b)
    assert result.returncode == 2 and "duplicate labels" in result.stderr
    assert "duplicate labels ['Red  Star', 'red star']:" in result.stderr
    result = run_cli("classify", str(PHOTOS[0]), "--labels", "dog,dog", *b)
    assert result.returncode == 2 and "duplicate labels ['dog']" in result.stderr


def test_labels_mixing_spaces_and_commas_are_refused(small_bundle):
    b = ["--bundle", str(small_bundle)]
    # `--labels red star,blue star` unquoted: argparse gets ['red', 'star,blue', 'star']
    result = run_cli("classify", str(PHOTOS[0]), "--labels", "red", "star,blue", "star", *b)
    assert result.returncode == 2 and "mixes spaces and commas" in result.stderr
    assert "['red', 'star,blue', 'star']" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("classify", str(PHOTOS[0]), "--labels", "red star,blue star", "--json", *b)
    assert result.returncode == 0, result.stderr
    assert {t["label"] for t in json.loads(result.stdout)[0]["top"]} == {"red star", "blue star"}


def test_embed_writes_the_row_order_beside_the_matrix(small_bundle, tmp_path):
    b = ["--bundle", str(small_bundle)]
    result = run_cli("embed", *map(str, PHOTOS), "-o", str(tmp_path / "img.npy"), *b)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "img.json").read_text())
    assert rows["items"] == [str(p) for p in PHOTOS] and rows["kind"] == "image"
    default = json.loads((small_bundle / "manifest.json").read_text())["defaults"]["by_format"]["tflite"]["cpu"]
    assert rows["shape"] == list(np.load(tmp_path / "img.npy").shape) and rows["model"]["precision"] == default
    result = run_cli("embed", "--text", "a dog", "a cat", "-o", str(tmp_path / "t.npz"), *b)
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "t.npz") as data:  # no pickle needed
        assert list(data["items"]) == ["a dog", "a cat"] and data["embeddings"].shape == (2, 32)
    result = run_cli("embed", "--text", "a dog", "-o", str(tmp_path / "t.csv"), *b)
    assert result.returncode == 2 and ".npy" in result.stderr and not (tmp_path / "t.csv").exists()


def test_a_closed_pipe_ends_quietly(small_bundle):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: `clipedge info | head -0`
    try:
        result = run_cli("info", str(small_bundle), stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 141, result.stderr
    assert result.stderr == "", result.stderr


def test_index_paths_resolve_from_anywhere(small_bundle, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in PHOTOS:
        shutil.copy(photo, photos / photo.name)
    b = ["--bundle", str(small_bundle)]
    result = run_cli("index", "build", "photos", "-o", "indexes/idx", *b, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with Catalogue.open(tmp_path / "indexes" / "idx") as catalogue:
        assert all(path.startswith("../../photos/") for path in catalogue.rows())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("search", str(tmp_path / "indexes" / "idx"), "--image", str(photos / PHOTOS[0].name), "--json",
                     *b, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert Path(elsewhere, hits[0]["item"]).resolve() == (photos / PHOTOS[0].name).resolve()  # as the user gave it
    assert all(Path(elsewhere, hit["item"]).is_file() for hit in hits)


def test_index_search_says_when_the_model_differs(small_bundle, tmp_path):
    b = ["--bundle", str(small_bundle)]
    result = run_cli("index", "build", *map(str, PHOTOS), "-o", str(tmp_path / "idx"), "--precision",
                     "dynamic-int8", "--format", "onnx", *b)
    assert result.returncode == 0, result.stderr
    # no --precision/--format: the index's own model, no warning
    result = run_cli("search", str(tmp_path / "idx"), "a dog", *b)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    result = run_cli("search", str(tmp_path / "idx"), "a dog", "--precision", "fp32", "--format", "tflite", *b)
    assert result.returncode == 0, result.stderr
    assert "built with the onnx dynamic-int8 model and the query runs on tflite fp32" in result.stderr
    assert "--precision dynamic-int8 --format onnx" in result.stderr


def test_index_version_1_paths_stay_as_stored(small_bundle, tmp_path):
    from clipedge.runtime.index import EmbeddingIndex

    (tmp_path / "idx").mkdir()
    np.save(tmp_path / "idx" / "embeddings.npy", np.eye(2, 32, dtype=np.float32))
    (tmp_path / "idx" / "index.json").write_text(json.dumps({"version": 1, "items": ["a.jpg", "b.jpg"],
                                                             "model": {}}))
    assert EmbeddingIndex.load(tmp_path / "idx").items == ["a.jpg", "b.jpg"]


BLOCK_COMPILED_MODEL = "sys.modules['ai_edge_litert.compiled_model'] = None"  # as if this LiteRT lacked it


@pytest.mark.parametrize("position", ["before", "after"])
def test_verbose_anywhere_says_why_an_interpreter_was_skipped(small_bundle, position):
    command = ["classify", str(PHOTOS[0]), "--labels", "dog,cat", "--bundle", str(small_bundle)]
    command = ["-v", *command] if position == "before" else [*command, "--verbose"]
    result = run_cli(*command, prelude=BLOCK_COMPILED_MODEL)
    assert result.returncode == 0, result.stderr
    assert "litert-compiled cannot open" in result.stderr and "not installed" in result.stderr
    quiet = run_cli(*[c for c in command if c not in ("-v", "--verbose")], prelude=BLOCK_COMPILED_MODEL)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_vv_is_debug_and_q_is_errors_only(small_bundle, tmp_path):
    from PIL import Image

    Image.open(PHOTOS[0]).convert("RGB").save(tmp_path / "photo.png")
    command = ["index", "build", str(tmp_path / "photo.png"), "-o", str(tmp_path / "idx"), "--bundle",
               str(small_bundle)]
    result = run_cli(*command, "-vv", prelude=BLOCK_COMPILED_MODEL)
    assert result.returncode == 0, result.stderr
    assert "DEBUG litert-compiled: the error in full" in result.stderr and "Traceback" in result.stderr
    assert "STREAM" not in result.stderr  # Pillow's own chunk-by-chunk debug trace stays off
    result = run_cli("search", str(tmp_path / "idx"), "a dog", "--precision", "fp32", "--format", "onnx", "-q",
                     "--bundle", str(small_bundle))
    assert result.returncode == 0 and result.stderr == "", result.stderr  # the cross-model warning is hidden


def test_the_runtime_and_cli_print_nothing_of_the_interpreters_by_default(small_bundle):
    result = run_cli("classify", str(PHOTOS[0]), "--labels", "dog,cat", "--accelerator", "auto", "--json",
                     "--bundle", str(small_bundle))
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # stdout is the JSON and nothing else, whatever the GPU setup printed
    assert "INFO" not in result.stderr
