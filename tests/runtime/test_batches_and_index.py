"""Batch commands and the index under faults (issue #17): `--on-error skip|stop`, errors named by their position in the
whole input, atomic index saves, every index field checked on load, a bad `-o` refused before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clipedge.runtime.index as index_module
from clipedge.runtime.clip_runtime import load
from clipedge.runtime.errors import BundleError, ImageError, InputError
from clipedge.runtime.index import EmbeddingIndex
from clipedge.runtime.library.catalogue import Catalogue


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """40 images, the 36th (index 35, in the second batch of 32) not an image."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(40):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 52, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i:02d}.png")
    (root / "35.png").write_bytes(b"not an image at all")
    return root


# ---- 10. one unreadable image in a folder --------------------------------------------------------------------------
def test_stop_names_the_image_by_its_place_in_the_whole_input(small_bundle, folder):
    result = run_cli("classify", str(folder), "--labels", "cat,dog", "--bundle", str(small_bundle))
    assert result.returncode == 2
    assert f"clipedge: error: image 35 '{folder / '35.png'}'" in result.stderr  # not "image 3" of its batch
    with pytest.raises(ImageError, match=r"^image 35 "):
        load(small_bundle).encode_images(sorted(str(p) for p in folder.iterdir()))


def test_skip_classifies_the_rest_and_lists_the_skipped(small_bundle, folder):
    result = run_cli("classify", str(folder), "--labels", "cat,dog", "--on-error", "skip", "--json",
                     "--bundle", str(small_bundle))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [Path(item["image"]).name for item in payload] == [f"{i:02d}.png" for i in range(40)]
    assert "not an image Pillow can read" in payload[35]["error"] and "top" not in payload[35]
    assert all(len(item["top"]) == 2 for i, item in enumerate(payload) if i != 35)
    assert "skipped 1 of 40 images" in result.stderr


def test_skip_embeds_and_indexes_the_rest(small_bundle, folder, tmp_path):
    result = run_cli("embed", str(folder), "-o", str(tmp_path / "e.npy"), "--on-error", "skip", "--json",
                     "--bundle", str(small_bundle))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert np.load(tmp_path / "e.npy").shape == (39, 32) and len(payload["items"]) == 39
    listed = (tmp_path / "e.skipped.tsv").read_text().splitlines()
    assert listed[1].startswith(f"35\t{folder / '35.png'}\tnot an image")
    result = run_cli("index", "build", str(folder), "-o", str(tmp_path / "idx"), "--on-error", "skip",
                     "--bundle", str(small_bundle))
    assert result.returncode == 0, result.stderr
    index = EmbeddingIndex.load(tmp_path / "idx")
    assert len(index.items) == 39 and not any(item.endswith("35.png") for item in index.items)
    # kept in the catalogue relative to the index, like the items (issue #33), so a later update does not read
    # the unchanged bad file again
    with Catalogue.open(tmp_path / "idx") as catalogue:
        (path, (_, _, error)), = catalogue.skipped().items()
    assert path == os.path.relpath(folder / "35.png", tmp_path / "idx") and "not an image" in error
    assert [Path(s["image"]).resolve() for s in index.skipped] == [(folder / "35.png").resolve()]


def test_skip_with_nothing_readable_is_an_error(small_bundle, tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"y")
    result = run_cli("embed", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "e.npy"),
                     "--on-error", "skip", "--bundle", str(small_bundle))
    assert result.returncode == 2 and "none of the 2 images could be read" in result.stderr
    assert not (tmp_path / "e.npy").exists()


