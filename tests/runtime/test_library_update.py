"""An index that is updated, not rebuilt (issue #35): only new and changed files are embedded, deleted ones dropped,
renamed, copied and touched files reuse their embedding, rows of another model are embedded again and never mixed,
and a `kill -9` at random points followed by a rerun ends equal to a clean build."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipedge.runtime.clip_runtime import load
from clipedge.runtime.errors import InputError
from clipedge.runtime.library import open_index
from clipedge.runtime.library.catalogue import CATALOGUE_FILE, Catalogue
from tests.runtime.heic_files import save_heic


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (36, 44, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def rows(index: Path) -> dict[str, np.ndarray]:
    """stored path -> embedding, straight from the catalogue."""
    with Catalogue.open(index) as catalogue:
        matrix, _, paths, _ = catalogue.embeddings()
    return dict(zip(paths, matrix, strict=True))


def build(bundle: Path, photos: Path, index: Path, *extra: str) -> dict:
    result = run_cli("index", "build", str(photos), "-o", str(index), "--bundle", str(bundle), "--json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    for i in range(12):
        write_image(root / ("trip" if i % 2 else "home") / f"{i:02d}.png", i)
    return root


def test_a_second_build_embeds_only_what_changed(small_bundle, photos, tmp_path):
    index = tmp_path / "index"
    first = build(small_bundle, photos, index)
    assert (first["items"], first["added"], first["unchanged"]) == (12, 12, 0)
    runtime = load(small_bundle)
    stored = rows(index)
    names = sorted(stored)
    reference = runtime.encode_images([str(index / name) for name in names])
    cosines = np.sum(np.stack([stored[n] for n in names]) * reference, axis=1)
    assert cosines.min() >= 0.99999, cosines.min()

    write_image(photos / "new" / "a.png", 100)  # new
    write_image(photos / "home" / "00.png", 101)  # edited: other bytes
    shutil.move(photos / "trip" / "01.png", photos / "trip" / "renamed.png")  # renamed
    (photos / "home" / "02.png").unlink()  # deleted
    shutil.copy(photos / "home" / "04.png", photos / "copy.png")  # copied
    os.utime(photos / "home" / "06.png", ns=(1, 1))  # touched: new mtime, same bytes
    second = build(small_bundle, photos, index)
    assert {k: second[k] for k in ("items", "added", "changed", "reused", "touched", "removed", "unchanged")} == \
        {"items": 13, "added": 1, "changed": 1, "reused": 2, "touched": 1, "removed": 2, "unchanged": 8}
    after = rows(index)
    assert np.array_equal(after["../photos/trip/renamed.png"], stored["../photos/trip/01.png"])
    assert np.array_equal(after["../photos/copy.png"], stored["../photos/home/04.png"])
    assert not np.allclose(after["../photos/home/00.png"], stored["../photos/home/00.png"])
    assert "../photos/home/02.png" not in after and "../photos/trip/01.png" not in after
    # what a clean build makes of the same files
    clean = tmp_path / "clean"
    build(small_bundle, photos, clean)
    fresh = rows(clean)
    assert sorted(fresh) == sorted(after)
    assert max(float(np.abs(fresh[n] - after[n]).max()) for n in fresh) < 1e-6


def test_update_rescans_what_the_index_was_built_from_from_anywhere(small_bundle, photos, tmp_path):
    index = tmp_path / "index"
    build(small_bundle, photos, index, "--exclude", "trip")
    assert len(rows(index)) == 6
    write_image(photos / "home" / "later.png", 7)
    write_image(photos / "trip" / "later.png", 8)  # excluded as recorded
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("index", "update", str(index), "--json", cwd=elsewhere)  # the bundle recorded in the index
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert (payload["added"], payload["items"]) == (1, 7)
    found = run_cli("search", str(index), "a photo", "-k", "7", "--paths-only", cwd=elsewhere)  # its bundle too
    assert found.returncode == 0, found.stderr
    assert sorted(Path(p).name for p in found.stdout.split()) == sorted(p.name for p in (photos / "home").iterdir())


def test_paths_print_as_given_and_paths_only_pipes(small_bundle, photos, tmp_path):
    relative, absolute = tmp_path / "rel", tmp_path / "abs"
    assert run_cli("index", "build", "photos", "-o", "rel", "--bundle", str(small_bundle),
                   cwd=tmp_path).returncode == 0
    build(small_bundle, photos.resolve(), absolute)
    for index, expect in ((relative, "photos/"), (absolute, str(photos.resolve()) + "/")):
        result = run_cli("search", str(index), "a photo", "-k", "3", "--paths-only", "--bundle", str(small_bundle),
                         cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) == 3 and all(line.startswith(expect) and (tmp_path / line).is_file() for line in lines)


def test_names_that_are_not_utf8_round_trip(small_bundle, photos, tmp_path):
    odd = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: a surrogate in Python, not storable as SQLite text
    shutil.copy(photos / "home" / "00.png", photos / "other.png")
    write_image(photos / odd, 77)
    index = tmp_path / "index"
    first = build(small_bundle, photos, index)
    assert first["added"] == 14  # a copy met in the same batch as its original is embedded like it
    again = build(small_bundle, photos, index)
    assert again["unchanged"] == 14  # the odd name matched its row, not embedded again
    assert "../photos/" + odd in rows(index)


def test_files_get_the_users_umask(small_bundle, photos, tmp_path):
    index = tmp_path / "index"
    build(small_bundle, photos, index)
    assert oct((index / CATALOGUE_FILE).stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_another_precision_re_embeds_and_a_half_done_change_is_refused(small_bundle, photos, tmp_path):
    index = tmp_path / "index"
    build(small_bundle, photos, index, "--precision", "fp32")
    # an update interrupted while changing the model: one row already of the other precision
    with sqlite3.connect(index / CATALOGUE_FILE) as db:
        db.execute("INSERT INTO models (sha256, name, format, precision, embed_dim) SELECT sha256, name, format, "
                   "'dynamic-int8', embed_dim FROM models")
        db.execute("UPDATE images SET model_id = (SELECT MAX(id) FROM models) WHERE id = (SELECT MIN(id) FROM images)")
    with pytest.raises(InputError, match="interrupted"):
        open_index(index)
    payload = build(small_bundle, photos, index, "--precision", "dynamic-int8")
    assert payload["changed"] == 12 - 1  # every fp32 row embedded again
    with Catalogue.open(index) as catalogue:
        assert len(catalogue.models_in_rows()) == 1 and catalogue.model["precision"] == "dynamic-int8"
    assert open_index(index).count == 12


def test_unreadable_files_are_skipped_once_and_retried_when_they_change(small_bundle, photos, tmp_path):
    (photos / "broken.png").write_bytes(b"not an image")
    index = tmp_path / "index"
    refused = run_cli("index", "build", str(photos), "-o", str(index), "--bundle", str(small_bundle))
    assert refused.returncode == 2 and "broken.png" in refused.stderr
    payload = build(small_bundle, photos, index, "--on-error", "skip")
    assert payload["items"] == 12 and [Path(s["image"]).name for s in payload["skipped"]] == ["broken.png"]
    again = build(small_bundle, photos, index, "--on-error", "skip")
    assert (again["added"], again["skipped"]) == (0, [])  # unchanged since: not read again
    write_image(photos / "broken.png", 55)
    fixed = build(small_bundle, photos, index, "--on-error", "skip")
    assert (fixed["added"], fixed["items"]) == (1, 13)


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_equals_a_clean_build(small_bundle, tmp_path):
    photos = tmp_path / "photos"
    for i in range(400):
        write_image(photos / f"{i // 100}" / f"{i:03d}.png", 1000 + i)
    clean = tmp_path / "clean"
    started = time.monotonic()
    build(small_bundle, photos, clean)
    duration = time.monotonic() - started
    index = tmp_path / "index"
    rng = random.Random(35)
    command = [sys.executable, "-m", "clipedge.runtime.cli", "index", "build", str(photos), "-o", str(index),
               "--bundle", str(small_bundle)]
    kills = 0
    for _ in range(4):
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, duration))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait()
        if (index / CATALOGUE_FILE).exists():
            with Catalogue.open(index) as catalogue:  # the last committed state is readable after each kill
                assert catalogue.count <= 400
    assert kills >= 2, "the build finished before most kills: nothing was tested"
    with Catalogue.open(index) as catalogue:
        committed = catalogue.count
    final = build(small_bundle, photos, index)
    assert (final["unchanged"], final["added"]) == (committed, 400 - committed)  # went on from the last commit
    resumed, fresh = rows(index), rows(clean)
    assert sorted(resumed) == sorted(fresh) and len(fresh) == 400
    assert max(float(np.abs(fresh[n] - resumed[n]).max()) for n in fresh) < 1e-6
    assert not [p.name for p in index.iterdir() if p.name != CATALOGUE_FILE]  # no journal or temp file left


def test_scanning_like_the_tools_users_know(small_bundle, photos, tmp_path):
    write_image(photos / ".thumbnails" / "t.png", 200)  # a thumbnail cache: left out by default
    write_image(photos / "@eaDir" / "s.png", 201)
    write_image(photos / "raw" / "r.png", 202)
    outside = tmp_path / "outside"
    write_image(outside / "o.png", 203)
    (photos / "linked").symlink_to(outside, target_is_directory=True)
    (outside / "loop").symlink_to(outside, target_is_directory=True)  # a loop once links are followed
    index = tmp_path / "index"
    result = run_cli("index", "build", str(photos), "-o", str(index), "--bundle", str(small_bundle), "--exclude",
                     "raw")
    assert result.returncode == 0, result.stderr
    assert "1 symlinked folder not followed" in result.stderr and "--follow-symlinks" in result.stderr
    assert sorted(Path(p).parent.name for p in rows(index)) == ["home"] * 6 + ["trip"] * 6
    followed = run_cli("index", "update", str(index), "--follow-symlinks", "--json")
    assert followed.returncode == 0, followed.stderr
    assert json.loads(followed.stdout)["added"] == 1 and "symlink loop" in followed.stderr
    assert "../photos/linked/o.png" in rows(index)


def test_heic_photos_are_indexed(small_bundle, photos, tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="the heif extra (pillow-heif) is not installed")
    pixels = np.random.default_rng(5).integers(0, 256, (36, 44, 3), dtype=np.uint8)
    save_heic(Image.fromarray(pixels), photos / "iphone.HEIC")
    index = tmp_path / "index"
    assert build(small_bundle, photos, index)["added"] == 13
    stored = rows(index)["../photos/iphone.HEIC"]
    decoded = pillow_heif.open_heif(photos / "iphone.HEIC").to_pillow()  # the plugin's own decode, as reference
    reference = load(small_bundle).encode_images([decoded])[0]
    assert float(stored @ reference) >= 0.99999


def test_dupes_groups_copies_and_rotations_of_one_photo(small_bundle, photos, tmp_path):
    original = Image.open(photos / "home" / "00.png")
    tagged = original.rotate(90, expand=True)  # stored rotated, with the EXIF tag that turns it back
    exif = Image.Exif()
    exif[0x0112] = 8
    tagged.save(photos / "rotated.jpg", exif=exif, quality=100)
    shutil.copy(photos / "home" / "00.png", photos / "copy.png")
    index = tmp_path / "index"
    build(small_bundle, photos, index)
    result = run_cli("index", "dupes", str(index), "--threshold", "0.99", "--json")
    assert result.returncode == 0, result.stderr
    groups = json.loads(result.stdout)["groups"]
    assert any({"copy.png", "00.png", "rotated.jpg"} <= {Path(p).name for p in group} for group in groups), groups
    refused = run_cli("index", "dupes", str(index), "--threshold", "2")
    assert refused.returncode == 2 and "--threshold is a cosine" in refused.stderr


def test_an_open_index_follows_updates_committed_by_another_process(small_bundle, photos, tmp_path):
    """`clipedge serve` keeps its index open: a nightly `index update` must show at its next search."""
    index = tmp_path / "index"
    build(small_bundle, photos, index)
    opened = open_index(index)
    runtime = load(small_bundle)
    write_image(photos / "tonight.png", 300)
    query = runtime.encode_images([str(photos / "tonight.png")])[0]
    assert opened.count == 12 and not any(h.item.endswith("tonight.png") for h in opened.search_vector(query, 3))
    assert build(small_bundle, photos, index)["added"] == 1  # another process
    hits = opened.search_vector(query, 3)
    assert opened.count == 13 and hits[0].item.endswith("tonight.png") and hits[0].score > 0.9999


def test_the_approximate_index_is_kept_current(small_bundle, photos, tmp_path, monkeypatch):
    """Above the exact-search size (here 5 rows instead of 50,000) an update keeps `vectors.usearch`: rebuilt when
    missing or stale, changed in place when current, removed when the index shrinks below the size again."""
    pytest.importorskip("usearch", reason="the index extra (usearch) is not installed")
    import clipedge.runtime.library.search as search_module
    from clipedge.runtime.index import model_identity
    from clipedge.runtime.library.scan import scan_images
    from clipedge.runtime.library.update import update_catalogue

    monkeypatch.setattr(search_module, "EXACT_SEARCH_UP_TO", 5)
    index, runtime = tmp_path / "index", load(small_bundle)

    def update() -> str:  # what `index build/update` does, in this process (the size above is patched here)
        with Catalogue.open(index, create=True) as catalogue:
            before = catalogue.generation
            done = update_catalogue(catalogue, runtime, scan_images([str(photos)]).files, model_identity(runtime),
                                    "stop")
            return search_module.refresh_search_index(catalogue, before, done.removed_ids, done.changed_ids)

    assert update() == "rebuilt"
    write_image(photos / "new.png", 400)
    (photos / "home" / "04.png").unlink()
    assert update() == "updated"
    opened = open_index(index)
    for name in ("new.png", "trip/03.png"):
        hits = opened.search_vector(runtime.encode_images([str(photos / name)])[0], 3)
        assert opened._ann is not None and hits[0].item.endswith(name) and hits[0].score > 0.9999
    assert not any("04.png" in h.item for h in opened.search_vector(runtime.encode_texts(["a photo"])[0], 12))
    with Catalogue.open(index) as catalogue, catalogue.transaction() as db:  # as if an update died after a commit
        catalogue.bump_generation(db)
    stale = open_index(index)
    assert stale.search_vector(runtime.encode_texts(["x"])[0], 1) and stale._ann is None  # exact, still answers
    assert update() == "rebuilt"
    monkeypatch.setattr(search_module, "EXACT_SEARCH_UP_TO", 100)
    assert update() == "removed" and not (index / "vectors.usearch").exists()