# ---- 9. index build -o EXISTING_FILE, before any work ---------------------------------------------------------------
def test_index_output_that_cannot_be_an_index_is_refused_first(folder, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    result = run_cli("index", "build", str(folder), "-o", str(target), "--bundle", str(tmp_path / "no-bundle"))
    assert result.returncode == 2 and "is a file" in result.stderr  # said before the bundle is even opened
    result = run_cli("index", "build", str(folder), "-o", str(folder), "--bundle", str(tmp_path / "no-bundle"))
    assert result.returncode == 2 and "directory of other files" in result.stderr
    assert target.read_text() == "my notes"


# ---- 6. atomic index writes ------------------------------------------------------------------------------------------
def _index(names: list[str], seed: int) -> EmbeddingIndex:
    vectors = np.random.default_rng(seed).normal(size=(len(names), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return EmbeddingIndex(names, vectors, {"sha256": "0" * 64, "name": "m", "format": "tflite",
                                           "precision": "fp32", "embed_dim": 8})


def test_a_save_that_fails_half_way_leaves_the_old_index_whole(tmp_path, monkeypatch):
    old = _index([str(tmp_path / f"old{i}.jpg") for i in range(5)], seed=0)
    old.save(tmp_path / "idx")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    # the matrix is written, then the metadata fails: the old version wrote embeddings.npy first and index.json
    # second, so this left the old names on the new embeddings and loaded without a word
    monkeypatch.setattr(index_module.json, "dumps", fail)
    with pytest.raises(OSError, match="disk full"):
        _index([str(tmp_path / f"new{i}.jpg") for i in range(5)], seed=1).save(tmp_path / "idx")
    monkeypatch.undo()
    loaded = EmbeddingIndex.load(tmp_path / "idx")
    assert loaded.items == old.items
    np.testing.assert_array_equal(loaded.embeddings, old.embeddings)
    new = _index([str(tmp_path / f"new{i}.jpg") for i in range(3)], seed=2)
    new.save(tmp_path / "idx")
    assert EmbeddingIndex.load(tmp_path / "idx").items == new.items
    assert len(list((tmp_path / "idx").glob("embeddings*.npy"))) == 1  # the replaced matrix is gone


def test_embeddings_that_do_not_match_the_metadata_are_refused(tmp_path):
    _index(["a", "b", "c"], seed=0).save(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    np.save(tmp_path / "idx" / meta["embeddings"]["file"], np.eye(3, 8, dtype=np.float32))
    with pytest.raises(BundleError, match="does not match the sha256"):
        EmbeddingIndex.load(tmp_path / "idx")


WRONG_INDEXES = {
    "a list": lambda m: [m],
    "items as an object": lambda m: m.update(items={"a": 1}),
    "items of numbers": lambda m: m.update(items=[1, 2, 3]),
    "a string version": lambda m: m.update(version="2"),
    "model as a string": lambda m: m.update(model="clip"),
    "a model sha256 number": lambda m: m["model"].update(sha256=5),
    "embeddings as a string": lambda m: m.update(embeddings="embeddings.npy"),
    "embeddings file outside": lambda m: m["embeddings"].update(file="../embeddings.npy"),
    "a wrong shape": lambda m: m["embeddings"].update(shape=[2, 8]),
    "one item too few": lambda m: m.update(items=m["items"][:2]),
}


@pytest.mark.parametrize("damage", sorted(WRONG_INDEXES))
def test_index_json_of_the_wrong_shape_is_a_bundle_error(tmp_path, damage):
    _index(["a", "b", "c"], seed=0).save(tmp_path / "idx")
    path = tmp_path / "idx" / "index.json"
    meta = json.loads(path.read_text())
    result = WRONG_INDEXES[damage](meta)
    path.write_text(json.dumps(meta if result is None else result))
    with pytest.raises(BundleError, match="index"):
        EmbeddingIndex.load(tmp_path / "idx")


def test_version_1_indexes_still_load_and_nan_is_refused(tmp_path):
    (tmp_path / "idx").mkdir()
    np.save(tmp_path / "idx" / "embeddings.npy", np.eye(2, 8, dtype=np.float32))
    (tmp_path / "idx" / "index.json").write_text(json.dumps({"version": 1, "items": ["a.jpg", "b.jpg"],
                                                             "model": {}}))
    assert EmbeddingIndex.load(tmp_path / "idx").items == ["a.jpg", "b.jpg"]
    np.save(tmp_path / "idx" / "embeddings.npy", np.full((2, 8), np.nan, np.float32))
    with pytest.raises(BundleError, match="NaN"):
        EmbeddingIndex.load(tmp_path / "idx")


def test_a_str_query_is_always_a_text(tmp_path, monkeypatch):
    calls = []

    class Runtime:
        format, precision = "tflite", "fp32"
        manifest = type("M", (), {"data": {"model": {"sha256": "0" * 64, "name": "m"}}, "embed_dim": 8})()

        def encode_texts(self, texts):
            calls.append(("text", texts))
            return np.ones((1, 8), np.float32)

        def encode_images(self, images):
            calls.append(("image", images))
            return np.ones((1, 8), np.float32)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dog").write_bytes(b"a file called dog")
    index = _index(["a", "b"], seed=0)
    index.search(Runtime(), "dog", k=1)
    index.search(Runtime(), Path("dog"), k=1)
    assert calls == [("text", ["dog"]), ("image", [Path("dog")])]
    with pytest.raises(InputError, match="k must be"):
        index.search(Runtime(), "dog", k=0)
